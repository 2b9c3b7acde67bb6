// CIF text: crysbfn::parse_cif (each row of a CDVAE CSV, and crystals a user supplies).
#include "crysbfn/crystal.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  flowkit::fuzz::refuses_only_with_flowkit_errors([&] {
    for (const crysbfn::Crystal& c : crysbfn::parse_cif(flowkit::fuzz::text(data, size)))
      (void)crysbfn::write_cif_block(c);  // what was accepted can be written back
  });
  return 0;
}
