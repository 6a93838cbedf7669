// trellis::Trainer in-process: exact resumption (on Serial bit for bit), annealing,
// the plateau and step schedules, the checkpoint's round trip and its explicit names,
// files of the older positional layout, and clear errors for a checkpoint of another
// configuration and for a diverging loss.
#include <Kokkos_Core.hpp>
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include <unistd.h>

#include <trellis/trellis.hpp>

#include "backends.hpp"
#include "files.hpp"
#include "training.hpp"

using trellis::test::Backends;
using namespace trellis::test;

namespace {

namespace fs = std::filesystem;

fs::path scratch(std::string const& name) {
  auto const dir = fs::temp_directory_path() / ("trellis_test_trainer_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir / name;
}

/// Trains `total` steps straight, and `first` steps, a checkpoint, a fresh task and
/// `total - first` more: the second half must repeat the first run's steps (bit for
/// bit on Serial, where every reduction runs in one order).
template <class Exec, class MakeTask>
void check_resumption(MakeTask make_task, long first, long total, std::string const& file) {
  Exec space;
  Record straight, before, after;
  auto a = make_task(space);
  trellis::Trainer<Exec, std::remove_reference_t<decltype(*a)>> ta(space, *a, step_options(total), recording(straight));
  ta.run();

  auto const path = scratch(file).string();
  auto b = make_task(space);
  auto options = step_options(first);
  options.checkpoint_path = path;
  options.checkpoint_dtype = trellis::safetensors::DType::F64;
  trellis::Trainer<Exec, std::remove_reference_t<decltype(*b)>> tb(space, *b, options, recording(before));
  tb.run();

  auto c = make_task(space);
  trellis::Trainer<Exec, std::remove_reference_t<decltype(*c)>> tc(space, *c, step_options(total), recording(after));
  tc.resume(path);
  CHECK(tc.step() == first);
  tc.run();
  CHECK(tc.step() == total);
  CHECK(tc.epoch() == ta.epoch());
  CHECK(tc.batch_in_epoch() == ta.batch_in_epoch());
  CHECK(tc.scheduled_lr() == ta.scheduled_lr());

  REQUIRE(straight.losses.size() == std::size_t(total));
  REQUIRE(before.losses.size() == std::size_t(first));
  REQUIRE(after.losses.size() == std::size_t(total - first));
  bool const exact =
      Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename Exec::memory_space>::accessible && Exec().concurrency() == 1;
  for (long s = 0; s < total; ++s) {
    double const resumed = s < first ? before.losses[std::size_t(s)] : after.losses[std::size_t(s - first)];
    double const lr = s < first ? before.lrs[std::size_t(s)] : after.lrs[std::size_t(s - first)];
    INFO("step ", s + 1);
    CHECK(lr == straight.lrs[std::size_t(s)]);
    if (exact) CHECK(resumed == straight.losses[std::size_t(s)]);
    else CHECK(resumed == doctest::Approx(straight.losses[std::size_t(s)]).epsilon(1e-9));
  }
  auto const wa = host_values(a->optimizer()), wc = host_values(c->optimizer());
  REQUIRE(wa.size() == wc.size());
  double worst = 0;
  for (std::size_t i = 0; i < wa.size(); ++i) worst = std::max(worst, std::abs(wa[i] - wc[i]));
  if (exact) CHECK(worst == 0);
  else CHECK(worst < 1e-9);
}

/// A task whose validations follow a script, for the schedules and the divergence check.
template <class Exec>
struct ScriptedTask {
  using Opt = trellis::Optimizer<Exec, double>;
  using flat = typename Opt::flat_view;
  ScriptedTask(std::vector<double> valid, long batches, double loss = 1)
      : valids(std::move(valid)), batches(batches), loss(loss), w("w", 1), g("g", 1),
        opt(trellis::OptimizerKind::sgd, list(), trellis::OptimizerOptions{}) {}
  trellis::ParameterList<typename Exec::memory_space, double> list() {
    trellis::ParameterList<typename Exec::memory_space, double> l;
    trellis::add_parameter(l, "w", w, g);
    return l;
  }
  long batches_per_epoch() const { return batches; }
  void start_epoch(long) {}
  void resume_epoch(long) {}
  trellis::StepResult step(long, trellis::DropoutKey const&) {
    opt.step(Exec());
    return {loss, loss, 1, 0, {}};
  }
  double next() { return valids.at(std::min(seen++, valids.size() - 1)); }
  double validate() { return next(); }
  double evaluate(std::string const&) { return next(); }
  double train_metric(trellis::StepResult const&) const { return 0; }
  std::string metric() const { return "score"; }
  std::string unit() const { return "items"; }
  bool lower_is_better() const { return true; }
  Opt& optimizer() { return opt; }
  trellis::Communicator& communicator() { return trellis::single_process(); }
  void save(trellis::safetensors::File&, trellis::safetensors::DType) {}
  void load(trellis::safetensors::File const&, std::string const&, std::vector<std::string> const&) {}

  std::vector<double> valids;
  std::size_t seen = 0;
  long batches;
  double loss;
  flat w, g;
  Opt opt;
};

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("trainer: a resumed language-model run repeats the uninterrupted one", Exec, resume_lm) {
  for (auto level : {trellis::data::TokenLevel::characters, trellis::data::TokenLevel::words}) {
    auto options = language_options();
    if (level == trellis::data::TokenLevel::words) options.model.n_experts = 2;
    auto make = [&](Exec const& space) {
      return std::make_unique<trellis::LanguageTask<Exec, double>>(space, options, synthetic_corpus(level));
    };
    // 4 segments an epoch: the checkpoint falls mid-epoch (carried state), the
    // resumed run crosses an epoch boundary and the step schedule's milestone.
    check_resumption<Exec>(make, 3, 7, "lm.safetensors");
  }
}
TEST_CASE_TEMPLATE_APPLY(resume_lm, Backends);

TEST_CASE_TEMPLATE_DEFINE("trainer: a resumed classifier run repeats the uninterrupted one", Exec, resume_cls) {
  for (auto sequence : {trellis::ImageSequence::rows, trellis::ImageSequence::pixels}) {
    auto make = [&](Exec const& space) {
      return std::make_unique<trellis::ClassifierTask<Exec, double>>(space, classifier_options(sequence),
                                                                     synthetic_images());
    };
    check_resumption<Exec>(make, 3, 6, "cls.safetensors");
  }
}
TEST_CASE_TEMPLATE_APPLY(resume_cls, Backends);

TEST_CASE_TEMPLATE_DEFINE("trainer: annealing takes lr linearly to zero over the last fraction", Exec, anneal) {
  Exec space;
  ScriptedTask<Exec> task({1.0}, 100);
  task.opt.set_lr(0.4);
  auto o = per_step(8);
  o.anneal = 0.5;
  Record r;
  trellis::Trainer<Exec, ScriptedTask<Exec>> trainer(space, task, o, recording(r));
  trainer.run();
  // Before step s (0-based) the fraction left is (8 - s) / 8; under 0.5 lr scales by left / 0.5.
  std::vector<double> const expected{0.4, 0.4, 0.4, 0.4, 0.4, 0.3, 0.2, 0.1};
  REQUIRE(r.lrs.size() == expected.size());
  for (std::size_t s = 0; s < expected.size(); ++s) CHECK(r.lrs[s] == doctest::Approx(expected[s]).epsilon(1e-12));
  CHECK(trainer.scheduled_lr() == 0.4);
  using T = trellis::Trainer<Exec, ScriptedTask<Exec>>;
  CHECK(T::format_minutes(125.7) == "02:05");
  CHECK(T::format_minutes(std::numeric_limits<double>::infinity()) == "--:--");
}
TEST_CASE_TEMPLATE_APPLY(anneal, Backends);

TEST_CASE_TEMPLATE_DEFINE("trainer: the plateau and step schedules", Exec, schedules) {
  Exec space;
  SUBCASE("plateau: lr halves after more than `patience` validations without improvement") {
    ScriptedTask<Exec> task({3, 2, 2.5, 2.5, 1, 1, 1}, 100);
    task.opt.set_lr(1);
    trellis::LrSchedule plateau;
    plateau.kind = trellis::LrSchedule::Kind::plateau;
    plateau.factor = 0.5;
    plateau.patience = 1;
    auto o = per_step(7, plateau);
    o.eval_every_seconds = 0;  // a validation after every step
    Record r;
    trellis::Trainer<Exec, ScriptedTask<Exec>> trainer(space, task, o, recording(r));
    trainer.run();
    // Validations after steps 1..7: 3, 2 (best), 2.5, 2.5 (halve), 1 (best), 1, 1 (halve).
    std::vector<double> const expected{1, 1, 1, 1, 0.5, 0.5, 0.5};
    REQUIRE(r.lrs.size() == expected.size());
    for (std::size_t s = 0; s < expected.size(); ++s) CHECK(r.lrs[s] == expected[s]);
    CHECK(trainer.scheduled_lr() == 0.25);
    CHECK(trainer.schedule().best == 1);
  }
  SUBCASE("steps: lr scales by gamma after each milestone epoch") {
    ScriptedTask<Exec> task({5}, 2);
    task.opt.set_lr(1);
    Record r;
    trellis::Trainer<Exec, ScriptedTask<Exec>> trainer(
        space, task, per_step(7, {.kind = trellis::LrSchedule::Kind::steps, .milestones = {1, 3}, .gamma = 0.1}),
        recording(r));
    trainer.run();
    std::vector<double> const expected{1, 1, 0.1, 0.1, 0.1, 0.1, 0.01};
    REQUIRE(r.lrs.size() == expected.size());
    for (std::size_t s = 0; s < expected.size(); ++s) CHECK(r.lrs[s] == doctest::Approx(expected[s]).epsilon(1e-12));
    CHECK(trainer.epoch() == 4);
    CHECK(r.valids.size() == 4);  // three epoch ends and the final validation
  }
}
TEST_CASE_TEMPLATE_APPLY(schedules, Backends);

TEST_CASE_TEMPLATE_DEFINE("trainer: checkpoint round trip under explicit names", Exec, round_trip) {
  Exec space;
  auto const options = language_options();
  trellis::LanguageTask<Exec, double> task(space, options, synthetic_corpus(trellis::data::TokenLevel::characters));
  auto o = step_options(5);
  o.schedule.kind = trellis::LrSchedule::Kind::plateau;
  o.schedule.patience = 3;
  o.eval_every_seconds = 0;
  o.metadata["note"] = "kept";
  o.checkpoint_dtype = trellis::safetensors::DType::F64;
  trellis::Trainer<Exec, decltype(task)> trainer(space, task, o);
  trainer.run();
  trellis::safetensors::File file;
  trainer.save(file);
  for (auto const& name : trellis::Trainer<Exec, decltype(task)>::state_names()) {
    INFO(name);
    CHECK(file.has(name));
  }
  CHECK(file.at("x", "trainer.epoch").to_double() == std::vector<double>{2});
  CHECK(file.at("x", "trainer.batch_in_epoch").to_double() == std::vector<double>{1});
  CHECK(file.metadata.at("task") == "test");
  CHECK(file.metadata.at("note") == "kept");
  CHECK(!file.has("progress"));

  // Through the disk and back into a fresh task: every piece of state is equal.
  auto const path = scratch("round_trip.safetensors").string();
  trellis::safetensors::write(path, file);
  trellis::LanguageTask<Exec, double> again(space, options, synthetic_corpus(trellis::data::TokenLevel::characters));
  trellis::Trainer<Exec, decltype(again)> back(space, again, step_options(5));
  back.resume(path);
  CHECK(back.step() == trainer.step());
  CHECK(back.epoch() == trainer.epoch());
  CHECK(back.batch_in_epoch() == trainer.batch_in_epoch());
  CHECK(back.trained_seconds() == doctest::Approx(trainer.trained_seconds()).epsilon(1e-15));
  CHECK(back.scheduled_lr() == trainer.scheduled_lr());
  CHECK(back.schedule().best == trainer.schedule().best);
  CHECK(back.schedule().bad_epochs == trainer.schedule().bad_epochs);
  CHECK(again.optimizer().steps() == task.optimizer().steps());
  CHECK(host_values(again.optimizer()) == host_values(task.optimizer()));
}
TEST_CASE_TEMPLATE_APPLY(round_trip, Backends);

TEST_CASE_TEMPLATE_DEFINE("trainer: older checkpoints with the positional progress tensor", Exec, legacy) {
  Exec space;
  auto const options = language_options();
  trellis::LanguageTask<Exec, double> task(space, options, synthetic_corpus(trellis::data::TokenLevel::characters));
  trellis::Trainer<Exec, decltype(task)> trainer(space, task, step_options(2));
  trainer.run();
  trellis::safetensors::File file;
  trainer.save(file);
  for (auto const& name : trellis::Trainer<Exec, decltype(task)>::state_names())
    if (name.rfind("trainer.", 0) == 0) file.tensors.erase(name);
  file.tensors["progress"] = trellis::safetensors::Tensor::from_double(trellis::safetensors::DType::F64, {6},
                                                                         {1, 2, 12.5, 0.004, 0.75, 1});
  auto const path = scratch("legacy.safetensors").string();
  trellis::safetensors::write(path, file);
  trellis::LanguageTask<Exec, double> again(space, options, synthetic_corpus(trellis::data::TokenLevel::characters));
  trellis::Trainer<Exec, decltype(again)> back(space, again, step_options(5));
  back.resume(path);
  CHECK(back.step() == 2);
  CHECK(back.epoch() == 1);
  CHECK(back.batch_in_epoch() == 2);
  CHECK(back.trained_seconds() == 12.5);
  CHECK(back.scheduled_lr() == 0.004);
  CHECK(back.schedule().best == 0.75);
  CHECK(back.schedule().bad_epochs == 1);
}
TEST_CASE_TEMPLATE_APPLY(legacy, Backends);

namespace {
template <class F>
std::string error_of(F&& f) {
  return trellis::test::error_of<std::exception>(f);
}
bool has(std::string const& s, std::string const& part) { return s.find(part) != std::string::npos; }
}  // namespace

TEST_CASE_TEMPLATE_DEFINE("trainer: clear errors for another configuration, bad state and divergence", Exec, errors) {
  Exec space;
  auto const options = language_options();
  auto const corpus = synthetic_corpus(trellis::data::TokenLevel::characters);
  trellis::LanguageTask<Exec, double> task(space, options, corpus);
  trellis::Trainer<Exec, decltype(task)> trainer(space, task, step_options(2));
  trainer.run();
  auto const path = scratch("errors.safetensors").string();
  trainer.save(path);

  // Another configuration: a metadata key that must match.
  {
    trellis::LanguageTask<Exec, double> other(space, options, corpus);
    auto o = step_options(4);
    o.configuration["task"] = "other";
    trellis::Trainer<Exec, decltype(other)> t(space, other, o);
    auto const e = error_of([&] { t.resume(path); });
    CHECK(has(e, path));
    CHECK(has(e, "another configuration"));
    CHECK(has(e, "task is 'test'"));
  }
  // Another model: the model's reader names the tensor whose shape differs.
  {
    auto bigger = options;
    bigger.model.core.nhid = 5;
    trellis::LanguageTask<Exec, double> other(space, bigger, corpus);
    trellis::Trainer<Exec, decltype(other)> t(space, other, step_options(4));
    auto const e = error_of([&] { t.resume(path); });
    CHECK(has(e, path));
    CHECK(e != "");
  }
  // Another vocabulary: the data differ.
  {
    auto fewer = corpus;
    fewer.vocabulary.pop_back();
    for (auto* split : {&fewer.train, &fewer.valid, &fewer.test})
      for (auto& t : *split) t = t % 8;
    trellis::LanguageTask<Exec, double> other(space, options, fewer);
    trellis::Trainer<Exec, decltype(other)> t(space, other, step_options(4));
    CHECK(has(error_of([&] { t.resume(path); }), "vocabulary differs"));
  }
  // A missing or misshaped state tensor.
  {
    auto file = trellis::safetensors::read(path);
    file.tensors.erase("trainer.epoch");
    trellis::safetensors::write(path + ".cut", file);
    trellis::LanguageTask<Exec, double> other(space, options, corpus);
    trellis::Trainer<Exec, decltype(other)> t(space, other, step_options(4));
    CHECK(has(error_of([&] { t.resume(path + ".cut"); }), "trainer.epoch"));
    file = trellis::safetensors::read(path);
    file.tensors["trainer.batch_in_epoch"] =
        trellis::safetensors::Tensor::from_double(trellis::safetensors::DType::I64, {1}, {99});
    trellis::safetensors::write(path + ".far", file);
    CHECK(has(error_of([&] { t.resume(path + ".far"); }), "batches per epoch"));
  }
  // A loss that is not finite stops the run with the step.
  {
    ScriptedTask<Exec> nan_task({1}, 10, std::nan(""));
    trellis::Trainer<Exec, ScriptedTask<Exec>> t(space, nan_task, trellis::TrainerOptions{});
    auto const e = error_of([&] { t.run(); });
    CHECK(has(e, "trellis::Trainer::run"));
    CHECK(has(e, "diverged at step 1"));
  }
  // Options out of range.
  {
    trellis::TrainerOptions o;
    o.anneal = 1.5;
    CHECK(has(error_of([&] { trellis::Trainer<Exec, decltype(task)> t(space, task, o); }), "anneal 1.5"));
  }
  fs::remove_all(fs::path(path).parent_path());
}
TEST_CASE_TEMPLATE_APPLY(errors, Backends);

// A NaN in the data: the step is skipped, the parameters and the optimiser state stay
// as they were, and the result names the tensor.
TEST_CASE_TEMPLATE_DEFINE("trainer: a step whose gradients are not finite is skipped and changes nothing", Exec,
                          non_finite) {
  Exec space;
  auto images = synthetic_images();
  for (auto& p : images.train.pixels) p = std::nanf("");
  trellis::ClassifierTask<Exec, float> task(space, classifier_options(trellis::ImageSequence::rows), images);
  auto const before = host_values(task.optimizer());
  auto const r = task.step(0, trellis::DropoutKey{1, 1, 0});
  CHECK(r.non_finite.rfind("core.", 0) == 0);
  CHECK(host_values(task.optimizer()) == before);

  // Through the Trainer: each step skipped and logged; after max_skipped_steps in a row
  // the run stops with an error, and the checkpoint of the last good step is kept.
  auto options = language_options();
  options.optimizer_options.lr = 1e38;  // the first update makes every later gradient NaN
  options.model.dropout = options.model.dropouti = options.model.dropouth = options.model.wdrop = 0;
  trellis::LanguageTask<Exec, float> lm(space, options, synthetic_corpus(trellis::data::TokenLevel::characters));
  auto const path = scratch("skipped.safetensors").string();
  fs::remove(path);
  auto o = per_step(20);
  o.max_skipped_steps = 3;
  o.checkpoint_path = path;
  o.checkpoint_every_seconds = 0;  // after every step that updates
  std::vector<std::string> log;
  trellis::TrainerCallbacks cb;
  cb.log = [&](std::string const& line) { log.push_back(line); };
  trellis::Trainer<Exec, decltype(lm)> trainer(space, lm, o, cb);
  auto const e = error_of([&] { trainer.run(); });
  CHECK(has(e, "3 steps in a row"));
  CHECK(has(e, "stopped with the last checkpoint kept"));
  long skipped = 0;
  for (auto const& line : log) skipped += has(line, "skipped: the gradient of ") ? 1 : 0;
  CHECK(skipped == 3);
  // The checkpoint is the last step that updated, and it loads.
  auto const file = trellis::safetensors::read(path);
  long const saved = long(file.at(path, "step").to_double().at(0));
  CHECK(saved >= 1);
  CHECK(saved == trainer.step() - 3);
  trellis::LanguageTask<Exec, float> again(space, options, synthetic_corpus(trellis::data::TokenLevel::characters));
  trellis::Trainer<Exec, decltype(again)> resumed(space, again, o);
  resumed.resume(path);
  CHECK(resumed.step() == saved);

  trellis::TrainerOptions bad;
  bad.max_skipped_steps = 0;
  CHECK(has(error_of([&] { trellis::Trainer<Exec, decltype(lm)> t(space, lm, bad); }), "max_skipped_steps 0"));
  fs::remove_all(fs::path(path).parent_path());
}
TEST_CASE_TEMPLATE_APPLY(non_finite, Backends);

TEST_CASE_TEMPLATE_DEFINE("trainer: the untied gated TCN trains, saves under its own names and resumes", Exec, untied) {
  using Task = trellis::LanguageTask<Exec, double, trellis::Untied>;
  auto const options = language_options();
  auto make = [&](Exec const& space) {
    return std::make_unique<Task>(space, options, synthetic_corpus(trellis::data::TokenLevel::characters));
  };
  check_resumption<Exec>(make, 3, 6, "untied.safetensors");

  // One kernel per level: a leading kernel dimension, and the metadata says so.
  Exec space;
  auto task = make(space);
  trellis::Trainer<Exec, Task> trainer(space, *task, step_options(1));
  trellis::safetensors::File file;
  trainer.save(file);
  CHECK(file.metadata.at("weight_tying") == "untied");
  long const q = options.model.core.q();
  CHECK(file.at("x", "tnet.module.full_conv.weight1_v_raw").shape ==
        std::vector<std::int64_t>{options.model.core.nlevels, 4 * q, options.model.core.ninp, 2});
  CHECK(file.at("x", "tnet.module.full_conv.bias2").shape == std::vector<std::int64_t>{options.model.core.nlevels, 4 * q});
  // A tied model does not take it, nor an untied one a tied file.
  auto const path = scratch("untied_file.safetensors").string();
  trellis::safetensors::write(path, file);
  trellis::LanguageTask<Exec, double> tied(space, options, synthetic_corpus(trellis::data::TokenLevel::characters));
  trellis::Trainer<Exec, decltype(tied)> t(space, tied, step_options(1));
  auto const e = error_of([&] { t.resume(path); });
  CHECK(has(e, path));
  CHECK(has(e, "weight tying is 'untied'"));
  t.save(path);
  CHECK(has(error_of([&] { trainer.resume(path); }), "weight tying is 'tied'"));
  fs::remove_all(fs::path(path).parent_path());
}
TEST_CASE_TEMPLATE_APPLY(untied, Backends);

// ---------------------------------------------------------------- training by flag names

namespace {
/// The trellis program's charlm defaults, enough for every option a task reads.
trellis::flags::Flags language_flags() {
  return {{"ninp", "8"},        {"nhid", "8"},          {"nout", "8"},        {"nlevels", "3"},
          {"dilation", "[1,2]"}, {"dropout", "0.1"},     {"dropouti", "0"},    {"dropouth", "0"},
          {"dropoutl", "0"},     {"emb-dropout", "0"},   {"wdrop", "0"},       {"wnorm", "true"},
          {"aux", "0"},          {"aux-freq", "0"},      {"n-experts", "0"},   {"alpha", "0"},
          {"beta", "0"},         {"init-std", "0.01"},   {"untied", "false"},  {"optim", "adamw"},
          {"lr", "0.002"},       {"wdecay", "0"},        {"momentum", "0"},    {"clip", "0.25"},
          {"batch-size", "4"},   {"seq-len", "16"},      {"eval-batch-size", "2"}, {"seed", "5"},
          {"when", "[3,5]"},     {"gamma", "0.5"},       {"plateau-patience", "-1"}, {"plateau-factor", "0.5"},
          {"anneal", "0.25"},    {"eval-minutes", "2"},  {"valid-tokens", "0"}, {"checkpoint-minutes", "3"},
          {"max-steps", "7"},    {"log-every", "10"}};
}
}  // namespace

TEST_CASE("flags: the reference's names to task and trainer options, errors naming flag and value") {
  using namespace trellis::flags;
  using trellis::test::error_of;
  auto f = language_flags();
  auto const lm = language_task_options(f);
  CHECK(lm.model.core.dilation == std::vector<int>{1, 2});
  CHECK(lm.model.dropout == doctest::Approx(0.1));
  CHECK(lm.optimizer == trellis::OptimizerKind::adam);
  CHECK(lm.optimizer_options.decoupled);
  CHECK(lm.seq_len == 16);
  CHECK(lm.seed == 5);
  auto const t = trainer_options(f, 90);
  CHECK(t.max_seconds == 90);
  CHECK(t.max_steps == 7);
  CHECK(t.checkpoint_every_seconds == 180);
  CHECK(t.schedule.kind == trellis::LrSchedule::Kind::steps);
  CHECK(t.schedule.milestones == std::vector<int>{3, 5});
  CHECK(t.metadata.at("flag.lr") == "0.002");

  auto with = [&](std::string const& k, std::string const& v) {
    auto g = f;
    g[k] = v;
    return g;
  };
  auto lm_error = [&](std::string const& k, std::string const& v) {
    return error_of<trellis::invalid_argument>([&] { (void)language_task_options(with(k, v)); });
  };
  CHECK(lm_error("lr", "abc") == "--lr abc: not a number");
  CHECK(lm_error("nlevels", "2.5") == "--nlevels 2.5: not an integer");
  CHECK(lm_error("dropout", "1.5") == "--dropout 1.5: not in [0, 1)");
  CHECK(lm_error("batch-size", "0") == "--batch-size 0: must be at least 1");
  CHECK(lm_error("init-std", "0") == "--init-std 0: must be positive");
  CHECK(lm_error("dilation", "[1,") == "--dilation [1,: expected a list of integers such as [1,2,4]");
  // Found by fuzz_flags: a double past long's range was cast to long (undefined).
  CHECK(lm_error("nhid", "1e308") == "--nhid 1e308: out of range (at most 2147483647 in magnitude)");
  CHECK(lm_error("ninp", "4294967304") == "--ninp 4294967304: out of range (at most 2147483647 in magnitude)");
  // The JSON library would cast these to int.
  CHECK(lm_error("dilation", "[1e20]") == "--dilation [1e20]: expected a list of integers such as [1,2,4]");
  CHECK(lm_error("dilation", "[2.5]") == "--dilation [2.5]: expected a list of integers such as [1,2,4]");
  CHECK(lm_error("dilation", "[4294967297]") ==
        "--dilation [4294967297]: expected a list of integers such as [1,2,4]");
  CHECK(lm_error("wnorm", "maybe") == "--wnorm maybe: expected true or false");
  CHECK(lm_error("optim", "lbfgs") == "--optim lbfgs: expected adam, adamw or sgd");
  CHECK(error_of<trellis::invalid_argument>([&] { (void)trainer_options(with("anneal", "1.5"), 60); }) ==
        "--anneal 1.5: not in [0, 1]");
  CHECK(error_of<trellis::invalid_argument>([&] { (void)classifier_task_options(f, "fashion-row"); }) ==
        "--ninp 8: --data fashion-row feeds 28 value(s) per step");
  auto const cls = classifier_task_options(with("ninp", "1"), "mnist-permuted");
  CHECK(cls.sequence == trellis::ImageSequence::pixels);
  CHECK(cls.permutation.size() == 784);
}

TEST_CASE("flags::resolve: defaults, then the checkpoint's flags, then the given ones") {
  using trellis::flags::Flags;
  using trellis::flags::resolve;
  Flags const defaults{{"lr", "0.01"}, {"max-steps", "0"}, {"seed", "1"}};
  std::map<std::string, std::string> const checkpoint{{"flag.lr", "0.02"}, {"flag.max-steps", "100"}, {"task", "x"}};
  auto const fresh = resolve(defaults, nullptr, "", {{"seed", "3"}}, true);
  CHECK(fresh == Flags{{"lr", "0.01"}, {"max-steps", "0"}, {"seed", "3"}});
  auto const resumed = resolve(defaults, &checkpoint, "c.safetensors", {{"max-steps", "200"}, {"lr", "0.02"}}, true);
  CHECK(resumed == Flags{{"lr", "0.02"}, {"max-steps", "200"}, {"seed", "1"}});
  CHECK(trellis::test::error_of<trellis::invalid_argument>(
            [&] { (void)resolve(defaults, &checkpoint, "c.safetensors", {{"lr", "0.03"}}, true); }) ==
        "--lr 0.03: the checkpoint c.safetensors was trained with --lr 0.02 (drop the flag, or start a new run "
        "directory)");
  // Evaluating may override anything.
  CHECK(resolve(defaults, &checkpoint, "c.safetensors", {{"lr", "0.03"}}, false).at("lr") == "0.03");
}

TEST_CASE("RunDirectory: curves.csv replaced whole, reloaded on resume; log appended") {
  trellis::test::TempDir dir("run-directory");
  std::string const run_path = dir / "run";
  {
    trellis::RunDirectory run(run_path);
    run.log("first");
    trellis::CurveRow r;
    r.step = 1;
    r.train_loss = 1.0 / 3;
    r.train_metric = 2;
    run.add_curve_row(r);
    r.step = 2;
    r.valid = 1.5;
    run.add_curve_row(r);
    run.write_curves("bpc");
    CHECK(!fs::exists(run.path("curves.csv.tmp")));
    CHECK(run.checkpoint_path() == run_path + "/checkpoint.safetensors");
  }
  trellis::RunDirectory again(run_path);
  again.log("second");
  again.load_curves();
  trellis::CurveRow r;
  r.step = 3;
  again.add_curve_row(r);
  again.write_curves("bpc");
  auto const csv = trellis::test::read_bytes(run_path + "/curves.csv");
  CHECK(csv ==
        "step,epoch,train_minutes,lr,train_loss,train_bpc,valid_bpc\n"
        "1,0,0,0,0.33333333333333331,2,\n"
        "2,0,0,0,0.33333333333333331,2,1.5\n"
        "3,0,0,0,,,\n");
  CHECK(trellis::test::read_bytes(run_path + "/log.txt") == "first\nsecond\n");
  CHECK(trellis::test::error_of<trellis::file_error>([&] { trellis::RunDirectory bad(run_path + "/log.txt/x"); })
            .find("cannot create the run directory") != std::string::npos);
}

TEST_CASE_TEMPLATE_DEFINE("trainer: stop_requested ends the session at that step, checkpointed, not validated", Exec,
                          stop) {
  Exec space;
  trellis::LanguageTask<Exec, double> task(space, language_options(),
                                           synthetic_corpus(trellis::data::TokenLevel::characters));
  auto o = step_options(50);
  auto const path = scratch("stopped.safetensors").string();
  o.checkpoint_path = path;
  o.checkpoint_dtype = trellis::safetensors::DType::F64;
  Record record;
  auto callbacks = recording(record);
  long asked = 0;
  callbacks.stop_requested = [&] { return ++asked == 3; };
  trellis::Trainer<Exec, decltype(task)> trainer(space, task, o, callbacks);
  auto const summary = trainer.run();
  CHECK(summary.stopped);
  CHECK(summary.steps == 3);
  CHECK(std::isnan(summary.valid));
  CHECK(record.valids.empty());
  CHECK(record.losses.size() == 3);
  CHECK(trellis::safetensors::read(path).at(path, "step").to_double() == std::vector<double>{3});
}
TEST_CASE_TEMPLATE_APPLY(stop, Backends);
