#pragma once
// The library's host-side errors, one hierarchy in one header. Every message starts
// with where the fault is (the call, the file, the flag) and says what was wrong there:
//   invalid_argument  bad arguments: shapes, sizes, configuration, flags
//   file_error        a file that cannot be read or written, or is malformed
//   data_error        a data set's file or folder (a file_error: catch either)
//   backend_error     a backend library (cuBLAS, oneDNN) reported a failure
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

/// Thrown when a backend library (cuBLAS, oneDNN) reports a failure.
class backend_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A file that cannot be read or written, or whose contents are malformed; the
/// message names the file and, where it can, the tensor and the offset.
class file_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A data set's file or folder that is missing, unreadable or malformed.
class data_error : public file_error {
 public:
  using file_error::file_error;
};

/// "(4, 3, 8)": a View's extents, as error messages write shapes.
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

/// Throws the file_error of a tensor whose shape is not the expected one:
/// "<path>: tensor '<name>' has shape (a, b), expected <expected>".
[[noreturn]] inline void fail_tensor_shape(std::string const& path, std::string const& name,
                                           std::vector<long> const& have, std::string const& expected) {
  throw file_error(path + ": tensor '" + name + "' has shape " + shape_of(have) + ", expected " + expected);
}

[[noreturn]] inline void fail_tensor_shape(std::string const& path, std::string const& name,
                                           std::vector<long> const& have, std::vector<long> const& expected) {
  fail_tensor_shape(path, name, have, shape_of(expected));
}

namespace detail {

using trellis::shape_of;

/// The parts streamed one after another.
template <class... Parts>
std::string message(Parts const&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

template <class... Parts>
[[noreturn]] void fail(Parts const&... parts) {
  throw trellis::invalid_argument(message(parts...));
}

template <class... Parts>
[[noreturn]] void fail_file(Parts const&... parts) {
  throw trellis::file_error(message(parts...));
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

namespace data {
using trellis::data_error;

/// Throws a data_error whose message is the parts streamed one after another.
template <class... Parts>
[[noreturn]] void fail_data(Parts const&... parts) {
  throw data_error(detail::message(parts...));
}
}  // namespace data
}  // namespace trellis
