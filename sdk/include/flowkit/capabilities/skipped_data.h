// flowkit/capabilities/skipped_data.h — a domain that reads data files and may leave out rows
// it cannot use (crysbfn.crystal's skip_bad_rows) says how many and why, so that the run's log
// and eval.json show what the model was not trained or evaluated on.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace flowkit {

struct SkippedRows {
  int64_t rows = 0;                  // data rows read, in all files
  int64_t skipped = 0;               // rows left out
  std::vector<std::string> reasons;  // the first few, each naming the file and the row
};

class SkippedData {
 public:
  virtual ~SkippedData();
  virtual SkippedRows skipped_rows() const = 0;
};

}  // namespace flowkit
