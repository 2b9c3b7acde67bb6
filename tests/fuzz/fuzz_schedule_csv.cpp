// CrysBFN accuracy-schedule tables (path.schedule_file): crysbfn::parse_schedule_csv.
#include "crysbfn/bfn_math.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  flowkit::fuzz::refuses_only_with_flowkit_errors([&] {
    crysbfn::AccuracySchedule s = crysbfn::parse_schedule_csv(flowkit::fuzz::text(data, size), "fuzz.csv");
    if (s.alpha.size() != s.beta.size()) __builtin_trap();
  });
  return 0;
}
