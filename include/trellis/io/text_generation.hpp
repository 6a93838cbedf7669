#pragma once
// Text from a language-model checkpoint of `trellis train` (charlm or wordlm): its
// vocabulary (metadata "vocabulary"), the prompt encoded over it, one prefill over the
// prompt, then one exact streaming step per generated token (LanguageModelStream), each
// drawn by a seeded TokenSampler, and the tokens turned back into text: bytes for
// characters, words joined by spaces for words ("<eos>" is a line break).
#include <Kokkos_Core.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <trellis/core/weight_tying.hpp>
#include <trellis/data/text_corpus.hpp>
#include <trellis/errors.hpp>
#include <trellis/io/model_files.hpp>
#include <trellis/io/safetensors.hpp>
#include <trellis/nn/language_model.hpp>
#include <trellis/nn/language_model_stream.hpp>
#include <trellis/nn/sampling.hpp>

namespace trellis {

struct GenerationOptions {
  std::string prompt;        ///< empty: start from the zero state at a document boundary
  long tokens = 0;           ///< tokens to generate per stream, >= 1
  SamplingOptions sampling;
  std::uint64_t seed = 1;
  long streams = 1;          ///< independent continuations of the same prompt
};

struct GeneratedText {
  std::vector<std::string> continuations;  ///< one per stream
  long prompt_tokens = 0;
  long unknown = 0;          ///< prompt tokens outside the vocabulary (read as the unknown token)
  std::string level;         ///< "characters" or "words"
  double seconds = 0;        ///< prefill and generation
};

/// The vocabulary and token level of a language-model checkpoint of `trellis train`:
/// metadata "vocabulary" is a JSON list of tokens, each the list of its bytes.
inline data::Corpus read_vocabulary(safetensors::File const& f, std::string const& path) {
  auto const task = f.metadata.count("task") ? f.metadata.at("task") : std::string();
  if (task != "charlm" && task != "wordlm")
    throw file_error(path + ": " + (task.empty() ? std::string("not a checkpoint of trellis train (no 'task' in its metadata)")
                                                 : "a " + task + " checkpoint, not a language model (charlm or wordlm)"));
  auto const it = f.metadata.find("vocabulary");
  if (it == f.metadata.end()) throw file_error(path + ": a " + task + " checkpoint without 'vocabulary' metadata");
  data::Corpus c;
  c.level = task == "wordlm" ? data::TokenLevel::words : data::TokenLevel::characters;
  auto bad = [&](std::string const& why) { throw file_error(path + ": metadata 'vocabulary' " + why); };
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(it->second);
  } catch (nlohmann::json::exception const& e) {
    bad(std::string("is not JSON: ") + e.what());
  }
  if (!j.is_array()) bad("is not a list of tokens");
  for (auto const& token : j) {
    if (!token.is_array()) bad("holds an entry that is not a list of bytes (entry " + std::to_string(c.vocabulary.size()) + ")");
    std::string bytes;
    for (auto const& b : token) {
      if (!b.is_number_integer() || b.get<long>() < 0 || b.get<long>() > 255)
        bad("entry " + std::to_string(c.vocabulary.size()) + " holds " + b.dump() + ", not a byte");
      bytes.push_back(static_cast<char>(b.get<int>()));
    }
    if (bytes == data::detail::unk_token) c.unknown = std::int32_t(c.vocabulary.size());
    c.vocabulary.push_back(bytes);
  }
  if (c.unknown < 0) bad("has no \"<unk>\" token");
  if (f.metadata.count("ntoken") && f.metadata.at("ntoken") != std::to_string(c.vocabulary.size()))
    bad("has " + std::to_string(c.vocabulary.size()) + " tokens, the model " + f.metadata.at("ntoken"));
  return c;
}

/// Tokens back to text: bytes for characters; words separated by spaces, "<eos>" a line break.
inline std::string detokenize(data::Corpus const& c, std::vector<std::int32_t> const& tokens, bool line_start = false) {
  std::string text;
  for (auto t : tokens) {
    auto const& token = c.vocabulary.at(std::size_t(t));
    if (c.level == data::TokenLevel::characters) {
      text += token;
    } else if (token == data::detail::eos_token) {
      text += '\n';
      line_start = true;
    } else {
      if (!line_start) text += ' ';
      text += token;
      line_start = false;
    }
  }
  return text;
}

/// Continues o.prompt with the checkpoint's language model on `space`, in Scalar.
template <class Exec, class Scalar>
GeneratedText generate_text(Exec const& space, safetensors::File const& file, std::string const& path,
                            GenerationOptions const& o, blas::MathMode math = blas::MathMode::strict) {
  char const* call = "trellis::generate_text";
  if (o.tokens < 1) detail::fail(call, ": tokens is ", o.tokens, "; ask for at least 1 token");
  if (o.streams < 1) detail::fail(call, ": streams is ", o.streams, "; use at least 1");
  o.sampling.validate(call);
  auto const corpus = read_vocabulary(file, path);
  GeneratedText result;
  result.level = corpus.level == data::TokenLevel::words ? "words" : "characters";
  // Without a prompt the model starts from the zero state at what ends every document
  // in training ("\n", "<eos>"), so that it begins one.
  std::vector<std::int32_t> prompt;
  if (o.prompt.empty()) {
    prompt = data::encode(corpus, "\n");
  } else {
    prompt = data::encode(corpus, o.prompt);
    result.prompt_tokens = long(prompt.size());
    for (auto t : prompt) result.unknown += t == corpus.unknown;
  }
  auto const tying = file.metadata.find("weight_tying");
  bool const untied = tying != file.metadata.end() && tying->second == Untied::name;
  std::vector<std::vector<std::int32_t>> drawn;
  with_weight_tying(untied, [&](auto t) {
    using Model = LanguageModel<Exec, Scalar, decltype(t)>;
    Model lm(space, read_language_model_config(file, path));
    lm.core().set_math_mode(math);
    read_language_model(file, path, lm, {"optim.", "progress", "rng", "step", "trainer.", "state."});
    auto const start = std::chrono::steady_clock::now();
    long const N = o.streams, T = long(prompt.size()), V = lm.config().ntoken;
    LanguageModelStream<Model> stream(space, lm, N);  // checks the streams' size before allocating
    drawn.assign(std::size_t(N), {});
    Kokkos::View<std::int32_t**, Kokkos::LayoutRight, typename Model::memory_space> tokens("trellis::generate_text::prompt", T, N);
    auto host_tokens = Kokkos::create_mirror_view(tokens);
    for (long i = 0; i < T; ++i)
      for (long n = 0; n < N; ++n) host_tokens(i, n) = prompt[std::size_t(i)];
    Kokkos::deep_copy(space, tokens, host_tokens);
    auto log_probs = stream.prefill(space, tokens);
    auto host_lp = Kokkos::create_mirror_view(log_probs);
    Kokkos::View<std::int32_t*, Kokkos::LayoutRight, typename Model::memory_space> next("trellis::generate_text::next", N);
    auto host_next = Kokkos::create_mirror_view(next);
    TokenSampler sampler(o.sampling, o.seed);
    for (long k = 0; k < o.tokens; ++k) {
      Kokkos::deep_copy(space, host_lp, log_probs);
      space.fence();
      for (long n = 0; n < N; ++n) {
        host_next(n) = sampler(&host_lp(n, 0), V);
        drawn[std::size_t(n)].push_back(host_next(n));
      }
      if (k + 1 == o.tokens) break;
      Kokkos::deep_copy(space, next, host_next);
      log_probs = stream.step(space, next);
    }
    space.fence();
    result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  });
  bool const at_line_start = o.prompt.empty() || o.prompt.back() == '\n';
  for (auto const& d : drawn) result.continuations.push_back(detokenize(corpus, d, at_line_start));
  return result;
}

}  // namespace trellis
