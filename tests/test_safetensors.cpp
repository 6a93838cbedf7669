// The safetensors reader and writer: round trips in every dtype, clear errors for
// malformed files, atomic writes; and PyTorch RNN state_dicts through it.
#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "files.hpp"

#include <trellis/core/recurrent.hpp>
#include <trellis/io/safetensors.hpp>

namespace st = trellis::safetensors;

namespace {

std::string temp_path(std::string const& name) {
  auto dir = std::filesystem::temp_directory_path() / "trellis-tests";
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

using trellis::test::read_bytes;
using trellis::test::write_bytes;

/// A file whose header is `header` (JSON text) followed by `data_bytes` zero bytes.
std::string raw_file(std::string const& header, std::size_t data_bytes) {
  std::string out(8, '\0');
  std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = char((n >> (8 * i)) & 0xff);
  return out + header + std::string(data_bytes, '\0');
}

}  // namespace

TEST_CASE("safetensors round trip in every dtype") {
  st::File f;
  std::vector<double> values{0.0, 1.0, -2.5, 0.125, 3.0, -7.0};
  for (auto dt : {st::DType::F64, st::DType::F32, st::DType::F16, st::DType::BF16, st::DType::I64, st::DType::I32})
    f.tensors[std::string("t_") + st::dtype_name(dt)] = st::Tensor::from_double(dt, {2, 3}, values);
  f.tensors["u8"] = st::Tensor::from_double(st::DType::U8, {3}, {0, 7, 255});
  f.tensors["scalar"] = st::Tensor::from_double(st::DType::F64, {}, {3.25});
  f.metadata["dilation"] = "[1, 2, 4]";
  f.metadata["wnorm"] = "true";
  auto const path = temp_path("roundtrip.safetensors");
  st::write(path, f);
  auto g = st::read(path);
  REQUIRE(g.tensors.size() == f.tensors.size());
  for (auto const& [name, t] : f.tensors) {
    CAPTURE(name);
    CHECK(g.at(path, name).dtype == t.dtype);
    CHECK(g.at(path, name).shape == t.shape);
    CHECK(g.at(path, name).to_double() == t.to_double());
  }
  CHECK(g.at(path, "t_F16").to_double() == values);  // exactly representable
  CHECK(g.at(path, "t_BF16").to_double() == values);
  CHECK(g.metadata == f.metadata);
  CHECK_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST_CASE("half-precision conversions round to nearest even") {
  CHECK(st::detail::half_to_float(st::detail::float_to_half(65504.f)) == 65504.f);
  CHECK(st::detail::half_to_float(st::detail::float_to_half(1e-7f)) == doctest::Approx(1.19209e-07).epsilon(1e-3));
  CHECK(st::detail::half_to_float(st::detail::float_to_half(1.0f + 1.0f / 4096)) == 1.0f);  // tie to even
  CHECK(std::isinf(st::detail::half_to_float(st::detail::float_to_half(1e6f))));
  CHECK(st::detail::bf16_to_float(st::detail::float_to_bf16(1.0f + 1.0f / 256)) == 1.0f);  // tie to even
}

TEST_CASE("malformed safetensors files are clear errors") {
  auto const path = temp_path("bad.safetensors");
  SUBCASE("a missing file") {
    CHECK_THROWS_WITH_AS(st::read(temp_path("missing.safetensors")), doctest::Contains("cannot open"),
                         trellis::file_error);
  }
  SUBCASE("a file shorter than its header length") {
    write_bytes(path, "abc");
    CHECK_THROWS_WITH_AS(st::read(path), doctest::Contains("shorter than the 8-byte header length"), trellis::file_error);
  }
  SUBCASE("a truncated file") {
    st::File f;
    f.tensors["w"] = st::Tensor::from_double(st::DType::F32, {4, 4}, std::vector<double>(16, 1.0));
    st::write(path, f);
    auto bytes = read_bytes(path);
    write_bytes(path, bytes.substr(0, bytes.size() - 10));
    CHECK_THROWS_WITH_AS(st::read(path), doctest::Contains("tensor 'w' ends at data offset 64"), trellis::file_error);
  }
  SUBCASE("a header that lies about sizes") {
    write_bytes(path, raw_file(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})", 24));
    CHECK_THROWS_WITH_AS(st::read(path), doctest::Contains("its dtype and shape need 24"), trellis::file_error);
  }
  SUBCASE("a header length past the end") {
    std::string bytes(8, '\0');
    bytes[0] = char(100);
    write_bytes(path, bytes + "{}");
    CHECK_THROWS_WITH_AS(st::read(path), doctest::Contains("runs past the end of the file"), trellis::file_error);
  }
  SUBCASE("an unknown dtype") {
    write_bytes(path, raw_file(R"({"w":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", 2));
    CHECK_THROWS_WITH_AS(st::read(path), doctest::Contains("tensor 'w' has unknown dtype \"F8_E4M3\""),
                         trellis::file_error);
  }
  SUBCASE("a header that is not JSON") {
    write_bytes(path, raw_file("{not json", 0));
    CHECK_THROWS_WITH_AS(st::read(path), doctest::Contains("is not valid JSON"), trellis::file_error);
  }
  SUBCASE("overlapping tensors") {
    write_bytes(path, raw_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})", 6));
    CHECK_THROWS_WITH_AS(st::read(path), doctest::Contains("overlap"), trellis::file_error);
  }
}

// The rules of the format's own reader, one by one; each of these files is read by a
// reader that lacks the rule.
TEST_CASE("the safetensors reader is as strict as the format's own") {
  auto const path = temp_path("strict.safetensors");
  auto const a4 = std::string(R"("a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]})");
  auto rejects = [&](std::string const& bytes, std::string const& message) {
    write_bytes(path, bytes);
    CHECK_THROWS_WITH_AS(st::read(path), doctest::Contains(message.c_str()), trellis::file_error);
  };
  SUBCASE("a well-formed file is read") {
    write_bytes(path, raw_file("{" + a4 + R"(,"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8));
    CHECK(st::read(path).tensors.size() == 2);
  }
  SUBCASE("a header over 100,000,000 bytes, checked before it is read or allocated") {
    std::string bytes(8, '\0');
    std::uint64_t const n = 100'000'001;
    for (int i = 0; i < 8; ++i) bytes[std::size_t(i)] = char((n >> (8 * i)) & 0xff);
    rejects(bytes + "{}", "header length 100000001 at offset 0 is over the format's limit of 100000000 bytes");
    // A length near 2^64 neither wraps the bound nor allocates.
    rejects(std::string(8, '\xff') + "{}", "is over the format's limit");
  }
  SUBCASE("a gap between tensors") {
    rejects(raw_file("{" + a4 + R"(,"b":{"dtype":"U8","shape":[2],"data_offsets":[6,8]}})", 8),
            "a gap of 2 bytes before tensor 'b' at data offset 4");
  }
  SUBCASE("a first tensor that does not start at 0") {
    rejects(raw_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})", 6), "a gap of 2 bytes before tensor 'a'");
  }
  SUBCASE("bytes after the last tensor") {
    rejects(raw_file("{" + a4 + "}", 7), "3 bytes after the last tensor, from file offset");
    rejects(raw_file("{}", 1), "1 bytes after the last tensor");
  }
  SUBCASE("missing bytes") {
    rejects(raw_file("{" + a4 + "}", 3), "ends at data offset 4");
  }
  SUBCASE("element counts and byte sizes that wrap 64 bits") {
    // 2^32 x 2^32 elements wrap to 0, which would match the empty span [0, 0).
    rejects(raw_file(R"({"a":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", 0),
            "tensor 'a''s element count (shape [4294967296,4294967296]) overflows 64 bits");
    // 2^62 F32 elements: 2^64 bytes wrap to 0.
    rejects(raw_file(R"({"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})", 0),
            "tensor 'a''s byte size (shape [4611686018427387904]) overflows 64 bits");
  }
  SUBCASE("a key twice") {
    rejects(raw_file("{" + a4 + "," + a4 + "}", 4), "header holds the key 'a' twice");
    rejects(raw_file(R"({"__metadata__":{"k":"1","k":"2"}})", 0), "header holds the key 'k' twice");
    rejects(raw_file(R"({"a":{"dtype":"U8","dtype":"F32","shape":[4],"data_offsets":[0,4]}})", 4),
            "header holds the key 'dtype' twice");
  }
  SUBCASE("invalid UTF-8") {
    rejects(raw_file("{\"a\xff\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4),
            "is not valid JSON");
    rejects(raw_file(R"({"__metadata__":{"k":")" + std::string("\xc3\x28") + R"("}})", 0), "is not valid JSON");
  }
  SUBCASE("wrong JSON types") {
    rejects(raw_file("[]", 0), "header is not a JSON object");
    rejects(raw_file(R"({"__metadata__":[]})", 0), "__metadata__ is not an object");
    rejects(raw_file(R"({"__metadata__":{"k":1}})", 0), "metadata 'k' is not a string");
    rejects(raw_file(R"({"a":[]})", 0), "tensor 'a' lacks dtype, shape or data_offsets");
    rejects(raw_file(R"({"a":{"dtype":8,"shape":[4],"data_offsets":[0,4]}})", 4), "tensor 'a' has unknown dtype 8");
    rejects(raw_file(R"({"a":{"dtype":"U8","shape":"4","data_offsets":[0,4]}})", 4), "has a shape that is not a list");
    rejects(raw_file(R"({"a":{"dtype":"U8","shape":[4.0],"data_offsets":[0,4]}})", 4), "has a bad shape [4.0]");
    rejects(raw_file(R"({"a":{"dtype":"U8","shape":[-4],"data_offsets":[0,4]}})", 4), "has a bad shape [-4]");
    rejects(raw_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,"4"]}})", 4), "has bad data_offsets");
    rejects(raw_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4,8]}})", 4), "has bad data_offsets");
    rejects(raw_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[-1,3]}})", 4), "has bad data_offsets");
  }
  SUBCASE("dtypes outside the list") {
    for (char const* dtype : {"F8_E5M2", "I16", "U32", "BOOL", "f32", ""})
      rejects(raw_file(std::string(R"({"a":{"dtype":")") + dtype + R"(","shape":[1],"data_offsets":[0,1]}})", 1),
              "has unknown dtype");
  }
}

TEST_CASE("writing is atomic: a failed write leaves the old file") {
  auto const path = temp_path("keep.safetensors");
  st::File f;
  f.tensors["w"] = st::Tensor::from_double(st::DType::F64, {2}, {1, 2});
  st::write(path, f);
  auto const before = read_bytes(path);
  st::File bad;
  bad.tensors["w"] = f.tensors["w"];
  bad.tensors["w"].data.pop_back();  // inconsistent: refused before anything is written
  CHECK_THROWS_AS(st::write(path, bad), trellis::invalid_argument);
  CHECK(read_bytes(path) == before);
  CHECK_THROWS_WITH_AS(st::write(temp_path("no/such/dir/x.safetensors"), f), doctest::Contains("cannot open for writing"),
                       trellis::file_error);
}

TEST_CASE("PyTorch RNN state_dicts map to the trellis gate order") {
  auto w = trellis::RecurrentWeights::random(trellis::RecurrentCell::lstm, 3, 2, 2, 11);
  // PyTorch order i, f, g, o from the trellis order i, o, g, f.
  auto to_pytorch = [](Eigen::MatrixXd const& m, int d) {
    Eigen::MatrixXd out(m.rows(), m.cols());
    int const from[4] = {0, 3, 2, 1};
    for (int b = 0; b < 4; ++b) out.middleRows(b * d, d) = m.middleRows(from[b] * d, d);
    return out;
  };
  auto tensor = [](Eigen::MatrixXd const& m) {
    std::vector<double> v;
    for (Eigen::Index i = 0; i < m.rows(); ++i)
      for (Eigen::Index j = 0; j < m.cols(); ++j) v.push_back(m(i, j));
    return st::Tensor::from_double(st::DType::F64, {m.rows(), m.cols()}, v);
  };
  st::File f;
  for (int k = 0; k < 2; ++k) {
    f.tensors["weight_ih_l" + std::to_string(k)] = tensor(to_pytorch(w.input_weights[k], 2));
    f.tensors["weight_hh_l" + std::to_string(k)] = tensor(to_pytorch(w.recurrent_weights[k], 2));
    f.tensors["bias_ih_l" + std::to_string(k)] = st::Tensor::from_double(st::DType::F32, {8}, std::vector<double>(8, 0));
  }
  auto back = trellis::recurrent_from_pytorch(f, trellis::RecurrentCell::lstm, "sd.safetensors");
  REQUIRE(back.layers() == 2);
  CHECK(back.input_size == 3);
  CHECK(back.hidden_size == 2);
  for (int k = 0; k < 2; ++k) {
    CHECK(back.input_weights[k] == w.input_weights[k]);
    CHECK(back.recurrent_weights[k] == w.recurrent_weights[k]);
  }
  SUBCASE("a nonzero bias") {
    f.tensors["bias_hh_l1"] = st::Tensor::from_double(st::DType::F32, {8}, {0, 0, 0, 0.5, 0, 0, 0, 0});
    CHECK_THROWS_WITH_AS(trellis::recurrent_from_pytorch(f, trellis::RecurrentCell::lstm, "sd.safetensors"),
                         doctest::Contains("sd.safetensors: tensor 'bias_hh_l1' is a nonzero bias"), trellis::file_error);
  }
  SUBCASE("an unknown tensor") {
    f.tensors["decoder.weight"] = st::Tensor::from_double(st::DType::F32, {1}, {0});
    CHECK_THROWS_WITH_AS(trellis::recurrent_from_pytorch(f, trellis::RecurrentCell::lstm, "sd.safetensors"),
                         doctest::Contains("'decoder.weight' is not part of"), trellis::file_error);
  }
  SUBCASE("the wrong cell for the shapes") {
    CHECK_THROWS_WITH_AS(trellis::recurrent_from_pytorch(f, trellis::RecurrentCell::rnn_tanh, "sd.safetensors"),
                         doctest::Contains("weight_hh_l0' has shape (8, 2)"), trellis::file_error);
  }
}
