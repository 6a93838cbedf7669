// Training through the library: a character-level TrellisNet language model trained
// by trellis::Trainer in two sessions, the second resumed from the first one's
// checkpoint, and a straight run of the same length to show that the two agree.
//
//   trellis_training [TEXT_FILE] [--steps N] [--kokkos-num-threads=N]
//
// Without a file it trains on a text of its own. The last line says whether the
// resumed run ended where the straight run did.
#include <Kokkos_Core.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>

#include <unistd.h>

#include <trellis/trellis.hpp>

namespace {

using Exec = Kokkos::DefaultExecutionSpace;
using Task = trellis::LanguageTask<Exec, float>;

std::string builtin_text() {
  std::string text;
  char const* lines[] = {
      "a trellis network is a temporal convolutional network whose weights are shared by every level, ",
      "whose input is injected into every level, and whose activation is gated like an lstm cell. ",
      "each level looks at two positions of the level below: the present one and one a dilation back. ",
      "a truncated recurrent network is a trellis network with a sparse kernel, and the converse holds too. "};
  for (int r = 0; r < 12; ++r)
    for (char const* l : lines) text += l;
  return text;
}

/// Characters as tokens: 80% train, 10% valid, 10% test.
trellis::data::Corpus character_corpus(std::string const& text) {
  trellis::data::Corpus c;
  std::map<char, std::int32_t> ids;
  for (char ch : text) ids.emplace(ch, 0);
  for (auto& [ch, id] : ids) {
    id = std::int32_t(c.vocabulary.size());
    c.vocabulary.push_back(std::string(1, ch));
  }
  std::size_t const n = text.size(), train_end = n * 8 / 10, valid_end = n * 9 / 10;
  for (std::size_t i = 0; i < n; ++i)
    (i < train_end ? c.train : i < valid_end ? c.valid : c.test).push_back(ids.at(text[i]));
  return c;
}

trellis::LanguageTaskOptions task_options() {
  trellis::LanguageTaskOptions o;
  o.model.core.ninp = 32;
  o.model.core.nhid = 64;
  o.model.core.nout = 32;  // the tied decoder reads the embedding width
  o.model.core.nlevels = 6;
  o.model.core.dilation = {1, 2};
  o.model.dropouth = 0.1;
  o.optimizer_options.lr = 0.01;
  o.clip = 0.25;
  o.batch_size = 8;
  o.seq_len = 32;
  o.eval_batch_size = 8;
  return o;
}

trellis::TrainerOptions trainer_options(long max_steps, std::string const& checkpoint) {
  trellis::TrainerOptions o;
  o.max_steps = max_steps;
  o.log_every = 10;
  o.schedule.kind = trellis::LrSchedule::Kind::plateau;
  o.schedule.patience = 1;
  o.checkpoint_path = checkpoint;
  o.configuration = {{"example", "training"}};
  return o;
}

trellis::TrainerCallbacks printing(char const* session) {
  trellis::TrainerCallbacks cb;
  cb.log = [session](std::string const& line) { std::printf("[%s] %s\n", session, line.c_str()); };
  cb.curve = [session](trellis::CurveRow const& row) {
    if (!std::isnan(row.train_loss))
      std::printf("[%s] step %ld  lr %.5f  loss %.4f  train bpc %.3f\n", session, row.step, row.lr, row.train_loss,
                  row.train_metric);
  };
  return cb;
}

}  // namespace

int main(int argc, char** argv) {
  Kokkos::ScopeGuard guard(argc, argv);
  long steps = 60;
  std::string text = builtin_text();
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--steps") == 0 && i + 1 < argc) {
      steps = std::atol(argv[++i]);
    } else if (argv[i][0] != '-') {
      std::ifstream in(argv[i], std::ios::binary);
      if (!in) {
        std::fprintf(stderr, "trellis_training: cannot read %s\n", argv[i]);
        return 1;
      }
      text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
  }
  if (steps < 2) {
    std::fprintf(stderr, "trellis_training: --steps must be at least 2\n");
    return 1;
  }
  try {
    Exec space;
    auto const corpus = character_corpus(text);
    auto const checkpoint =
        (std::filesystem::temp_directory_path() / ("trellis_training_" + std::to_string(::getpid()) + ".safetensors"))
            .string();

    // Session one: the first half, then a checkpoint.
    {
      Task task(space, task_options(), corpus);
      trellis::Trainer<Exec, Task> trainer(space, task, trainer_options(steps / 2, checkpoint), printing("first"));
      trainer.run();
    }
    // Session two: a fresh program state resumes from the checkpoint and goes on.
    double resumed_valid = 0;
    {
      Task task(space, task_options(), corpus);
      trellis::Trainer<Exec, Task> trainer(space, task, trainer_options(steps, checkpoint), printing("resumed"));
      trainer.resume(checkpoint);
      resumed_valid = trainer.run().valid;
      std::printf("test bpc %.4f\n", task.evaluate("test"));
    }
    // The same number of steps without a break.
    Task task(space, task_options(), corpus);
    trellis::Trainer<Exec, Task> trainer(space, task, trainer_options(steps, ""), printing("straight"));
    double const straight_valid = trainer.run().valid;
    std::filesystem::remove(checkpoint);
    std::printf("valid bpc: resumed %.6f, straight %.6f (%s)\n", resumed_valid, straight_valid,
                std::abs(resumed_valid - straight_valid) <= 1e-4 * std::abs(straight_valid) ? "the same" : "DIFFERENT");
    return std::abs(resumed_valid - straight_valid) <= 1e-4 * std::abs(straight_valid) ? 0 : 1;
  } catch (std::exception const& e) {
    std::fprintf(stderr, "trellis_training: %s\n", e.what());
    return 1;
  }
}
