#pragma once
// Files for tests: a fresh folder per use, whole-file reads and writes, and the message
// of the exception a call throws.
#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>

namespace trellis::test {

/// A fresh folder per use, removed afterwards; the pid keeps the threads1 and threads2
/// runs of a binary, which ctest may run at once, apart.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(std::string const& name) {
    static int serial = 0;
    path = std::filesystem::temp_directory_path() / "trellis-tests" /
           (std::to_string(::getpid()) + "-" + std::to_string(serial++) + "-" + name);
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(TempDir const&) = delete;
  TempDir& operator=(TempDir const&) = delete;
  std::string operator/(std::string const& name) const { return (path / name).string(); }
};

inline std::string read_bytes(std::string const& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline void write_bytes(std::string const& path, std::string const& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

/// The message of the E that f throws; a failed check and "" if it throws none.
template <class E, class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (E const& e) {
    return e.what();
  }
  FAIL_CHECK("no exception of the expected type was thrown");
  return "";
}

}  // namespace trellis::test
