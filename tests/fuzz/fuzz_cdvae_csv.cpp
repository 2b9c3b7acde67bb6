// CDVAE CSV files (RFC 4180 records with a CIF per row): crysbfn::parse_cdvae_csv; the first
// byte picks skip_bad_rows.
#include "crysbfn/crystal.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  flowkit::fuzz::refuses_only_with_flowkit_errors([&] {
    crysbfn::CsvLoadResult r = crysbfn::parse_cdvae_csv(flowkit::fuzz::text(data + 1, size - 1), "fuzz.csv", data[0] & 1);
    if (r.skipped + static_cast<int64_t>(r.crystals.size()) != r.rows) __builtin_trap();  // every row accounted for
  });
  return 0;
}
