// The readers on top of safetensors: a core, a language model, a sequence classifier,
// a PyTorch RNN state dict, a checkpoint's vocabulary; configuration metadata, names,
// shapes and the reference's key sets. Models are built only for small shapes (the
// size checks before allocation are the memory-limit tests' business).
#include <Kokkos_Core.hpp>

#include <trellis/core/recurrent.hpp>
#include <trellis/io/core_file.hpp>
#include <trellis/io/model_files.hpp>
#include <trellis/io/text_generation.hpp>

#include "fuzz_input.hpp"

namespace {

using Exec = Kokkos::DefaultHostExecutionSpace;

bool small(trellis::TrellisShape const& s) {
  return s.q() <= 64 && s.ninp <= 64 && s.nlevels <= 16 && s.max_dilation() <= 64;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  Kokkos::initialize(*argc, *argv);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size) {
  auto const path = trellis::fuzz::write_file("model.safetensors", data, size);
  trellis::safetensors::File file;
  try {
    file = trellis::safetensors::read(path);
  } catch (trellis::file_error const&) {
    return 0;
  }
  Exec space;
  trellis::fuzz::expect_clear_errors([&] { (void)trellis::read_vocabulary(file, path); });
  trellis::fuzz::expect_clear_errors([&] {
    auto const shape = trellis::read_core_shape(file, path);
    if (!small(shape)) return;
    trellis::TrellisNetwork<Exec, float> net(space, shape);
    trellis::read_core_model(file, path, net);
  });
  trellis::fuzz::expect_clear_errors([&] {
    auto const config = trellis::read_language_model_config(file, path);
    if (!small(config.core) || config.ntoken > 4096 || config.n_experts > 8) return;
    trellis::LanguageModel<Exec, float> lm(space, config);
    trellis::read_language_model(file, path, lm);
  });
  trellis::fuzz::expect_clear_errors([&] {
    trellis::SequenceClassifierConfig config;
    config.core = trellis::read_shape_metadata(file.metadata, path);
    config.nclasses = trellis::metadata_int(file.metadata, path, "nclasses");
    if (!small(config.core) || config.nclasses < 1 || config.nclasses > 64) return;
    trellis::SequenceClassifier<Exec, float> m(space, config);
    trellis::read_sequence_classifier(file, path, m);
  });
  for (auto cell : {trellis::RecurrentCell::lstm, trellis::RecurrentCell::rnn_tanh, trellis::RecurrentCell::rnn_relu})
    trellis::fuzz::expect_clear_errors([&] { (void)trellis::recurrent_from_pytorch(file, cell, path); });
  return 0;
}
