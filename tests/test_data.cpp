// The data loaders on small synthetic files: IDX reading (gzip and plain) and every
// malformed-file error, the Fashion-MNIST and MNIST-digits splits, the State of the
// Union corpus (split, vocabularies, unknown tokens). The real data sets are loaded
// too where present, and skipped with a message where not.
#include <doctest/doctest.h>

#include <unistd.h>
#include <zlib.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "files.hpp"

#include <trellis/data/batching.hpp>
#include <trellis/data/idx.hpp>
#include <trellis/data/image_sets.hpp>
#include <trellis/data/locations.hpp>
#include <trellis/data/text_corpus.hpp>
#include <trellis/errors.hpp>

namespace td = trellis::data;
namespace fs = std::filesystem;

namespace {

using trellis::test::read_bytes;
using trellis::test::TempDir;
using trellis::test::write_bytes;

void write_gz(std::string const& path, std::string const& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  REQUIRE(gzwrite(f, bytes.data(), unsigned(bytes.size())) == int(bytes.size()));
  REQUIRE(gzclose(f) == Z_OK);
}

void put_u32(std::string& out, std::uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out += char((v >> s) & 0xff);
}

std::string idx_images(std::uint32_t count, std::uint32_t rows, std::uint32_t cols,
                       std::vector<std::uint8_t> const& pixels, std::uint32_t magic = 0x803) {
  std::string out;
  put_u32(out, magic);
  put_u32(out, count);
  put_u32(out, rows);
  put_u32(out, cols);
  return out + std::string(pixels.begin(), pixels.end());
}

std::string idx_labels(std::vector<std::uint8_t> const& labels, std::uint32_t magic = 0x801) {
  std::string out;
  put_u32(out, magic);
  put_u32(out, std::uint32_t(labels.size()));
  return out + std::string(labels.begin(), labels.end());
}

/// Pixels that do not compress to nothing, so that half a gzip file is half the data.
std::vector<std::uint8_t> noise(std::size_t n) {
  std::vector<std::uint8_t> v(n);
  std::uint32_t x = 12345;
  for (auto& p : v) p = std::uint8_t((x = x * 1664525u + 1013904223u) >> 24);
  return v;
}

/// The split sizes (train, valid, test) and the image size of a data set.
void check_splits(td::ImageSplits const& s, std::array<long, 3> counts, int rows, int cols) {
  CHECK(s.train.count == counts[0]);
  CHECK(s.valid.count == counts[1]);
  CHECK(s.test.count == counts[2]);
  CHECK(s.train.rows == rows);
  CHECK(s.train.cols == cols);
}

/// The message of the data_error that f throws (a failed check if it throws none).
template <class F>
std::string error_of(F&& f) {
  return trellis::test::error_of<td::data_error>(f);
}

bool starts_with(std::string const& s, std::string const& prefix) { return s.rfind(prefix, 0) == 0; }
bool contains(std::string const& s, std::string const& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("IDX images and labels read from gzip and plain files") {
  TempDir dir("idx");
  std::vector<std::uint8_t> const pixels = noise(3 * 2 * 5);
  for (bool gz : {true, false}) {
    CAPTURE(gz);
    std::string const images = dir / (gz ? "images.gz" : "images"), labels = dir / (gz ? "labels.gz" : "labels");
    gz ? write_gz(images, idx_images(3, 2, 5, pixels)) : write_bytes(images, idx_images(3, 2, 5, pixels));
    gz ? write_gz(labels, idx_labels({7, 0, 9})) : write_bytes(labels, idx_labels({7, 0, 9}));
    auto const im = td::read_idx_images(images);
    CHECK(im.count == 3);
    CHECK(im.rows == 2);
    CHECK(im.cols == 5);
    CHECK(im.pixels == pixels);
    CHECK(td::read_idx_labels(labels) == std::vector<std::uint8_t>{7, 0, 9});
  }
  write_gz(dir / "none.gz", idx_images(0, 28, 28, {}));
  CHECK(td::read_idx_images(dir / "none.gz").count == 0);
}

TEST_CASE("malformed IDX files are errors naming the file and what was wrong") {
  TempDir dir("idx-bad");
  std::string const path = dir / "images.gz";
  std::vector<std::uint8_t> const pixels = noise(1000 * 16);
  std::string const good = idx_images(1000, 4, 4, pixels);
  auto images_error = [&] { return error_of([&] { td::read_idx_images(path); }); };

  SUBCASE("a missing file") {
    auto const msg = error_of([&] { td::read_idx_images(dir / "missing.gz"); });
    CHECK(starts_with(msg, dir / "missing.gz"));
    CHECK(contains(msg, "cannot open: no such file"));
    CHECK(contains(error_of([&] { td::read_idx_labels(dir / "missing.gz"); }), "cannot open"));
  }
  SUBCASE("a folder") {
    CHECK(contains(error_of([&] { td::read_idx_images(dir.path.string()); }), "not a regular file"));
  }
  SUBCASE("a gzip file cut in half") {
    write_gz(path, good);
    std::string const bytes = read_bytes(path);
    REQUIRE(bytes.size() > 4000);  // the noise did not compress away
    write_bytes(path, bytes.substr(0, bytes.size() / 2));
    auto const msg = images_error();
    CHECK(starts_with(msg, path));
    CHECK(contains(msg, "truncated gzip stream"));
    CHECK(contains(msg, "unexpected end of file"));
  }
  SUBCASE("a gzip file missing its trailer (all data there, CRC and length not)") {
    write_gz(path, good);
    std::string const bytes = read_bytes(path);
    write_bytes(path, bytes.substr(0, bytes.size() - 8));
    CHECK(contains(images_error(), "truncated gzip stream"));
  }
  SUBCASE("a gzip file with a wrong CRC") {
    write_gz(path, good);
    std::string bytes = read_bytes(path);
    bytes[bytes.size() - 8] = char(bytes[bytes.size() - 8] ^ 0x55);  // first byte of the CRC-32
    write_bytes(path, bytes);
    auto const msg = images_error();
    CHECK(starts_with(msg, path));
    CHECK(contains(msg, "corrupt"));
  }
  SUBCASE("a corrupt gzip stream") {
    write_gz(path, good);
    std::string bytes = read_bytes(path);
    for (std::size_t i = bytes.size() / 3; i < bytes.size() / 3 + 64; ++i) bytes[i] = char(0xff);
    write_bytes(path, bytes);
    CHECK(starts_with(images_error(), path));
  }
  SUBCASE("fewer pixels than the header declares") {
    write_gz(path, idx_images(1001, 4, 4, pixels));
    auto const msg = images_error();
    CHECK(starts_with(msg, path));
    CHECK(contains(msg, "truncated: expected 16016 bytes of pixel data after the header, got 16000"));
    write_bytes(path, idx_images(1001, 4, 4, pixels));  // the same, uncompressed
    CHECK(contains(images_error(), "truncated: expected 16016 bytes of pixel data after the header, got 16000"));
  }
  SUBCASE("a short header") {
    write_gz(path, good.substr(0, 10));
    CHECK(contains(images_error(), "truncated: expected a 16-byte IDX header, got 10 bytes"));
    write_gz(path, "");
    CHECK(contains(images_error(), "got 0 bytes"));
  }
  SUBCASE("a wrong magic number") {
    write_gz(path, idx_labels({1, 2, 3}));
    auto const msg = images_error();
    CHECK(starts_with(msg, path));
    CHECK(contains(msg, "magic number 0x00000801 is not 0x00000803 (IDX images)"));
    write_gz(path, good);
    CHECK(contains(error_of([&] { td::read_idx_labels(path); }),
                   "magic number 0x00000803 is not 0x00000801 (IDX labels)"));
  }
  SUBCASE("absurd sizes") {
    write_gz(path, idx_images(100000, 1000, 1000, {}));
    CHECK(contains(images_error(), "more than the limit of 1e10"));
    write_gz(path, idx_images(0xffffffffu, 65536, 65536, {}));  // would overflow 64 bits
    CHECK(contains(images_error(), "more than the limit of 1e10"));
    write_gz(path, idx_images(1, 0, 28, {}));
    CHECK(contains(images_error(), "image size 0x28 is absurd"));
    write_gz(path, idx_images(1, 28, 70000, {}));
    CHECK(contains(images_error(), "image size 28x70000 is absurd"));
  }
  SUBCASE("data after the declared items") {
    write_gz(path, good + "trailer");
    auto const msg = images_error();
    CHECK(starts_with(msg, path));
    CHECK(contains(msg, "7 bytes after the declared 1000 images"));
    write_gz(path, idx_labels({1, 2, 3}) + "xy");
    CHECK(contains(error_of([&] { td::read_idx_labels(path); }), "2 bytes after the declared 3 labels"));
  }
  SUBCASE("labels fewer than declared") {
    std::string bytes = idx_labels({1, 2, 3, 4});
    write_gz(path, bytes.substr(0, bytes.size() - 1));
    CHECK(contains(error_of([&] { td::read_idx_labels(path); }),
                   "truncated: expected 4 bytes of label data after the header, got 3"));
  }
}

namespace {

/// A Fashion-MNIST-like folder of 2x2 images: `ntrain` training images with labels
/// i % 10 and pixel 0 = i % 256, 7 test images.
void write_fashion(TempDir const& dir, std::uint32_t ntrain, std::uint32_t ntrain_labels) {
  std::vector<std::uint8_t> pixels(ntrain * 4u, 255), labels(ntrain_labels);
  for (std::uint32_t i = 0; i < ntrain; ++i) pixels[4 * i] = std::uint8_t(i % 256);
  for (std::uint32_t i = 0; i < ntrain_labels; ++i) labels[i] = std::uint8_t(i % 10);
  write_gz(dir / "train-images-idx3-ubyte.gz", idx_images(ntrain, 2, 2, pixels));
  write_gz(dir / "train-labels-idx1-ubyte.gz", idx_labels(labels));
  write_gz(dir / "t10k-images-idx3-ubyte.gz", idx_images(7, 2, 2, std::vector<std::uint8_t>(28, 51)));
  write_gz(dir / "t10k-labels-idx1-ubyte.gz", idx_labels({0, 1, 2, 3, 4, 5, 9}));
}

}  // namespace

TEST_CASE("Fashion-MNIST: the last 5,000 training images are validation; errors name the file") {
  TempDir dir("fashion");
  std::string const root = dir.path.string();
  SUBCASE("the split") {
    write_fashion(dir, 5003, 5003);
    auto const s = td::load_fashion_mnist(root);
    check_splits(s, {3, 5000, 7}, 2, 2);
    CHECK(s.train.nclasses == 10);
    CHECK(s.train.pixels == std::vector<float>{0, 1, 1, 1, 1.f / 255, 1, 1, 1, 2.f / 255, 1, 1, 1});
    CHECK(s.train.labels == std::vector<std::int32_t>{0, 1, 2});
    CHECK(s.valid.pixels.size() == 5000u * 4);
    CHECK(s.valid.pixels[0] == 3.f / 255);
    CHECK(s.valid.labels.front() == 3);
    CHECK(s.valid.labels.back() == 5002 % 10);
    CHECK(s.test.pixels == std::vector<float>(28, 0.2f));
    CHECK(s.test.labels == std::vector<std::int32_t>{0, 1, 2, 3, 4, 5, 9});
  }
  SUBCASE("labels and images disagree in count") {
    write_fashion(dir, 5003, 5002);
    auto const msg = error_of([&] { td::load_fashion_mnist(root); });
    CHECK(starts_with(msg, dir / "train-labels-idx1-ubyte.gz"));
    CHECK(contains(msg, "5002 labels, but " + (dir / "train-images-idx3-ubyte.gz") + " holds 5003 images"));
  }
  SUBCASE("a label outside 0..9") {
    write_fashion(dir, 5003, 5003);
    write_gz(dir / "t10k-labels-idx1-ubyte.gz", idx_labels({0, 1, 2, 3, 4, 12, 9}));
    auto const msg = error_of([&] { td::load_fashion_mnist(root); });
    CHECK(starts_with(msg, dir / "t10k-labels-idx1-ubyte.gz"));
    CHECK(contains(msg, "label 12 at index 5"));
  }
  SUBCASE("too few training images for the split") {
    write_fashion(dir, 5000, 5000);
    CHECK(contains(error_of([&] { td::load_fashion_mnist(root); }), "needs more than 5000"));
  }
  SUBCASE("test images of another size") {
    write_fashion(dir, 5003, 5003);
    write_gz(dir / "t10k-images-idx3-ubyte.gz", idx_images(7, 1, 4, std::vector<std::uint8_t>(28, 51)));
    CHECK(contains(error_of([&] { td::load_fashion_mnist(root); }), "images are 1x4"));
  }
  SUBCASE("a missing file or folder") {
    write_fashion(dir, 5003, 5003);
    fs::remove(dir / "t10k-images-idx3-ubyte.gz");
    CHECK(starts_with(error_of([&] { td::load_fashion_mnist(root); }), dir / "t10k-images-idx3-ubyte.gz"));
    CHECK(contains(error_of([&] { td::load_fashion_mnist(dir / "nowhere"); }),
                   "trellis::data::load_fashion_mnist: folder " + (dir / "nowhere") + " does not exist"));
  }
}

namespace {

/// A digit file of the mnist package, {"data": [...]}, of `images` images; `extra` is
/// appended inside the array.
void write_digit(std::string const& path, std::size_t images, int c, std::string const& extra = "") {
  std::ostringstream out;
  out << "{\"data\": [";
  for (std::size_t i = 0; i < images; ++i)
    for (int p = 0; p < 784; ++p) {
      if (i || p) out << ',';
      // Pixel 0 says the digit, pixel 1 the image: enough to check the interleaving.
      if (p == 0) out << c / 10.0;
      else if (p == 1) out << double(i) / 1000;
      else out << 0;
    }
  out << extra << "]}";
  write_bytes(path, out.str());
}

}  // namespace

TEST_CASE("MNIST digits: one interleaved order split 70/10/20; bad JSON names the file") {
  TempDir dir("mnist");
  fs::create_directories(dir.path / "src" / "digits");
  auto digit = [&](int c) { return (dir.path / "src" / "digits" / (std::to_string(c) + ".json")).string(); };
  auto load_error = [&] { return error_of([&] { td::load_mnist_digits(dir.path.string()); }); };

  SUBCASE("the split") {
    // Digit c has 30 + 3c images, like the package's unequal files (863..1,127).
    for (int c = 0; c < 10; ++c) write_digit(digit(c), std::size_t(30 + 3 * c), c);
    auto const s = td::load_mnist_digits(dir.path.string());
    // 435 images: 70% train, 10% valid, the rest test, of one interleaved order.
    CHECK(s.train.count == 304);
    CHECK(s.valid.count == 43);
    CHECK(s.test.count == 88);
    auto entries = [](td::ImageSet const& set) {
      REQUIRE(set.pixels.size() == std::size_t(set.count) * 784);
      REQUIRE(set.labels.size() == std::size_t(set.count));
      std::vector<std::pair<int, int>> out;
      for (long k = 0; k < set.count; ++k) {
        float const* img = set.pixels.data() + std::size_t(k) * 784;
        int const c = int(img[0] * 10 + 0.5f), i = int(img[1] * 1000 + 0.5f);
        CHECK(set.labels[std::size_t(k)] == c);
        out.emplace_back(c, i);
      }
      return out;
    };
    // (digit, image): image rank i then digit c, digits whose images are used up dropping out.
    std::vector<std::pair<int, int>> order;
    for (int i = 0; i < 60; ++i)
      for (int c = 0; c < 10; ++c)
        if (i < 30 + 3 * c) order.emplace_back(c, i);
    auto all = entries(s.train), valid = entries(s.valid), test = entries(s.test);
    all.insert(all.end(), valid.begin(), valid.end());
    all.insert(all.end(), test.begin(), test.end());
    CHECK(all == order);
    CHECK(entries(s.train)[10] == std::pair<int, int>{0, 1});
  }
  SUBCASE("invalid JSON, with its byte offset") {
    write_bytes(digit(0), "{\"data\": [0, 0.5, ]}");
    auto const msg = load_error();
    CHECK(starts_with(msg, digit(0)));
    CHECK(contains(msg, "invalid JSON at byte 19"));
  }
  SUBCASE("a number past double's range (found by fuzz_mnist_json: the JSON parser's out_of_range escaped)") {
    write_bytes(digit(0), "{\"data\": [0.5e1111111111111111111111111111, 0]}");
    auto const msg = load_error();
    CHECK(starts_with(msg, digit(0)));
    CHECK(contains(msg, "invalid JSON"));
  }
  SUBCASE("no data array") {
    write_bytes(digit(0), "{\"pixels\": []}");
    CHECK(contains(load_error(), "expected an object {\"data\": [...]}"));
  }
  SUBCASE("too few images to split") {
    write_digit(digit(0), 9, 0);
    CHECK(contains(load_error(), "9 images, the 70/10/20 split needs at least 10"));
  }
  SUBCASE("a length that is not whole images") {
    write_digit(digit(0), 20, 0, ",0");
    CHECK(contains(load_error(), "15681 values, not a multiple of 784"));
  }
  SUBCASE("a value outside [0, 1], in the last file") {
    for (int c = 0; c < 9; ++c) write_digit(digit(c), 10, c);
    std::string text = "{\"data\": [0, 0.25, 1.5";
    for (int i = 3; i < 784 * 10; ++i) text += ",0";
    write_bytes(digit(9), text + "]}");
    auto const msg = load_error();
    CHECK(starts_with(msg, digit(9)));
    CHECK(contains(msg, "value 1.5 at index 2 (image 0, pixel 2) is outside [0, 1]"));
  }
  SUBCASE("a missing file or folder") {
    CHECK(starts_with(load_error(), digit(0)));
    CHECK(contains(error_of([&] { td::load_mnist_digits(dir / "nowhere"); }), "does not exist"));
  }
}

namespace {

/// A State of the Union folder with 27 addresses: three train (two from 1901, to check
/// that ties go by name), 12 valid and 12 test, and a .json file to ignore.
void write_sotu(TempDir const& dir, int count = 27) {
  fs::create_directories(dir.path / "data");
  auto put = [&](std::string const& name, std::string const& text) { write_bytes(dir / ("data/" + name), text); };
  put("1900_first_n.txt", "The cat sat.\nThe dog sat.");
  put("1901_second_n.txt", "A cat?");
  put("1901_another_n.txt", "The cat ran (fast)!");
  put("1900_first_n.json", "{\"not\": \"text\"}");
  for (int i = 0; i < count - 3; ++i) {
    std::string const year = std::to_string(1902 + i);
    if (i < 12) put(year + "_valid_n.txt", "The bird sat.");
    else if (i + 4 < count) put(year + "_test_n.txt", "The cat \xE2\x80\x94 flew.");
    else put(year + "_test_n.txt", "cat cat");
  }
}

}  // namespace

TEST_CASE("State of the Union: chronological 12/12 split, vocabularies and unknown tokens") {
  TempDir dir("sotu");
  write_sotu(dir);
  std::string const root = dir.path.string();
  std::string const train_text = "The cat sat.\nThe dog sat.\nThe cat ran (fast)!\nA cat?\n";

  SUBCASE("characters") {
    auto const c = td::load_sotu(root, td::TokenLevel::characters);
    CHECK(c.level == td::TokenLevel::characters);
    REQUIRE(c.valid_files.size() == 12);
    REQUIRE(c.test_files.size() == 12);
    CHECK(c.valid_files.front() == "1902_valid_n.txt");
    CHECK(c.valid_files.back() == "1913_valid_n.txt");
    CHECK(c.test_files.front() == "1914_test_n.txt");
    CHECK(c.test_files.back() == "1925_test_n.txt");
    // Distinct train bytes, ascending, then <unk>.
    std::string distinct;
    for (int b = 0; b < 256; ++b)
      if (train_text.find(char(b)) != std::string::npos) distinct += char(b);
    REQUIRE(c.vocabulary.size() == distinct.size() + 1);
    for (std::size_t i = 0; i < distinct.size(); ++i) CHECK(c.vocabulary[i] == std::string(1, distinct[i]));
    CHECK(c.vocabulary.back() == "<unk>");
    CHECK(c.unknown == std::int32_t(distinct.size()));
    // Train decodes back to the addresses in file-name order, each ending in "\n".
    std::string decoded;
    for (auto t : c.train) decoded += c.vocabulary[std::size_t(t)];
    CHECK(decoded == train_text);
    // "The bird sat.\n": 'b' and 'i' never occur in train.
    REQUIRE(c.valid.size() == 12 * 14);
    CHECK(c.valid[4] == c.unknown);
    CHECK(c.valid[5] == c.unknown);
    CHECK(c.valid[6] == td::encode(c, "r")[0]);
    CHECK(c.test.size() == 11 * 18 + 8);  // the em dash is three bytes
    td::check_tokens(c.train, c.vocabulary.size(), "train");
    td::check_tokens(c.test, c.vocabulary.size(), "test");
  }
  SUBCASE("words") {
    auto const c = td::load_sotu(root, td::TokenLevel::words, 2);
    CHECK(c.level == td::TokenLevel::words);
    // Counts in train: The 3, cat 3, . 2, sat 2; the rest once. <eos> comes last.
    CHECK(c.vocabulary == std::vector<std::string>{"The", "cat", ".", "sat", "<unk>", "<eos>"});
    CHECK(c.unknown == 4);
    std::int32_t const U = 4, E = 5;
    CHECK(c.train == std::vector<std::int32_t>{0, 1, 3, 2, E, 0, U, 3, 2, E, 0, 1, U, U, U, U, U, E, U, 1, U, E});
    std::vector<std::int32_t> valid, test;
    for (int i = 0; i < 12; ++i) valid.insert(valid.end(), {0, U, 3, 2, E});
    for (int i = 0; i < 11; ++i) test.insert(test.end(), {0, 1, U, U, 2, E});
    test.insert(test.end(), {1, 1, E});
    CHECK(c.valid == valid);
    CHECK(c.test == test);
    CHECK(td::encode(c, "The  cat,sat\n\nzebra") == std::vector<std::int32_t>{0, 1, U, 3, E, E, U});
    // The default min_count of 3 keeps only The and cat.
    CHECK(td::load_sotu(root, td::TokenLevel::words).vocabulary ==
          std::vector<std::string>{"The", "cat", "<unk>", "<eos>"});
    CHECK(contains(error_of([&] { td::encode(c, "  \t "); }), "no word tokens"));
    CHECK(contains(error_of([&] { td::load_sotu(root, td::TokenLevel::words, 0); }), "min_count is 0"));
  }
  SUBCASE("encode and check_tokens") {
    auto const c = td::load_sotu(root, td::TokenLevel::characters);
    CHECK(error_of([&] { td::encode(c, ""); }) == "trellis::data::encode: text is empty");
    CHECK(contains(error_of([&] { td::encode(td::Corpus{}, "x"); }), "has no vocabulary"));
    CHECK(error_of([&] { td::check_tokens({0, 3, 17, 2}, 17, "batch 4"); }) ==
          "batch 4: token 17 at index 2 is outside [0, 17)");
    CHECK(contains(error_of([&] { td::check_tokens({-1}, 17, "x"); }), "token -1 at index 0"));
  }
  SUBCASE("an empty address") {
    write_bytes(dir / "data/1905_valid_n.txt", "");
    auto const msg = error_of([&] { td::load_sotu(root, td::TokenLevel::words); });
    CHECK(msg == (dir / "data/1905_valid_n.txt") + ": empty address text");
  }
  SUBCASE("too few addresses") {
    fs::remove(dir / "data/1925_test_n.txt");
    fs::remove(dir / "data/1924_test_n.txt");
    CHECK(td::load_sotu(root, td::TokenLevel::characters).train.size() == 26);  // 25: one train address
    fs::remove(dir / "data/1923_test_n.txt");
    auto const msg = error_of([&] { td::load_sotu(root, td::TokenLevel::characters); });
    CHECK(starts_with(msg, "trellis::data::load_sotu: "));
    CHECK(contains(msg, "holds 24 .txt files; needs at least 25 addresses for the 12/12 split"));
  }
  SUBCASE("a missing folder") {
    CHECK(contains(error_of([&] { td::load_sotu(dir / "nowhere", td::TokenLevel::words); }),
                   "folder " + (dir / "nowhere") + " does not exist"));
    fs::remove_all(dir.path / "data");
    CHECK(contains(error_of([&] { td::load_sotu(root, td::TokenLevel::words); }),
                   (dir / "data") + " is not a folder"));
  }
}

TEST_CASE("the real data sets, where present") {
  std::string const fashion = td::default_fashion_dir();
  if (fs::exists(fs::path(fashion) / "train-images-idx3-ubyte.gz")) {
    auto const s = td::load_fashion_mnist(fashion);
    check_splits(s, {55000, 5000, 10000}, 28, 28);
    CHECK(s.test.pixels.size() == 10000u * 784);
    CHECK(s.test.labels.size() == 10000u);
  } else {
    MESSAGE("skipped Fashion-MNIST: " << fashion << " absent (scripts/fetch-data fashion)");
  }

  std::string const root = td::data_root();
  fs::path const mnist = td::mnist_dir(root), sotu = td::sotu_dir(root);
  if (fs::exists(mnist / "package.json")) {
    auto const s = td::load_mnist_digits(mnist.string());
    CHECK(s.train.count == 7000);  // the files hold 863..1,127 images, 10,000 in all
    CHECK(s.valid.count == 1000);
    CHECK(s.test.count == 2000);
  } else {
    MESSAGE("skipped MNIST digits: " << mnist.string() << " absent (scripts/fetch-data mnist)");
  }
  if (fs::exists(sotu / "package.json")) {
    for (auto level : {td::TokenLevel::characters, td::TokenLevel::words}) {
      auto const c = td::load_sotu(sotu.string(), level);
      CHECK(c.test_files.size() == 12);
      CHECK(c.valid_files.size() == 12);
      CHECK(c.test_files.back() == "2021_joseph_r_biden_d.txt");
      CHECK_FALSE(c.train.empty());
      CHECK_FALSE(c.valid.empty());
      CHECK_FALSE(c.test.empty());
      td::check_tokens(c.train, c.vocabulary.size(), "train");
      td::check_tokens(c.valid, c.vocabulary.size(), "valid");
      td::check_tokens(c.test, c.vocabulary.size(), "test");
      MESSAGE("SOTU " << std::string(level == td::TokenLevel::words ? "words" : "characters") << ": vocabulary "
                      << c.vocabulary.size() << ", train/valid/test " << c.train.size() << "/" << c.valid.size()
                      << "/" << c.test.size() << " tokens");
    }
  } else {
    MESSAGE("skipped State of the Union: " << sotu.string() << " absent (scripts/fetch-data sotu)");
  }
}

TEST_CASE("batching: contiguous rows, repack segments and scored windows as the reference") {
  std::vector<std::int32_t> stream(23);
  for (int i = 0; i < 23; ++i) stream[std::size_t(i)] = i;
  auto const b = td::batchify(stream, 3, "stream");
  CHECK(b.steps == 7);  // 21 of the 23 tokens, 7 per row; the tail is dropped
  CHECK(b.at(0, 0) == 0);
  CHECK(b.at(6, 0) == 6);
  CHECK(b.at(0, 1) == 7);
  CHECK(b.at(0, 2) == 14);
  CHECK(b.at(6, 2) == 20);

  // Repack: non-overlapping, every position scored, the last one shorter; the last
  // step is only a target.
  auto const r = td::segments(b.steps, 4, 0);
  REQUIRE(r.size() == 2);
  CHECK(r[0].start == 0);
  CHECK(r[0].length == 4);
  CHECK(r[1].start == 4);
  CHECK(r[1].length == 2);
  CHECK(r[1].scored_from == 0);
  CHECK(!r[0].reset_state);
  std::vector<std::int32_t> tok(4 * 3), tgt(4 * 3);  // (length, rows)
  td::fill_segment(b, r[0], tok.data(), tgt.data());
  CHECK(tok[0] == 0);   // (t 0, row 0)
  CHECK(tok[1] == 7);   // (t 0, row 1)
  CHECK(tgt[0] == 1);
  CHECK(tgt[3 * 3 + 2] == 18);  // (t 3, row 2): target is x(t 4) = 14 + 4

  // Windows of 5 overlapping by 2 (history = nlevels): each scores its last 3, and
  // the scored positions tile the stream.
  auto const w = td::segments(20, 5, 2);
  std::vector<int> scored(20, 0);
  for (auto const& s : w) {
    CHECK(s.reset_state);
    CHECK(s.scored_from == 2);
    for (long t = s.start + s.scored_from; t < s.start + s.length; ++t) ++scored[std::size_t(t)];
  }
  CHECK(w[1].start == 3);
  for (int t = 2; t < 19; ++t) CHECK(scored[std::size_t(t)] == 1);

  CHECK_THROWS_AS(td::batchify(stream, 12, "valid split"), td::data_error);
  CHECK_THROWS_WITH(td::batchify(stream, 12, "valid split"), doctest::Contains("valid split"));
  CHECK_THROWS_AS(td::segments(20, 5, 5), td::data_error);
}
