#pragma once
// IDX files (the MNIST format): a big-endian header, magic 0x00000803 then count, rows
// and cols for images, magic 0x00000801 then count for labels, then one unsigned byte
// per pixel or label. Files are read through zlib, which takes gzip-compressed and
// plain files alike. Every byte is accounted for: a short file, a broken gzip stream
// and data after the declared items are all errors naming the file. (Only non-gzip
// bytes after the end of a gzip stream escape: zlib skips them by design.)
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <iomanip>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <trellis/errors.hpp>

namespace trellis::data {

/// count images of rows x cols pixels, pixels (count, rows*cols) row-major.
struct IdxImages {
  long count = 0;
  int rows = 0, cols = 0;
  std::vector<std::uint8_t> pixels;
};

namespace detail {

/// A gzip (or plain) file opened for reading; every read checks zlib's error state, so
/// a stream cut short or corrupted is an error rather than a quietly short read.
class GzReader {
 public:
  explicit GzReader(std::string path) : path_(std::move(path)) {
    std::error_code ec;
    auto const status = std::filesystem::status(path_, ec);
    if (!std::filesystem::exists(status)) fail_data(path_, ": cannot open: no such file");
    // zlib would open a folder and fail on the first read with a vaguer message.
    if (!std::filesystem::is_regular_file(status)) fail_data(path_, ": cannot open: not a regular file");
    errno = 0;
    file_ = gzopen(path_.c_str(), "rb");
    if (!file_)
      fail_data(path_, ": cannot open: ", errno ? std::strerror(errno) : "zlib could not allocate its state");
    gzbuffer(file_, 1u << 17);  // fewer system calls than the 8 KiB default
  }
  GzReader(GzReader const&) = delete;
  GzReader& operator=(GzReader const&) = delete;
  ~GzReader() {
    if (file_) gzclose(file_);
  }

  std::string const& path() const { return path_; }
  /// Decompressed bytes read so far.
  std::uint64_t position() const { return position_; }

  /// Reads up to n bytes into out; fewer only at the end of the data. `what` says what
  /// was being read, for the error message.
  std::size_t read(void* out, std::size_t n, char const* what) {
    auto* p = static_cast<unsigned char*>(out);
    std::size_t got = 0;
    while (got < n) {
      // gzread takes an unsigned and returns an int: stay well inside both.
      auto const chunk = static_cast<unsigned>(std::min<std::size_t>(n - got, 1u << 30));
      int const r = gzread(file_, p + got, chunk);
      if (r < 0) stream_error(what);
      if (r == 0) break;
      got += static_cast<std::size_t>(r);
      position_ += static_cast<std::uint64_t>(r);
    }
    // On a gzip cut short, zlib hands back what it could decompress and only records
    // Z_BUF_ERROR ("unexpected end of file"): ask, or the cut would pass unnoticed.
    int err = Z_OK;
    gzerror(file_, &err);
    if (err != Z_OK) stream_error(what);
    return got;
  }

  /// Counts the bytes left (reading them, which also checks the gzip trailer's CRC and
  /// length); returns 0 for a file that ends exactly here.
  std::uint64_t count_rest(char const* what) {
    std::vector<unsigned char> buffer(1u << 16);
    std::uint64_t rest = 0;
    while (std::size_t const n = read(buffer.data(), buffer.size(), what)) rest += n;
    return rest;
  }

  /// Closes the file; zlib reports here an error that the last read left pending.
  void close() {
    int const rc = gzclose(file_);
    file_ = nullptr;
    if (rc != Z_OK)
      fail_data(path_, ": closing the gzip stream failed (zlib error ", rc,
                rc == Z_BUF_ERROR ? ": the stream ends in the middle" : "", ")");
  }

 private:
  [[noreturn]] void stream_error(char const* what) {
    int err = Z_OK;
    char const* msg = gzerror(file_, &err);
    std::string detail = msg && *msg ? msg : "unknown error";
    // zlib puts the path in front of its message; the error already starts with it.
    if (detail.rfind(path_ + ": ", 0) == 0) detail.erase(0, path_.size() + 2);
    if (err == Z_ERRNO) detail = std::strerror(errno);
    fail_data(path_, err == Z_BUF_ERROR ? ": truncated gzip stream (zlib: " : ": corrupt or unreadable file (zlib: ",
              detail, ") after ", position_, " bytes of decompressed data, while reading ", what);
  }

  std::string path_;
  gzFile file_ = nullptr;
  std::uint64_t position_ = 0;
};

inline std::string hex32(std::uint32_t v) {
  std::ostringstream out;
  out << "0x" << std::hex << std::setw(8) << std::setfill('0') << v;
  return out.str();
}

/// Reads `n` big-endian u32 header fields, the first being the magic number.
inline std::vector<std::uint32_t> read_header(GzReader& in, std::size_t n, std::uint32_t magic,
                                              char const* kind) {
  std::vector<unsigned char> bytes(4 * n);
  std::size_t const got = in.read(bytes.data(), bytes.size(), "the header");
  if (got < 4)
    fail_data(in.path(), ": truncated: expected a ", bytes.size(), "-byte IDX header, got ", got, " bytes");
  std::vector<std::uint32_t> fields(n);
  for (std::size_t i = 0; i < n; ++i)
    fields[i] = std::uint32_t(bytes[4 * i]) << 24 | std::uint32_t(bytes[4 * i + 1]) << 16 |
                std::uint32_t(bytes[4 * i + 2]) << 8 | std::uint32_t(bytes[4 * i + 3]);
  // The magic first: a labels file given for images says so, not "truncated".
  if (fields[0] != magic)
    fail_data(in.path(), ": magic number ", hex32(fields[0]), " is not ", hex32(magic), " (", kind, ")");
  if (got < bytes.size())
    fail_data(in.path(), ": truncated: expected a ", bytes.size(), "-byte IDX header, got ", got, " bytes");
  return fields;
}

/// Reads exactly `total` payload bytes, growing the buffer as data arrive so that a
/// header claiming gigabytes over a small file fails without allocating them.
inline std::vector<std::uint8_t> read_payload(GzReader& in, std::uint64_t total, char const* what) {
  std::vector<std::uint8_t> data;
  std::size_t const step = std::size_t(1) << 24;
  data.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(total, step)));
  while (data.size() < total) {
    std::size_t const old = data.size();
    std::size_t const want = static_cast<std::size_t>(std::min<std::uint64_t>(total - old, step));
    data.resize(old + want);
    std::size_t const got = in.read(data.data() + old, want, what);
    if (got < want)
      fail_data(in.path(), ": truncated: expected ", total, " bytes of ", what, " after the header, got ",
                old + got);
  }
  return data;
}

/// After the payload the file must end.
inline void expect_end(GzReader& in, std::uint64_t count, char const* items) {
  std::uint64_t const rest = in.count_rest("the end of the file");
  if (rest) fail_data(in.path(), ": ", rest, " bytes after the declared ", count, " ", items);
  in.close();
}

}  // namespace detail

/// Reads an IDX images file (magic 0x00000803), gzip-compressed or not.
inline IdxImages read_idx_images(std::string const& path) {
  detail::GzReader in(path);
  auto const h = detail::read_header(in, 4, 0x00000803u, "IDX images");
  std::uint32_t const count = h[1], rows = h[2], cols = h[3];
  // Limits far above any image set, low enough that nothing below overflows.
  if (rows == 0 || cols == 0 || rows > 65536 || cols > 65536)
    fail_data(path, ": image size ", rows, "x", cols, " is absurd (each side must be 1..65536)");
  double const total = double(count) * double(rows) * double(cols);
  if (total > 1e10)
    fail_data(path, ": ", count, " images of ", rows, "x", cols, " make ", total,
              " bytes of pixel data, more than the limit of 1e10");
  IdxImages out;
  out.count = static_cast<long>(count);
  out.rows = static_cast<int>(rows);
  out.cols = static_cast<int>(cols);
  out.pixels = detail::read_payload(in, std::uint64_t(count) * rows * cols, "pixel data");
  detail::expect_end(in, count, "images");
  return out;
}

/// Reads an IDX labels file (magic 0x00000801), gzip-compressed or not.
inline std::vector<std::uint8_t> read_idx_labels(std::string const& path) {
  detail::GzReader in(path);
  auto const h = detail::read_header(in, 2, 0x00000801u, "IDX labels");
  std::uint32_t const count = h[1];  // at most 4.3e9 bytes: under the 1e10 limit
  auto labels = detail::read_payload(in, count, "label data");
  detail::expect_end(in, count, "labels");
  return labels;
}

}  // namespace trellis::data
