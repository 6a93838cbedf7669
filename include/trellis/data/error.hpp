#pragma once
// Errors of the data loaders: the message starts with the file (or the call) and says
// what was wrong there, e.g. "data/t10k-images-idx3-ubyte.gz: truncated: ...".
#include <sstream>
#include <stdexcept>
#include <string>

namespace trellis::data {

/// A data file or folder that is missing, unreadable or malformed.
class data_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Throws a data_error whose message is the parts streamed one after another.
template <class... Parts>
[[noreturn]] void fail_data(Parts const&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  throw data_error(out.str());
}

}  // namespace trellis::data
