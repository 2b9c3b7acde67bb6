// flowkit/io.h — small writers every plugin may use: .npy arrays, PNG images, animated GIFs.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace flowkit::io {

// Writes a C-contiguous float32 array as NumPy .npy (version 1.0); numpy.load reads it.
void write_npy(const std::string& path, const float* data, const std::vector<int64_t>& shape);
// Reads back a float32 .npy written by write_npy (used by tests and tools).
std::vector<float> read_npy(const std::string& path, std::vector<int64_t>* shape);
// The same from the file's bytes; `path` names it in errors.
std::vector<float> parse_npy(const std::string& bytes, const std::string& path, std::vector<int64_t>* shape);

// Writes an 8-bit RGB image (row-major, 3 bytes per pixel) as PNG (libpng).
void write_png_rgb(const std::string& path, int width, int height, const std::vector<uint8_t>& rgb);
// Reads a PNG of any colour type as 8-bit RGB; throws flowkit::Error naming the file if it is
// not a PNG or is corrupt.
std::vector<uint8_t> read_png_rgb(const std::string& path, int* width, int* height);
// Reads width/height of a PNG file; throws flowkit::Error if it is not a PNG.
void read_png_size(const std::string& path, int* width, int* height);

// Writes frames (each 8-bit RGB, width x height) as an animated GIF that loops (giflib).
// Gray frames keep all 256 levels; colour frames are mapped to a fixed 252-colour cube.
void write_gif(const std::string& path, int width, int height, const std::vector<std::vector<uint8_t>>& frames,
               int delay_centiseconds = 10);

// Writes `bytes` to `path` atomically: a temporary file in the same folder, then rename.
void write_file_atomic(const std::string& path, const std::string& bytes);

}  // namespace flowkit::io
