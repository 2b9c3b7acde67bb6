// flowkit/io.h — small writers every plugin may use: .npy arrays and PNG images.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace flowkit::io {

// Writes a C-contiguous float32 array as NumPy .npy (version 1.0); numpy.load reads it.
void write_npy(const std::string& path, const float* data, const std::vector<int64_t>& shape);
// Reads back a float32 .npy written by write_npy (used by tests and tools).
std::vector<float> read_npy(const std::string& path, std::vector<int64_t>* shape);

// Writes an 8-bit RGB image (row-major, 3 bytes per pixel) as PNG.
void write_png_rgb(const std::string& path, int width, int height, const std::vector<uint8_t>& rgb);
// Reads width/height of a PNG file; throws flowkit::Error if it is not a PNG.
void read_png_size(const std::string& path, int* width, int* height);

// Writes `bytes` to `path` atomically: a temporary file in the same folder, then rename.
void write_file_atomic(const std::string& path, const std::string& bytes);

}  // namespace flowkit::io
