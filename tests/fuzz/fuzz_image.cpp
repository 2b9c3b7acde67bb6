// PNG and JPEG files: flowkit::io::read_image_rgb (libpng, libjpeg), what standard.image_folder
// decodes a user's images with.
#include "flowkit/io.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = flowkit::fuzz::scratch_file("image", flowkit::fuzz::text(data, size));
  flowkit::fuzz::refuses_only_with_flowkit_errors([&] {
    int w = 0, h = 0;
    std::vector<uint8_t> rgb = flowkit::io::read_image_rgb(path, &w, &h);
    if (rgb.size() != static_cast<size_t>(w) * static_cast<size_t>(h) * 3) __builtin_trap();
  });
  return 0;
}
