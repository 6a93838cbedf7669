#pragma once
// Small tasks for trainer tests (in-process and data-parallel): a synthetic corpus and
// image set, task options with every regulariser on, and a record of a run's curves.
#include <Kokkos_Core.hpp>
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <trellis/trellis.hpp>

namespace trellis::test {

/// A random token stream over a small vocabulary: enough for a few epochs of tiny batches.
inline trellis::data::Corpus synthetic_corpus(trellis::data::TokenLevel level) {
  trellis::data::Corpus c;
  c.level = level;
  for (char ch = 'a'; ch < 'a' + 9; ++ch) c.vocabulary.push_back(std::string(1, ch));
  std::mt19937_64 rng{7};
  std::uniform_int_distribution<int> token(0, 8);
  for (auto* split : {&c.train, &c.valid, &c.test})
    for (int i = 0; i < (split == &c.train ? 130 : 60); ++i) split->push_back(token(rng));
  return c;
}

inline trellis::LanguageTaskOptions language_options() {
  trellis::LanguageTaskOptions o;
  o.model.core.ninp = 4;
  o.model.core.nhid = 3;
  o.model.core.nout = 4;
  o.model.core.nlevels = 3;
  o.model.dropout = o.model.dropouti = o.model.dropouth = o.model.wdrop = 0.2;
  o.optimizer_options.lr = 0.01;
  o.clip = 0.5;
  o.batch_size = 4;
  o.seq_len = 8;  // 130 tokens in 4 rows: 32 steps, 4 segments an epoch
  o.eval_batch_size = 2;
  o.seed = 3;
  return o;
}

inline trellis::data::ImageSplits synthetic_images() {
  trellis::data::ImageSplits s;
  std::mt19937_64 rng{11};
  std::uniform_real_distribution<float> pixel(0, 1);
  for (auto* set : {&s.train, &s.valid, &s.test}) {
    set->rows = 3;
    set->cols = 4;
    set->nclasses = 3;
    set->count = set == &s.train ? 12 : 6;
    for (long i = 0; i < set->count * 12; ++i) set->pixels.push_back(pixel(rng));
    for (long i = 0; i < set->count; ++i) set->labels.push_back(std::int32_t(i % 3));
  }
  return s;
}

inline trellis::ClassifierTaskOptions classifier_options(trellis::ImageSequence sequence) {
  trellis::ClassifierTaskOptions o;
  o.model.core.ninp = sequence == trellis::ImageSequence::rows ? 4 : 1;
  o.model.core.nhid = 3;
  o.model.core.nout = 3;
  o.model.core.nlevels = 2;
  o.model.dropouth = o.model.wdrop = 0.2;
  o.sequence = sequence;
  if (sequence == trellis::ImageSequence::pixels) o.permutation = trellis::pixel_permutation(12, 5);
  o.optimizer = trellis::OptimizerKind::sgd;
  o.optimizer_options.lr = 0.05;
  o.optimizer_options.momentum = 0.9;
  o.batch_size = 5;  // 2 batches an epoch
  o.eval_batch_size = 4;
  return o;
}

/// What a run's curves say, step by step (log_every = 1).
struct Record {
  std::vector<double> losses, lrs, valids;
};

inline trellis::TrainerCallbacks recording(Record& r) {
  trellis::TrainerCallbacks cb;
  cb.curve = [&r](trellis::CurveRow const& row) {
    if (!std::isnan(row.train_loss)) {
      r.losses.push_back(row.train_loss);
      r.lrs.push_back(row.lr);
    }
    if (!std::isnan(row.valid)) r.valids.push_back(row.valid);
  };
  return cb;
}

/// A run of `steps` steps with a curve row per step.
inline trellis::TrainerOptions per_step(long steps, trellis::LrSchedule schedule = {}) {
  trellis::TrainerOptions o;
  o.max_steps = steps;
  o.log_every = 1;
  o.schedule = schedule;
  return o;
}

/// The resumption runs': a halving after epoch 1, a configuration to match.
inline trellis::TrainerOptions step_options(long max_steps) {
  auto o = per_step(max_steps, {.kind = trellis::LrSchedule::Kind::steps, .milestones = {1}, .gamma = 0.5});
  o.seed = 17;
  o.configuration = {{"task", "test"}};
  return o;
}

template <class Opt>
std::vector<double> host_values(Opt const& opt) {
  std::vector<double> all;
  for (auto const& p : opt.parameters()) {
    auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), p.value);
    for (std::size_t i = 0; i < h.extent(0); ++i) all.push_back(double(h(i)));
  }
  for (auto const& [name, v] : opt.state()) {
    auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), v);
    for (std::size_t i = 0; i < h.extent(0); ++i) all.push_back(double(h(i)));
  }
  return all;
}

}  // namespace trellis::test
