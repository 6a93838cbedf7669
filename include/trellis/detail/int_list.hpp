#pragma once
// A JSON list of ints ("[1, 2, 4]") from text that comes from outside (a flag, a file's
// metadata): every element an integer that fits an int, or no list at all. The JSON
// library's own conversion would cast 1e20 or 2.5 to int, which is undefined or wrong.
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace trellis::detail {

inline std::optional<std::vector<int>> parse_int_list(std::string const& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (nlohmann::json::exception const&) {
    return std::nullopt;
  }
  if (!j.is_array()) return std::nullopt;
  std::vector<int> out;
  for (auto const& e : j) {
    if (e.is_number_unsigned()) {
      if (e.get<std::uint64_t>() > std::uint64_t(std::numeric_limits<int>::max())) return std::nullopt;
    } else if (e.is_number_integer()) {
      auto const v = e.get<std::int64_t>();
      if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max()) return std::nullopt;
    } else {
      return std::nullopt;
    }
    out.push_back(int(e.get<std::int64_t>()));
  }
  return out;
}

}  // namespace trellis::detail
