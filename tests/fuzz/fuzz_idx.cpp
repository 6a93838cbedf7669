// The IDX reader (Fashion-MNIST's gzip-compressed images and labels) on arbitrary
// bytes: the first byte picks images or labels and whether the rest is gzip-compressed
// first (so that the IDX parser sees arbitrary decompressed bytes) or read as it is
// (the gzip layer sees arbitrary bytes).
#include <zlib.h>

#include <trellis/data/idx.hpp>

#include "fuzz_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size) {
  if (size == 0) return 0;
  std::uint8_t const mode = data[0];
  std::string path;
  if (mode & 2) {
    path = trellis::fuzz::write_file("input.gz", data + 1, size - 1);
  } else {
    path = trellis::fuzz::scratch("input.gz");
    gzFile f = gzopen(path.c_str(), "wb");
    if (!f) return 0;
    if (size > 1) gzwrite(f, data + 1, unsigned(size - 1));
    gzclose(f);
  }
  trellis::fuzz::expect_clear_errors([&] {
    if (mode & 1)
      (void)trellis::data::read_idx_images(path);
    else
      (void)trellis::data::read_idx_labels(path);
  });
  return 0;
}
