// .npy, PNG (libpng) and animated GIF (giflib) writers and readers, atomic file writes. Torch-free.
#include "flowkit/io.h"

#include <gif_lib.h>
#include <png.h>
// jpeglib.h needs FILE and size_t declared first.
#include <cstdio>
#include <jpeglib.h>
#include <jerror.h>

#include <algorithm>
#include <csetjmp>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "flowkit/error.h"

namespace flowkit::io {

void write_file_atomic(const std::string& path, const std::string& bytes) {
  namespace fs = std::filesystem;
  fs::path target(path);
  if (target.has_parent_path()) fs::create_directories(target.parent_path());
  fs::path tmp = target;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw Error("cannot open '" + tmp.string() + "' for writing");
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    if (!out) throw Error("write to '" + tmp.string() + "' failed (disk full?)");
  }
  std::error_code ec;
  fs::rename(tmp, target, ec);
  if (ec) throw Error("cannot rename '" + tmp.string() + "' to '" + target.string() + "': " + ec.message());
}

namespace {
void write_npy_bytes(const std::string& path, const char* descr, const void* data, size_t item_size,
                     const std::vector<int64_t>& shape) {
  std::string dims;
  int64_t count = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    dims += std::to_string(shape[i]) + (shape.size() == 1 || i + 1 < shape.size() ? "," : "");
    count *= shape[i];
  }
  std::string header = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (" + dims + "), }";
  // Pad so that magic(6)+version(2)+len(2)+header is a multiple of 64, ending in '\n'.
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string bytes = "\x93NUMPY";
  bytes += '\x01';
  bytes += '\x00';
  uint16_t len = static_cast<uint16_t>(header.size());
  bytes += static_cast<char>(len & 0xff);
  bytes += static_cast<char>(len >> 8);
  bytes += header;
  bytes.append(static_cast<const char*>(data), static_cast<size_t>(count) * item_size);
  write_file_atomic(path, bytes);
}
}  // namespace

void write_npy(const std::string& path, const float* data, const std::vector<int64_t>& shape) {
  write_npy_bytes(path, "<f4", data, sizeof(float), shape);
}

void write_npy_int64(const std::string& path, const int64_t* data, const std::vector<int64_t>& shape) {
  write_npy_bytes(path, "<i8", data, sizeof(int64_t), shape);
}

std::vector<float> read_npy(const std::string& path, std::vector<int64_t>* shape) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open '" + path + "'");
  std::stringstream bytes;
  bytes << in.rdbuf();
  return parse_npy(bytes.str(), path, shape);
}

std::vector<float> parse_npy(const std::string& bytes, const std::string& path, std::vector<int64_t>* shape) {
  NpyArray a = parse_npy_array(bytes, path);
  if (a.kind != 'f' || a.item_size != 4)
    throw Error("'" + path + "': only float32 ('<f4') arrays are supported here, found " + std::string(1, a.kind) +
                std::to_string(a.item_size));
  if (a.fortran_order) throw Error("'" + path + "': only C-order arrays are supported (fortran_order must be False)");
  *shape = a.shape;
  std::vector<float> data(static_cast<size_t>(a.count()));
  if (!data.empty()) std::memcpy(data.data(), a.data(), data.size() * sizeof(float));
  return data;
}

int64_t NpyArray::count() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

NpyArray read_npy_array(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open '" + path + "'");
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return parse_npy_array(std::move(bytes), path);
}

NpyArray parse_npy_array(std::string bytes, const std::string& path) {
  const std::string where = "'" + path + "'";
  if (bytes.size() < 10 || std::memcmp(bytes.data(), "\x93NUMPY", 6) != 0) throw Error(where + " is not a .npy file");
  // Version 1.0: a 2-byte header length; 2.0 and 3.0: 4 bytes (little-endian).
  const auto* b = reinterpret_cast<const unsigned char*>(bytes.data());
  const int major = b[6];
  if (major < 1 || major > 3) throw Error(where + ": unknown .npy format version " + std::to_string(major));
  const size_t len_bytes = major == 1 ? 2 : 4;
  if (bytes.size() < 8 + len_bytes) throw Error(where + ": truncated header");
  size_t header_len = 0;
  for (size_t i = 0; i < len_bytes; ++i) header_len |= static_cast<size_t>(b[8 + i]) << (8 * i);
  const size_t offset = 8 + len_bytes + header_len;
  if (header_len > bytes.size() || offset > bytes.size()) throw Error(where + ": truncated header");
  const std::string header = bytes.substr(8 + len_bytes, header_len);
  // The header is a Python dict literal; its values are read by hand (no std::regex, whose
  // recursion grows with the input).
  auto value_of = [&](const std::string& key, char open, char close) -> std::string {
    const size_t k = header.find("'" + key + "'");
    if (k == std::string::npos) return "";
    size_t v = header.find_first_not_of(' ', k + key.size() + 2);
    if (v == std::string::npos || header[v] != ':') return "";
    v = header.find_first_not_of(' ', v + 1);
    if (v == std::string::npos) return "";
    if (open == 0) return header.substr(v, header.find_first_of(",}", v) - v);  // True / False
    if (header[v] != open) return "";
    const size_t e = header.find(close, v + 1);
    return e == std::string::npos ? "" : header.substr(v + 1, e - v - 1);
  };
  const std::string descr = value_of("descr", '\'', '\''), fortran = value_of("fortran_order", 0, 0);
  NpyArray a;
  static const std::string kinds = "fiub";
  const bool one_byte = descr.size() == 3 && descr[2] == '1';
  if (descr.size() != 3 || !(descr[0] == '<' || (descr[0] == '|' && one_byte) || (descr[0] == '=' && one_byte)) ||
      kinds.find(descr[1]) == std::string::npos || std::string("1248").find(descr[2]) == std::string::npos ||
      (descr[1] == 'f' && descr[2] == '1') || (descr[1] == 'b' && descr[2] != '1'))
    throw Error(where + ": unsupported dtype '" + descr.substr(0, 20) +
                "' (expected little-endian numbers: <f2/<f4/<f8, <i1..<i8, <u1..<u8 or |b1; save with numpy's default byte order)");
  if (descr[1] == 'f' && descr[2] == '2') throw Error(where + ": float16 arrays are not supported; save as float32");
  a.kind = descr[1];
  a.item_size = descr[2] - '0';
  if (fortran.rfind("False", 0) == 0) a.fortran_order = false;
  else if (fortran.rfind("True", 0) == 0) a.fortran_order = true;
  else throw Error(where + ": no fortran_order in header");
  const std::string dims = value_of("shape", '(', ')');
  if (dims.find_first_not_of("0123456789, ") != std::string::npos || header.find("'shape'") == std::string::npos)
    throw Error(where + ": no shape in header");
  std::vector<int64_t>* shape = &a.shape;
  std::stringstream ss(dims);
  std::string item;
  uint64_t count = 1;
  while (std::getline(ss, item, ','))
    if (item.find_first_not_of(' ') != std::string::npos) {
      const size_t digits = item.find_first_not_of(' ');
      if (item.size() - digits > 15) throw Error(where + ": dimension '" + item.substr(digits) + "' is too large");
      const auto d = static_cast<uint64_t>(std::stoll(item));
      if (__builtin_mul_overflow(count, d, &count) || count > (uint64_t{1} << 40))
        throw Error(where + ": the shape holds too many values");
      shape->push_back(static_cast<int64_t>(d));
    }
  // Checked before allocating: a header may promise more data than the file has.
  if ((bytes.size() - offset) / static_cast<size_t>(a.item_size) < count)
    throw Error(where + ": truncated data (the header's shape needs " + std::to_string(count * a.item_size) + " bytes, " +
                std::to_string(bytes.size() - offset) + " follow)");
  a.offset = offset;
  a.bytes = std::move(bytes);
  return a;
}

void write_png_rgb(const std::string& path, int width, int height, const std::vector<uint8_t>& rgb) {
  if (width <= 0 || height <= 0 || rgb.size() != static_cast<size_t>(width) * height * 3)
    throw Error("write_png_rgb: pixel buffer does not match " + std::to_string(width) + "x" + std::to_string(height));
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  image.width = static_cast<png_uint_32>(width);
  image.height = static_cast<png_uint_32>(height);
  image.format = PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;  // first call: the encoded size; second: the bytes
  if (!png_image_write_to_memory(&image, nullptr, &size, 0, rgb.data(), 0, nullptr))
    throw Error("write_png_rgb '" + path + "': " + image.message);
  std::string bytes(size, '\0');
  if (!png_image_write_to_memory(&image, bytes.data(), &size, 0, rgb.data(), 0, nullptr))
    throw Error("write_png_rgb '" + path + "': " + image.message);
  bytes.resize(size);
  write_file_atomic(path, bytes);
}

std::vector<uint8_t> read_png_rgb(const std::string& path, int* width, int* height) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&image, path.c_str()))
    throw Error("'" + path + "' is not a readable PNG file: " + image.message);
  image.format = PNG_FORMAT_RGB;
  image.flags |= PNG_IMAGE_FLAG_16BIT_sRGB;  // 16-bit values scaled as numbers (as Pillow does), not gamma-encoded
  const size_t bytes = PNG_IMAGE_SIZE(image);
  if (bytes > (size_t{1} << 29)) {  // 512 MiB of RGB: about 13,000 x 13,000 pixels
    png_image_free(&image);
    throw Error("'" + path + "': image of " + std::to_string(image.width) + "x" + std::to_string(image.height) + " is too large");
  }
  std::vector<uint8_t> rgb(bytes);
  if (!png_image_finish_read(&image, nullptr, rgb.data(), 0, nullptr))
    throw Error("'" + path + "': corrupt PNG: " + image.message);
  *width = static_cast<int>(image.width);
  *height = static_cast<int>(image.height);
  return rgb;
}

namespace {
// libjpeg reports errors through a callback that must not return: it jumps back to the reader.
struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};
[[noreturn]] void jpeg_fail(j_common_ptr info) {
  auto* e = reinterpret_cast<JpegError*>(info->err);
  (*info->err->format_message)(info, e->message);
  std::longjmp(e->jump, 1);
}
// Warnings that mean the image data itself is damaged (a truncated file decodes with gray
// filler rows otherwise) fail the read; harmless ones (extraneous bytes before a marker) and
// trace messages are ignored.
void jpeg_message(j_common_ptr info, int level) {
  const int code = info->err->msg_code;
  if (level < 0 && (code == JWRN_JPEG_EOF || code == JWRN_HIT_MARKER || code == JWRN_MUST_RESYNC)) jpeg_fail(info);
}

// Every libjpeg call, in a function whose locals are all trivial: longjmp out of it skips no
// destructor. The pixels go to a malloc'd buffer the caller frees. Returns false with
// err->message set on failure.
bool decode_jpeg(std::FILE* f, JpegError* err, unsigned char** out, JDIMENSION* width, JDIMENSION* height) {
  jpeg_decompress_struct info{};
  info.err = jpeg_std_error(&err->mgr);
  err->mgr.error_exit = &jpeg_fail;
  err->mgr.emit_message = &jpeg_message;
  *out = nullptr;
  if (setjmp(err->jump)) {
    jpeg_destroy_decompress(&info);
    std::free(*out);
    *out = nullptr;
    return false;
  }
  jpeg_create_decompress(&info);
  info.mem->max_memory_to_use = 512L << 20;  // libjpeg's own buffers (a progressive file's coefficients)
  jpeg_stdio_src(&info, f);
  jpeg_read_header(&info, TRUE);
  // Checked before libjpeg allocates anything of the image's size (a progressive file's
  // coefficient buffer would be that large).
  if (static_cast<uint64_t>(info.image_width) * info.image_height * 3 > (uint64_t{1} << 29)) {
    std::snprintf(err->message, sizeof err->message, "its %ux%u pixels are too many", info.image_width, info.image_height);
    jpeg_destroy_decompress(&info);
    return false;
  }
  info.out_color_space = JCS_RGB;  // gray and YCbCr alike (libjpeg refuses CMYK here)
  jpeg_start_decompress(&info);
  const size_t row = static_cast<size_t>(info.output_width) * 3;
  *out = static_cast<unsigned char*>(std::malloc(std::max<size_t>(1, row * info.output_height)));
  if (!*out) {
    std::snprintf(err->message, sizeof err->message, "out of memory");
    jpeg_destroy_decompress(&info);
    return false;
  }
  while (info.output_scanline < info.output_height) {
    JSAMPROW line = *out + static_cast<size_t>(info.output_scanline) * row;
    jpeg_read_scanlines(&info, &line, 1);
  }
  jpeg_finish_decompress(&info);
  *width = info.output_width;
  *height = info.output_height;
  jpeg_destroy_decompress(&info);
  return true;
}
}  // namespace

std::vector<uint8_t> read_jpeg_rgb(const std::string& path, int* width, int* height) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw Error("cannot open '" + path + "'");
  JpegError err{};
  unsigned char* pixels = nullptr;
  JDIMENSION w = 0, h = 0;
  const bool ok = decode_jpeg(f, &err, &pixels, &w, &h);
  std::fclose(f);
  if (!ok) throw Error("'" + path + "' is not a readable JPEG file: " + err.message);
  std::vector<uint8_t> rgb(pixels, pixels + static_cast<size_t>(w) * h * 3);
  std::free(pixels);
  *width = static_cast<int>(w);
  *height = static_cast<int>(h);
  return rgb;
}

std::vector<uint8_t> read_image_rgb(const std::string& path, int* width, int* height) {
  unsigned char magic[8] = {};
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error("cannot open '" + path + "'");
    in.read(reinterpret_cast<char*>(magic), sizeof magic);
  }
  if (std::memcmp(magic, "\x89PNG\r\n\x1a\n", 8) == 0) return read_png_rgb(path, width, height);
  if (magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF) return read_jpeg_rgb(path, width, height);
  throw Error("'" + path + "' is neither a PNG nor a JPEG file");
}

void read_png_size(const std::string& path, int* width, int* height) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&image, path.c_str())) throw Error("'" + path + "' is not a PNG file: " + image.message);
  *width = static_cast<int>(image.width);
  *height = static_cast<int>(image.height);
  png_image_free(&image);
}

namespace {

// giflib writes through this callback into memory, so the file is then written atomically.
int gif_to_string(GifFileType* gif, const GifByteType* data, int n) {
  static_cast<std::string*>(gif->UserData)->append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
  return n;
}

// Gray frames get 256 gray levels; colour frames a 6x7x6 colour cube (252 colours): fixed
// palettes, so every frame of an animation shares one global colour map.
struct Palette {
  bool gray = true;
  std::vector<GifColorType> colours;
  explicit Palette(const std::vector<std::vector<uint8_t>>& frames) {
    for (const auto& f : frames)
      for (size_t i = 0; gray && i < f.size(); i += 3) gray = f[i] == f[i + 1] && f[i] == f[i + 2];
    if (gray) {
      for (int v = 0; v < 256; ++v) colours.push_back({static_cast<GifByteType>(v), static_cast<GifByteType>(v), static_cast<GifByteType>(v)});
    } else {
      for (int r = 0; r < 6; ++r)
        for (int g = 0; g < 7; ++g)
          for (int b = 0; b < 6; ++b)
            colours.push_back({static_cast<GifByteType>(r * 51), static_cast<GifByteType>((g * 255 + 3) / 6), static_cast<GifByteType>(b * 51)});
      colours.resize(256, GifColorType{0, 0, 0});
    }
  }
  GifByteType index(const uint8_t* p) const {
    if (gray) return p[0];
    const int r = (p[0] * 5 + 127) / 255, g = (p[1] * 6 + 127) / 255, b = (p[2] * 5 + 127) / 255;
    return static_cast<GifByteType>((r * 7 + g) * 6 + b);
  }
};

}  // namespace

void write_gif(const std::string& path, int width, int height, const std::vector<std::vector<uint8_t>>& frames,
               int delay_centiseconds) {
  if (width <= 0 || height <= 0 || frames.empty()) throw Error("write_gif '" + path + "': no frames or an empty size");
  for (const auto& f : frames)
    if (f.size() != static_cast<size_t>(width) * height * 3)
      throw Error("write_gif '" + path + "': a frame does not match " + std::to_string(width) + "x" + std::to_string(height));
  std::string bytes;
  int err = 0;
  GifFileType* gif = EGifOpen(&bytes, gif_to_string, &err);
  if (!gif) throw Error("write_gif '" + path + "': " + GifErrorString(err));
  auto fail = [&](const char* what) {
    const int code = gif->Error;
    EGifCloseFile(gif, &err);
    throw Error(std::string("write_gif '") + path + "': " + what + ": " + GifErrorString(code));
  };
  const Palette palette(frames);
  ColorMapObject* map = GifMakeMapObject(256, palette.colours.data());
  EGifSetGifVersion(gif, true);
  const int screen = EGifPutScreenDesc(gif, width, height, 8, 0, map);
  GifFreeMapObject(map);
  if (screen == GIF_ERROR) fail("screen descriptor");
  // NETSCAPE2.0 application block: loop forever.
  const GifByteType loop[3] = {1, 0, 0};
  if (EGifPutExtensionLeader(gif, APPLICATION_EXT_FUNC_CODE) == GIF_ERROR ||
      EGifPutExtensionBlock(gif, 11, "NETSCAPE2.0") == GIF_ERROR || EGifPutExtensionBlock(gif, 3, loop) == GIF_ERROR ||
      EGifPutExtensionTrailer(gif) == GIF_ERROR)
    fail("loop extension");
  std::vector<GifPixelType> line(static_cast<size_t>(width));
  for (const auto& f : frames) {
    GraphicsControlBlock gcb{};
    gcb.DisposalMode = DISPOSE_DO_NOT;
    gcb.DelayTime = delay_centiseconds;
    gcb.TransparentColor = NO_TRANSPARENT_COLOR;
    GifByteType ext[4];
    const size_t n = EGifGCBToExtension(&gcb, ext);
    if (EGifPutExtension(gif, GRAPHICS_EXT_FUNC_CODE, static_cast<int>(n), ext) == GIF_ERROR) fail("frame delay");
    if (EGifPutImageDesc(gif, 0, 0, width, height, false, nullptr) == GIF_ERROR) fail("image descriptor");
    for (int y = 0; y < height; ++y) {
      for (int x = 0; x < width; ++x) line[static_cast<size_t>(x)] = palette.index(&f[(static_cast<size_t>(y) * width + x) * 3]);
      if (EGifPutLine(gif, line.data(), width) == GIF_ERROR) fail("pixels");
    }
  }
  if (EGifCloseFile(gif, &err) == GIF_ERROR) throw Error("write_gif '" + path + "': " + GifErrorString(err));
  write_file_atomic(path, bytes);
}

}  // namespace flowkit::io
