#pragma once
// The training loop as a library component: a Trainer drives a task for a budget in
// steps or training seconds, with an LR schedule, annealing, periodic validation and
// checkpoints, and saves and resumes everything a run needs under explicit names.
//
// A task is any type with (see LanguageTask and ClassifierTask):
//   long batches_per_epoch();                  void start_epoch(long), resume_epoch(long);
//   StepResult step(long batch_in_epoch, DropoutKey key);   // one optimiser step, this rank's share
//   Communicator& communicator();               // the ranks sharing the work
//   double validate();  double evaluate(std::string split);  double train_metric(StepResult);
//   std::string metric(), unit();  bool lower_is_better();  Optimizer<...>& optimizer();
//   void save(safetensors::File&, DType);  void load(File const&, path, std::vector<std::string> also);
//
// Time counts training steps only: validation, checkpoints and data preparation do not
// spend the budget. A checkpoint holds the task's tensors, the optimiser state under
// "optim.", and the trainer's state:
//   step (I64), trainer.epoch,
//   trainer.batch_in_epoch, trainer.plateau_bad_epochs (I64), trainer.trained_seconds,
//   trainer.scheduled_lr, trainer.plateau_best (F64), each of shape (1);
// and the run's configuration as metadata, which a resume must match, beside other
// metadata that may change between sessions. The dropout masks of step s are keyed by
// (seed, s), so a resumed run draws the masks of the uninterrupted one.
//
// Data-parallel: every rank runs the same Trainer over its task's share. The run starts
// from rank 0's parameters and optimiser state; each step's loss, counts and time are
// the group's (the time the ranks' mean), so that every rank takes the same decisions
// (validation, checkpoint, stop) at the same step; rank 0 alone writes checkpoints.
#include <Kokkos_Core.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <trellis/core/dropout_key.hpp>
#include <trellis/errors.hpp>
#include <trellis/io/safetensors.hpp>
#include <trellis/io/tensor_io.hpp>
#include <trellis/train/communicator.hpp>
#include <trellis/train/schedule.hpp>
#include <trellis/train/step_result.hpp>

namespace trellis {

struct TrainerOptions {
  long max_steps = 0;  ///< stop when the run's step count reaches this (0: no limit)
  double max_seconds = std::numeric_limits<double>::infinity();  ///< training seconds for this session
  double anneal = 0;   ///< over this last fraction of the session, lr falls linearly to 0
  double eval_every_seconds = std::numeric_limits<double>::infinity();        ///< quick validations
  double checkpoint_every_seconds = std::numeric_limits<double>::infinity();  ///< with a checkpoint_path
  long log_every = 50;            ///< steps per curve row
  /// Steps skipped in a row for non-finite gradients (parameters and optimiser state
  /// unchanged) before the run stops with an error, its last checkpoint kept.
  long max_skipped_steps = 10;
  LrSchedule schedule;            ///< by epoch, or on plateau of the validation metric
  std::uint64_t seed = 1111;      ///< the key of the dropout masks
  std::string checkpoint_path;    ///< where checkpoints go (empty: none)
  safetensors::DType checkpoint_dtype = safetensors::DType::F32;
  /// Written to checkpoints as metadata; resuming from a file whose value for one of
  /// these keys differs is an error naming the key.
  std::map<std::string, std::string> configuration;
  /// Written to checkpoints as metadata, not checked on resume (what may change
  /// between sessions: budgets, cadences, precision).
  std::map<std::string, std::string> metadata;
};

/// A row of the training curves: every log_every steps (train columns) and at each
/// validation (valid column); a column without a value is NaN.
struct CurveRow {
  long step = 0, epoch = 0;
  double trained_minutes = 0, lr = 0;
  double train_loss = std::nan(""), train_metric = std::nan(""), valid = std::nan("");
};

/// After each step, for progress displays.
struct TrainerProgress {
  long step = 0, epoch = 0, batch_in_epoch = 0, batches_per_epoch = 0;
  double window_loss = 0;        ///< mean loss of the steps since the last curve row
  double throughput = 0;         ///< smoothed units (tokens, sequences) per second
  double seconds_left = 0;       ///< of this session's budget
};

struct TrainerCallbacks {
  std::function<void(std::string const&)> log;  ///< what happened: resumed, validations, lr changes, ...
  std::function<void(TrainerProgress const&)> progress;
  std::function<void(CurveRow const&)> curve;
  std::function<void(std::string const& path, long step)> checkpoint;  ///< after a checkpoint is written
  /// Asked after every step: true ends the session there (a signal, a deadline of the
  /// caller's). Data-parallel, any rank's request stops every rank at the same step.
  std::function<bool()> stop_requested;
};

struct TrainerSummary {
  long steps = 0;               ///< this session's
  double session_seconds = 0;   ///< training seconds this session
  double valid = std::nan("");  ///< the full validation metric at the end (not when stopped)
  bool stopped = false;         ///< stop_requested ended the session: checkpointed, not validated
};

template <class ExecutionSpace, class Task>
class Trainer {
 public:
  /// The tensors of the trainer's own state in a checkpoint (besides "optim.").
  static std::vector<std::string> const& state_names() {
    static std::vector<std::string> const names{"step",
                                                "trainer.epoch",
                                                "trainer.batch_in_epoch",
                                                "trainer.trained_seconds",
                                                "trainer.scheduled_lr",
                                                "trainer.plateau_best",
                                                "trainer.plateau_bad_epochs"};
    return names;
  }

  /// What a checkpoint holds besides the task's tensors: the optimiser state (the
  /// prefix "optim."), the trainer's state, and what older files hold: the positional
  /// "progress" and "rng" (the sequential generator masks were once drawn from).
  static std::vector<std::string> checkpoint_extras() {
    std::vector<std::string> also{"optim.", "progress", "rng"};
    also.insert(also.end(), state_names().begin(), state_names().end());
    return also;
  }

  Trainer(ExecutionSpace const& space, Task& task, TrainerOptions options, TrainerCallbacks callbacks = {})
      : space_(space), task_(task), comm_(task.communicator()), options_(std::move(options)),
        callbacks_(std::move(callbacks)), scheduled_lr_(task.optimizer().lr()) {
    char const* call = "trellis::Trainer";
    if (!(options_.anneal >= 0 && options_.anneal <= 1)) detail::fail(call, ": anneal ", options_.anneal, " is not in [0, 1]");
    if (!(options_.max_seconds > 0)) detail::fail(call, ": max_seconds ", options_.max_seconds, " must be positive");
    if (options_.max_steps < 0) detail::fail(call, ": max_steps ", options_.max_steps, " is negative");
    if (options_.log_every < 1) detail::fail(call, ": log_every ", options_.log_every, " must be at least 1");
    if (options_.max_skipped_steps < 1)
      detail::fail(call, ": max_skipped_steps ", options_.max_skipped_steps, " must be at least 1");
    if (task_.batches_per_epoch() < 1) detail::fail(call, ": the task has no training batch in an epoch");
  }

  long step() const { return step_; }
  long epoch() const { return epoch_; }
  long batch_in_epoch() const { return batch_in_epoch_; }
  double trained_seconds() const { return trained_seconds_; }
  double scheduled_lr() const { return scheduled_lr_; }
  LrSchedule const& schedule() const { return options_.schedule; }

  /// Writes the task, the optimiser state, the trainer's state and the configuration
  /// (data-parallel: on every rank; the file is complete on rank 0).
  void save(safetensors::File& file) {
    using safetensors::DType;
    using safetensors::Tensor;
    task_.save(file, options_.checkpoint_dtype);
    for (auto const& [name, view] : task_.optimizer().state())
      file.tensors["optim." + name] = to_tensor(view, options_.checkpoint_dtype);
    auto integer = [](long v) { return Tensor::from_double(DType::I64, {1}, {double(v)}); };
    auto real = [](double v) { return Tensor::from_double(DType::F64, {1}, {v}); };
    file.tensors["step"] = integer(step_);
    file.tensors["trainer.epoch"] = integer(epoch_);
    file.tensors["trainer.batch_in_epoch"] = integer(batch_in_epoch_);
    file.tensors["trainer.plateau_bad_epochs"] = integer(options_.schedule.bad_epochs);
    file.tensors["trainer.trained_seconds"] = real(trained_seconds_);
    file.tensors["trainer.scheduled_lr"] = real(scheduled_lr_);
    file.tensors["trainer.plateau_best"] = real(options_.schedule.best);
    for (auto const& [k, v] : options_.metadata) file.metadata[k] = v;
    for (auto const& [k, v] : options_.configuration) file.metadata[k] = v;
  }

  /// Saves to `path` (a temporary file renamed into place); data-parallel, call on
  /// every rank: rank 0 writes, and every rank returns once it has.
  void save(std::string const& path) {
    safetensors::File file;
    save(file);
    if (comm_.is_root()) safetensors::write(path, file);
    // No rank goes on (or exits: a launcher may then end the job) before the file is whole.
    if (comm_.size() > 1) comm_.barrier();
  }

  /// Continues the run a checkpoint holds: the task, the optimiser, the counters, the
  /// schedule's state and the generator, so that the steps that follow are those of an
  /// uninterrupted run.
  void resume(safetensors::File const& file, std::string const& path) {
    for (auto const& [k, v] : options_.configuration) {
      auto it = file.metadata.find(k);
      if (it != file.metadata.end() && it->second != v)
        throw file_error(path + ": a checkpoint of another configuration: its " + k + " is '" + it->second +
                         "', this run's is '" + v + "'");
    }
    task_.load(file, path, checkpoint_extras());
    auto& opt = task_.optimizer();
    for (auto const& [name, view] : opt.state()) from_tensor(view, file.at(path, "optim." + name), path, "optim." + name);
    step_ = long(scalar(file, path, "step"));
    if (file.has("progress")) {
      // Files written before the trainer's state had names: six numbers in this order.
      auto const p = file.at(path, "progress").to_double();
      if (p.size() != 6) throw file_error(path + ": tensor 'progress' has " + std::to_string(p.size()) + " values, expected 6");
      epoch_ = long(p[0]);
      batch_in_epoch_ = long(p[1]);
      trained_seconds_ = p[2];
      scheduled_lr_ = p[3];
      options_.schedule.best = p[4];
      options_.schedule.bad_epochs = int(p[5]);
    } else {
      epoch_ = long(scalar(file, path, "trainer.epoch"));
      batch_in_epoch_ = long(scalar(file, path, "trainer.batch_in_epoch"));
      trained_seconds_ = scalar(file, path, "trainer.trained_seconds");
      scheduled_lr_ = scalar(file, path, "trainer.scheduled_lr");
      options_.schedule.best = scalar(file, path, "trainer.plateau_best");
      options_.schedule.bad_epochs = int(scalar(file, path, "trainer.plateau_bad_epochs"));
    }
    if (epoch_ < 1 || batch_in_epoch_ < 0 || batch_in_epoch_ > task_.batches_per_epoch() || step_ < 0)
      throw file_error(path + ": trainer state (step " + std::to_string(step_) + ", epoch " + std::to_string(epoch_) +
                       ", batch " + std::to_string(batch_in_epoch_) + ") does not fit this task's " +
                       std::to_string(task_.batches_per_epoch()) + " batches per epoch");
    opt.set_steps(step_);
    resumed_ = true;
    say("resumed from ", path, " at step ", step_, " (epoch ", epoch_, ", ", format_minutes(trained_seconds_),
        " trained)");
  }

  void resume(std::string const& path) { resume(safetensors::read(path), path); }

  /// Trains until the session's budget (max_seconds of training) is spent, the step
  /// count reaches max_steps or stop_requested says so; then checkpoints (with a
  /// checkpoint_path) and, unless stopped, runs a full validation.
  TrainerSummary run() {
    // A language model resumed mid-epoch keeps the carried state it was saved with.
    if (!resumed_ || batch_in_epoch_ == 0) task_.start_epoch(epoch_);
    else task_.resume_epoch(epoch_);
    resumed_ = false;
    synchronize();
    auto& opt = task_.optimizer();
    double const budget = options_.max_seconds;
    long const max_steps = options_.max_steps;
    TrainerSummary summary;
    double since_eval = 0, since_ckpt = 0;
    double throughput = 0;
    long skipped_in_a_row = 0;
    window_ = StepResult{};
    window_steps_ = 0;
    while (summary.session_seconds < budget && (max_steps == 0 || step_ < max_steps)) {
      if (batch_in_epoch_ >= task_.batches_per_epoch()) end_epoch();
      // With max_steps the session ends at whichever comes first: anneal over that one.
      double const left = std::min(std::isinf(budget) ? 1.0 : (budget - summary.session_seconds) / budget,
                                   max_steps > 0 ? double(max_steps - step_) / double(max_steps) : 1.0);
      opt.set_lr(annealed_lr(scheduled_lr_, left, options_.anneal));
      auto const t0 = std::chrono::steady_clock::now();
      auto r = task_.step(batch_in_epoch_, DropoutKey{options_.seed, std::uint64_t(step_ + 1), 0});
      space_.fence();
      double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      bool stop = callbacks_.stop_requested && callbacks_.stop_requested();
      group_step(r, dt, stop);
      bool const skipped = !r.non_finite.empty();
      if (!skipped && !std::isfinite(r.loss)) {
        say("the loss is ", r.loss, " at step ", step_ + 1, "; stopping (lower the learning rate or clip the gradients)");
        detail::fail("trellis::Trainer::run: the loss diverged at step ", step_ + 1);
      }
      ++step_;
      ++batch_in_epoch_;
      ++summary.steps;
      trained_seconds_ += dt;
      summary.session_seconds += dt;
      since_eval += dt;
      if (skipped) {
        // The batch is used up, the update was not made; no curve row, no checkpoint.
        ++skipped_in_a_row;
        say("step ", step_, " skipped: the gradient of ", r.non_finite, " is not finite (loss ", r.loss,
            "); parameters and optimiser state unchanged");
        if (skipped_in_a_row >= options_.max_skipped_steps) {
          say("stopping: ", skipped_in_a_row, " steps in a row skipped; the last checkpoint is kept");
          detail::fail("trellis::Trainer::run: ", skipped_in_a_row, " steps in a row (to step ", step_,
                       ") had non-finite gradients, the last in ", r.non_finite,
                       "; stopped with the last checkpoint kept (lower the learning rate, or check the data)");
        }
        if (stop) {
          summary.stopped = true;
          break;
        }
        continue;
      }
      skipped_in_a_row = 0;
      since_ckpt += dt;
      window_ += r;
      ++window_steps_;
      throughput = step_ == 1 || summary.steps == 1 ? double(r.count) / dt : 0.9 * throughput + 0.1 * (double(r.count) / dt);
      if (callbacks_.progress)
        callbacks_.progress(TrainerProgress{step_, epoch_, batch_in_epoch_, task_.batches_per_epoch(),
                                            window_.loss / double(window_steps_), throughput,
                                            budget - summary.session_seconds});
      if (window_steps_ >= options_.log_every) curve_row(std::nan(""));
      if (stop) {
        summary.stopped = true;
        break;
      }
      if (since_eval >= options_.eval_every_seconds) {
        since_eval = 0;
        double const v = agreed(task_.validate());
        say("step ", step_, " (", format_minutes(trained_seconds_), " trained): valid ", task_.metric(), " ", v, "; ",
            long(throughput), " ", task_.unit(), " per second");
        curve_row(v);
        if (options_.schedule.kind == LrSchedule::Kind::plateau) update_lr(v);
      }
      if (!options_.checkpoint_path.empty() && since_ckpt >= options_.checkpoint_every_seconds) {
        since_ckpt = 0;
        checkpoint();
      }
    }
    if (window_steps_ > 0) curve_row(std::nan(""));
    if (!options_.checkpoint_path.empty()) checkpoint();
    if (summary.stopped) {
      say("stopped on request at step ", step_, " after ", format_minutes(summary.session_seconds), " of training",
          options_.checkpoint_path.empty() ? "" : "; checkpoint written");
      return summary;
    }
    summary.valid = agreed(task_.evaluate("valid"));
    say("stopped at step ", step_, " after ", format_minutes(summary.session_seconds), " of training (",
        format_minutes(trained_seconds_), " in all): valid ", task_.metric(), " ", summary.valid);
    curve_row(summary.valid);
    return summary;
  }

  /// "mm:ss" of a number of seconds ("--:--" without a time budget: infinity).
  static std::string format_minutes(double seconds) {
    if (!std::isfinite(seconds)) return "--:--";
    long const s = long(std::max(0.0, seconds));
    std::ostringstream out;
    out << (s / 60 < 10 ? "0" : "") << s / 60 << ':' << (s % 60 < 10 ? "0" : "") << s % 60;
    return out.str();
  }

 private:
  static double scalar(safetensors::File const& file, std::string const& path, std::string const& name) {
    auto const v = file.at(path, name).to_double();
    if (v.size() != 1)
      throw file_error(path + ": tensor '" + name + "' has " + std::to_string(v.size()) + " values, expected 1");
    return v[0];
  }

  /// Rank 0's parameters and optimiser state on every rank.
  void synchronize() {
    if (comm_.size() == 1) return;
    auto& opt = task_.optimizer();
    for (auto const& p : opt.parameters()) broadcast(comm_, p.value);
    for (auto const& [name, view] : opt.state()) broadcast(comm_, view);
  }

  /// Rank 0's value on every rank: what decides the control flow (stopping,
  /// validating, the learning rate) must agree to the bit, or the ranks' collective
  /// calls would part ways.
  double agreed(double v) {
    if (comm_.size() > 1) comm_.broadcast(&v, 1, Element::f64, 0);
    return v;
  }

  /// The group's step: the mean loss and time, the summed counts, a stop any rank
  /// asked for (rank 0's sums).
  void group_step(StepResult& r, double& dt, bool& stop) {
    if (comm_.size() == 1) return;
    double v[6] = {r.loss, r.nll, double(r.count), double(r.correct), dt, stop ? 1.0 : 0.0};
    comm_.sum(v, 6, Element::f64);
    comm_.broadcast(v, 6, Element::f64, 0);
    double const P = double(comm_.size());
    r = StepResult{v[0] / P, v[1], long(v[2]), long(v[3]), r.non_finite};  // the same on every rank
    dt = v[4] / P;
    stop = v[5] > 0;
  }

  template <class... Parts>
  void say(Parts const&... parts) {
    if (callbacks_.log) callbacks_.log(detail::message(parts...));
  }

  void end_epoch() {
    double const v = agreed(task_.evaluate("valid"));
    say("epoch ", epoch_, " done at step ", step_, ": valid ", task_.metric(), " ", v);
    curve_row(v);
    update_lr(v);
    ++epoch_;
    batch_in_epoch_ = 0;
    task_.start_epoch(epoch_);
  }

  void update_lr(double valid) {
    double const lr = options_.schedule.update(scheduled_lr_, int(epoch_), task_.lower_is_better() ? valid : -valid);
    if (lr != scheduled_lr_) say("learning rate ", scheduled_lr_, " -> ", lr);
    scheduled_lr_ = lr;
  }

  void curve_row(double valid) {
    CurveRow row;
    row.step = step_;
    row.epoch = epoch_;
    row.trained_minutes = trained_seconds_ / 60;
    row.lr = task_.optimizer().lr();
    if (window_steps_ > 0) {
      row.train_loss = window_.loss / double(window_steps_);
      row.train_metric = task_.train_metric(window_);
    }
    row.valid = valid;
    if (callbacks_.curve) callbacks_.curve(row);
    window_ = StepResult{};
    window_steps_ = 0;
  }

  void checkpoint() {
    save(options_.checkpoint_path);
    if (callbacks_.checkpoint) callbacks_.checkpoint(options_.checkpoint_path, step_);
  }

  ExecutionSpace space_;
  Task& task_;
  Communicator& comm_;
  TrainerOptions options_;
  TrainerCallbacks callbacks_;
  long step_ = 0, epoch_ = 1, batch_in_epoch_ = 0;
  double trained_seconds_ = 0, scheduled_lr_ = 0;
  bool resumed_ = false;
  StepResult window_;
  long window_steps_ = 0;
};

}  // namespace trellis
