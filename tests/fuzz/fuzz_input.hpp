#pragma once
// What every fuzz target shares: the input as a file (the readers take paths), and the
// rule that a reader either succeeds or throws one of the library's own errors. Any
// other exception escapes to libFuzzer, which reports it as a finding, as it does
// crashes, leaks and undefined behaviour.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include <trellis/errors.hpp>

namespace trellis::fuzz {

/// A scratch path of this process (tmpfs when there is one).
inline std::string scratch(std::string const& name) {
  static std::string const dir = [] {
    std::filesystem::path base = std::filesystem::exists("/dev/shm") ? "/dev/shm" : std::filesystem::temp_directory_path();
    auto d = base / ("trellis-fuzz-" + std::to_string(getpid()));
    std::filesystem::create_directories(d);
    return d.string();
  }();
  return dir + "/" + name;
}

inline std::string write_file(std::string const& name, std::uint8_t const* data, std::size_t size) {
  auto const path = scratch(name);
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(reinterpret_cast<char const*>(data), std::streamsize(size));
  return path;
}

/// f(), with the library's errors (the clear answers to bad input) taken as success.
template <class F>
void expect_clear_errors(F&& f) {
  try {
    f();
  } catch (trellis::file_error const&) {
  } catch (trellis::invalid_argument const&) {
  }
}

}  // namespace trellis::fuzz
