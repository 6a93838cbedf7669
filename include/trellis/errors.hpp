#pragma once
// Host-side errors: an exception whose message names the call and what was wrong.
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace trellis {

/// Thrown for bad arguments (shapes, sizes, configuration). The message starts with
/// the call, e.g. "trellis::TrellisNetwork::forward: x is (4, 3, 8), expected ...".
class invalid_argument : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// Thrown when a backend library (cuBLAS) reports a failure.
class backend_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {

template <class... Parts>
[[noreturn]] void fail(Parts const&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  throw trellis::invalid_argument(out.str());
}

/// "(4, 3, 8)" for a View's extents.
template <class View>
std::string shape_of(View const& v) {
  std::ostringstream out;
  out << '(';
  for (unsigned r = 0; r < View::rank; ++r) out << (r ? ", " : "") << v.extent(r);
  out << ')';
  return out.str();
}

inline std::string shape_of(std::vector<long> const& extents) {
  std::ostringstream out;
  out << '(';
  for (std::size_t r = 0; r < extents.size(); ++r) out << (r ? ", " : "") << extents[r];
  out << ')';
  return out.str();
}

/// Checks a View's extents against the expected ones; throws naming call and tensor.
template <class View>
void check_shape(char const* call, char const* name, View const& v,
                 std::vector<long> const& expected) {
  bool ok = true;
  for (unsigned r = 0; r < View::rank; ++r)
    ok = ok && static_cast<long>(v.extent(r)) == expected[r];
  if (!ok)
    fail(call, ": ", name, " is ", shape_of(v), ", expected ", shape_of(expected));
}

}  // namespace detail
}  // namespace trellis
