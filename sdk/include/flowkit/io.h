// flowkit/io.h — small writers every plugin may use: .npy arrays, PNG images, animated GIFs.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace flowkit::io {

// Writes a C-contiguous float32 array as NumPy .npy (version 1.0); numpy.load reads it.
void write_npy(const std::string& path, const float* data, const std::vector<int64_t>& shape);
// The same for int64 ('<i8'), e.g. labels.
void write_npy_int64(const std::string& path, const int64_t* data, const std::vector<int64_t>& shape);
// Reads back a float32 .npy written by write_npy (used by tests and tools).
std::vector<float> read_npy(const std::string& path, std::vector<int64_t>* shape);
// The same from the file's bytes; `path` names it in errors.
std::vector<float> parse_npy(const std::string& bytes, const std::string& path, std::vector<int64_t>* shape);

// A .npy array of any of numpy's numeric dtypes, as its raw bytes (no conversion, no copy of
// the data: `bytes` is the whole file and the values start at `offset`).
struct NpyArray {
  char kind = 'f';               // 'f' float, 'i' signed, 'u' unsigned, 'b' bool
  int item_size = 4;             // bytes per value (1, 2, 4 or 8)
  bool fortran_order = false;    // true: column-major (numpy saves transposed arrays so)
  std::vector<int64_t> shape;
  std::string bytes;
  size_t offset = 0;
  const char* data() const { return bytes.data() + offset; }
  int64_t count() const;         // number of values
};
// Reads little-endian (or one-byte) numeric .npy files, versions 1-3; throws flowkit::Error
// naming the file for anything else (big-endian, structured or object arrays, truncation).
NpyArray read_npy_array(const std::string& path);
NpyArray parse_npy_array(std::string bytes, const std::string& path);

// Writes an 8-bit RGB image (row-major, 3 bytes per pixel) as PNG (libpng).
void write_png_rgb(const std::string& path, int width, int height, const std::vector<uint8_t>& rgb);
// Reads a PNG of any colour type as 8-bit RGB; throws flowkit::Error naming the file if it is
// not a PNG or is corrupt.
std::vector<uint8_t> read_png_rgb(const std::string& path, int* width, int* height);
// Reads a baseline or progressive JPEG (libjpeg) as 8-bit RGB; throws flowkit::Error naming
// the file if it is not a JPEG or is corrupt.
std::vector<uint8_t> read_jpeg_rgb(const std::string& path, int* width, int* height);
// A PNG or JPEG, told apart by the file's first bytes (not its name), as 8-bit RGB.
std::vector<uint8_t> read_image_rgb(const std::string& path, int* width, int* height);
// Reads width/height of a PNG file; throws flowkit::Error if it is not a PNG.
void read_png_size(const std::string& path, int* width, int* height);

// Writes frames (each 8-bit RGB, width x height) as an animated GIF that loops (giflib).
// Gray frames keep all 256 levels; colour frames are mapped to a fixed 252-colour cube.
void write_gif(const std::string& path, int width, int height, const std::vector<std::vector<uint8_t>>& frames,
               int delay_centiseconds = 10);

// Writes `bytes` to `path` atomically: a temporary file in the same folder, then rename.
void write_file_atomic(const std::string& path, const std::string& bytes);

}  // namespace flowkit::io
