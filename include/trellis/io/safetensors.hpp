#pragma once
// The safetensors format: an 8-byte little-endian header length, a JSON header
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}, then
// the raw little-endian data. Reading checks every size and offset, so a truncated or
// malformed file is an error that names the file, the tensor and the offset; writing
// goes to a temporary file that is renamed over the target, so nothing already
// written is lost.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <set>
#include <string>
#include <system_error>
#include <vector>

#include <trellis/errors.hpp>

namespace trellis {

namespace safetensors {

enum class DType { F64, F32, F16, BF16, I64, I32, U8 };

/// The dtype that holds a Scalar exactly (F64 for double, F32 for float).
template <class Scalar>
constexpr DType dtype_of() {
  return sizeof(Scalar) == 8 ? DType::F64 : DType::F32;
}

inline std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::F64: case DType::I64: return 8;
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: return 2;
    case DType::U8: return 1;
  }
  return 0;
}

inline char const* dtype_name(DType t) {
  switch (t) {
    case DType::F64: return "F64";
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::U8: return "U8";
  }
  return "?";
}

inline bool parse_dtype(std::string const& name, DType& out) {
  static std::map<std::string, DType> const names{{"F64", DType::F64}, {"F32", DType::F32},
                                                  {"F16", DType::F16}, {"BF16", DType::BF16},
                                                  {"I64", DType::I64}, {"I32", DType::I32},
                                                  {"U8", DType::U8}};
  auto it = names.find(name);
  if (it == names.end()) return false;
  out = it->second;
  return true;
}

namespace detail {

inline float half_to_float(std::uint16_t h) {
  std::uint32_t const sign = std::uint32_t(h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: renormalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp - 15 + 127) << 23) | (mant << 13);
  }
  return std::bit_cast<float>(bits);
}

inline std::uint16_t float_to_half(float f) {  // round to nearest even
  auto const bits = std::bit_cast<std::uint32_t>(f);
  std::uint32_t const sign = (bits >> 16) & 0x8000u;
  std::uint32_t const abs = bits & 0x7fffffffu;
  if (abs >= 0x7f800000u) return std::uint16_t(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0));
  if (abs >= 0x477ff000u) return std::uint16_t(sign | 0x7c00u);  // overflow to infinity
  if (abs < 0x38800000u) {  // subnormal or zero in half
    if (abs < 0x33000000u) return std::uint16_t(sign);
    std::uint32_t const e = abs >> 23, m = (abs & 0x7fffffu) | 0x800000u;
    std::uint32_t const shift = 126 - e;  // 14 + (113 - e) - 1
    std::uint32_t h = m >> shift;
    std::uint32_t const rest = m & ((1u << shift) - 1), halfway = 1u << (shift - 1);
    if (rest > halfway || (rest == halfway && (h & 1u))) ++h;
    return std::uint16_t(sign | h);
  }
  std::uint32_t h = ((abs - 0x38000000u) >> 13);
  std::uint32_t const rest = abs & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
  return std::uint16_t(sign | h);
}

inline float bf16_to_float(std::uint16_t b) { return std::bit_cast<float>(std::uint32_t(b) << 16); }

inline std::uint16_t float_to_bf16(float f) {  // round to nearest even
  auto const bits = std::bit_cast<std::uint32_t>(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return std::uint16_t((bits >> 16) | 0x40u);  // NaN
  std::uint32_t const lsb = (bits >> 16) & 1u;
  return std::uint16_t((bits + 0x7fffu + lsb) >> 16);
}

template <class T>
T load(unsigned char const* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

template <class T>
void store(unsigned char* p, T v) {
  std::memcpy(p, &v, sizeof(T));
}

}  // namespace detail

/// One tensor: dtype, shape and its bytes (little-endian, row-major).
struct Tensor {
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  std::vector<unsigned char> data;

  std::size_t numel() const {
    std::size_t n = 1;
    for (auto e : shape) n *= std::size_t(e);
    return n;
  }

  /// The values as doubles, whatever the dtype.
  std::vector<double> to_double() const {
    std::size_t const n = numel(), w = dtype_size(dtype);
    std::vector<double> out(n);
    for (std::size_t i = 0; i < n; ++i) {
      unsigned char const* p = data.data() + i * w;
      switch (dtype) {
        case DType::F64: out[i] = detail::load<double>(p); break;
        case DType::F32: out[i] = detail::load<float>(p); break;
        case DType::F16: out[i] = detail::half_to_float(detail::load<std::uint16_t>(p)); break;
        case DType::BF16: out[i] = detail::bf16_to_float(detail::load<std::uint16_t>(p)); break;
        case DType::I64: out[i] = double(detail::load<std::int64_t>(p)); break;
        case DType::I32: out[i] = detail::load<std::int32_t>(p); break;
        case DType::U8: out[i] = *p; break;
      }
    }
    return out;
  }

  /// A tensor of `dtype` holding `values` (rounded or truncated to the dtype).
  static Tensor from_double(DType dtype, std::vector<std::int64_t> shape,
                            std::vector<double> const& values) {
    Tensor t;
    t.dtype = dtype;
    t.shape = std::move(shape);
    if (t.numel() != values.size())
      trellis::detail::fail("trellis::safetensors::Tensor::from_double: shape ",
                            trellis::detail::shape_of(std::vector<long>(t.shape.begin(), t.shape.end())),
                            " holds ", t.numel(), " values, given ", values.size());
    std::size_t const w = dtype_size(dtype);
    t.data.resize(values.size() * w);
    for (std::size_t i = 0; i < values.size(); ++i) {
      unsigned char* p = t.data.data() + i * w;
      double const v = values[i];
      switch (dtype) {
        case DType::F64: detail::store<double>(p, v); break;
        case DType::F32: detail::store<float>(p, float(v)); break;
        case DType::F16: detail::store<std::uint16_t>(p, detail::float_to_half(float(v))); break;
        case DType::BF16: detail::store<std::uint16_t>(p, detail::float_to_bf16(float(v))); break;
        case DType::I64: detail::store<std::int64_t>(p, std::int64_t(v)); break;
        case DType::I32: detail::store<std::int32_t>(p, std::int32_t(v)); break;
        case DType::U8: *p = static_cast<unsigned char>(v); break;
      }
    }
    return t;
  }
};

/// A whole file: named tensors and string metadata.
struct File {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> metadata;

  Tensor const& at(std::string const& path, std::string const& name) const {
    auto it = tensors.find(name);
    if (it == tensors.end()) throw file_error(path + ": no tensor '" + name + "'");
    return it->second;
  }
  bool has(std::string const& name) const { return tensors.count(name) > 0; }
};

/// The longest header read: the format's own reader's limit.
inline constexpr std::uint64_t max_header_bytes = 100'000'000;

namespace detail {
[[noreturn]] inline void bad_file(std::string const& path, std::string const& what) {
  throw file_error(path + ": " + what);
}

/// a b, or an error naming `what` when the product does not fit 64 bits.
inline std::uint64_t checked_product(std::uint64_t a, std::uint64_t b, std::string const& path,
                                     std::string const& what) {
  if (b != 0 && a > ~std::uint64_t(0) / b) bad_file(path, what + " overflows 64 bits");
  return a * b;
}

/// The header as JSON; a key twice in one object is an error (the JSON parser would
/// keep the last silently, and two readers could then see two different files).
inline nlohmann::json parse_header(std::string const& header, std::string const& path) {
  std::vector<std::set<std::string>> keys;
  std::string duplicate;
  auto const on_event = [&](int, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (event == E::object_start) keys.emplace_back();
    if (event == E::object_end && !keys.empty()) keys.pop_back();
    if (event == E::key && !keys.empty() && !keys.back().insert(parsed.get<std::string>()).second &&
        duplicate.empty())
      duplicate = parsed.get<std::string>();
    return true;
  };
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header, on_event);
  } catch (nlohmann::json::exception const& e) {
    bad_file(path, std::string("header (bytes 8 to ") + std::to_string(8 + header.size()) +
                       ") is not valid JSON: " + e.what());
  }
  if (!duplicate.empty()) bad_file(path, "header holds the key '" + duplicate + "' twice");
  return j;
}
}  // namespace detail

/// Reads a safetensors file; throws file_error naming the file, tensor and offset.
inline File read(std::string const& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) detail::bad_file(path, "cannot open for reading");
  in.seekg(0, std::ios::end);
  std::uint64_t const size = std::uint64_t(in.tellg());
  in.seekg(0);
  if (size < 8) detail::bad_file(path, "is " + std::to_string(size) + " bytes, shorter than the 8-byte header length");
  unsigned char len_bytes[8];
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  std::uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  if (header_len > max_header_bytes)
    detail::bad_file(path, "header length " + std::to_string(header_len) + " at offset 0 is over the format's limit of " +
                               std::to_string(max_header_bytes) + " bytes");
  if (header_len > size - 8)
    detail::bad_file(path, "header length " + std::to_string(header_len) + " at offset 0 runs past the end of the file (" +
                               std::to_string(size) + " bytes)");
  std::string header(header_len, '\0');
  in.read(header.data(), std::streamsize(header_len));
  if (!in) detail::bad_file(path, "reading the header (bytes 8 to " + std::to_string(8 + header_len) + ") failed");
  nlohmann::json const j = detail::parse_header(header, path);
  if (!j.is_object()) detail::bad_file(path, "header is not a JSON object");
  std::uint64_t const data_begin = 8 + header_len, data_size = size - data_begin;
  File file;
  struct Span {
    std::uint64_t begin, end;
    std::string name;
    bool operator<(Span const& o) const { return begin != o.begin ? begin < o.begin : end < o.end; }
  };
  std::vector<Span> spans;
  for (auto const& [name, entry] : j.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) detail::bad_file(path, "__metadata__ is not an object");
      for (auto const& [k, v] : entry.items()) {
        if (!v.is_string()) detail::bad_file(path, "metadata '" + k + "' is not a string");
        file.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    std::string const where = "tensor '" + name + "'";
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets"))
      detail::bad_file(path, where + " lacks dtype, shape or data_offsets");
    Tensor t;
    if (!entry["dtype"].is_string() || !parse_dtype(entry["dtype"].get<std::string>(), t.dtype))
      detail::bad_file(path, where + " has unknown dtype " + entry["dtype"].dump() +
                                 " (known: F64, F32, F16, BF16, I64, I32, U8)");
    if (!entry["shape"].is_array()) detail::bad_file(path, where + " has a shape that is not a list");
    std::uint64_t numel = 1;
    for (auto const& e : entry["shape"]) {
      if (!e.is_number_integer() || e.get<std::int64_t>() < 0)
        detail::bad_file(path, where + " has a bad shape " + entry["shape"].dump());
      t.shape.push_back(e.get<std::int64_t>());
      numel = detail::checked_product(numel, std::uint64_t(t.shape.back()), path,
                                      where + "'s element count (shape " + entry["shape"].dump() + ")");
    }
    auto const& off = entry["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      detail::bad_file(path, where + " has bad data_offsets " + off.dump());
    std::uint64_t const b = off[0].get<std::uint64_t>(), e = off[1].get<std::uint64_t>();
    std::uint64_t const expected =
        detail::checked_product(numel, dtype_size(t.dtype), path, where + "'s byte size (shape " + entry["shape"].dump() + ")");
    if (e < b || e - b != expected)
      detail::bad_file(path, where + " spans bytes [" + std::to_string(b) + ", " + std::to_string(e) +
                                 ") of the data but its dtype and shape need " + std::to_string(expected));
    if (e > data_size)
      detail::bad_file(path, where + " ends at data offset " + std::to_string(e) + " (file offset " +
                                 std::to_string(data_begin + e) + ") but the file has only " +
                                 std::to_string(data_size) + " data bytes: truncated?");
    t.data.resize(expected);
    in.seekg(std::streamoff(data_begin + b));
    in.read(reinterpret_cast<char*>(t.data.data()), std::streamsize(expected));
    if (!in) detail::bad_file(path, "reading " + where + " at file offset " + std::to_string(data_begin + b) + " failed");
    spans.push_back({b, e, name});
    file.tensors.emplace(name, std::move(t));
  }
  // As the format's own reader: in offset order each tensor starts where the one before
  // it ended, and the last ends at the end of the file.
  std::sort(spans.begin(), spans.end());
  std::uint64_t at = 0;
  for (auto const& span : spans) {
    if (span.begin < at)
      detail::bad_file(path, "tensors overlap at data offset " + std::to_string(span.begin) + " (tensor '" + span.name + "')");
    if (span.begin > at)
      detail::bad_file(path, "a gap of " + std::to_string(span.begin - at) + " bytes before tensor '" + span.name +
                                 "' at data offset " + std::to_string(at) + " (file offset " + std::to_string(data_begin + at) + ")");
    at = span.end;
  }
  if (at != data_size)
    detail::bad_file(path, std::to_string(data_size - at) + " bytes after the last tensor, from file offset " +
                               std::to_string(data_begin + at) + ": the data must end where the file ends");
  return file;
}

/// Writes a safetensors file atomically: a temporary file beside it, then a rename.
inline void write(std::string const& path, File const& file) {
  nlohmann::json j = nlohmann::json::object();
  if (!file.metadata.empty()) j["__metadata__"] = file.metadata;
  std::uint64_t offset = 0;
  for (auto const& [name, t] : file.tensors) {
    if (t.data.size() != t.numel() * dtype_size(t.dtype))
      trellis::detail::fail("trellis::safetensors::write: tensor '", name, "' holds ", t.data.size(),
                            " bytes, its dtype and shape need ", t.numel() * dtype_size(t.dtype));
    j[name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.data.size()}}};
    offset += t.data.size();
  }
  std::string header = j.dump();
  while ((8 + header.size()) % 8 != 0) header.push_back(' ');  // align the data
  std::string const tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw file_error(tmp + ": cannot open for writing");
    unsigned char len[8];
    std::uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
    out.write(reinterpret_cast<char const*>(len), 8);
    out.write(header.data(), std::streamsize(header.size()));
    for (auto const& [name, t] : file.tensors)
      out.write(reinterpret_cast<char const*>(t.data.data()), std::streamsize(t.data.size()));
    out.flush();
    if (!out) {
      std::error_code ec;
      std::filesystem::remove(tmp, ec);
      throw file_error(tmp + ": writing failed");
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    throw file_error(path + ": cannot rename the temporary file into place");
  }
}

}  // namespace safetensors

/// A tensor's shape as error messages and shape checks take it.
inline std::vector<long> tensor_shape(safetensors::Tensor const& t) { return {t.shape.begin(), t.shape.end()}; }
}  // namespace trellis
