#pragma once
// An image classification set in memory, split into train / valid / test: what the
// readers of image_sets.hpp return and what a classifier task trains on. Needs no zlib.
#include <cstdint>
#include <vector>

namespace trellis::data {

/// count images, pixels (count, rows*cols) row-major in [0, 1], labels in [0, nclasses).
struct ImageSet {
  long count = 0;
  int rows = 28, cols = 28;
  std::vector<float> pixels;
  std::vector<std::int32_t> labels;
  int nclasses = 10;
};

struct ImageSplits {
  ImageSet train, valid, test;
};

}  // namespace trellis::data
