#pragma once
// `trellis train` and `trellis eval` (docs/cli.md): the flags of tasks charlm, wordlm
// (State of the Union) and seqclass (Fashion-MNIST, MNIST digits) turned into the
// library's task and trainer options; the run directory with its log, curves (CSV and
// a gnuplot PNG) and checkpoint; the progress bar; the test metric as the last stdout
// line. The training itself is trellis::Trainer. Under mpirun every rank runs this
// with its share of the batch; rank 0 alone writes the run directory and stdout.
#include <Kokkos_Core.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cmath>
#include <cstdio>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <trellis/data/image_sets.hpp>
#include <trellis/data/locations.hpp>
#include <trellis/data/text_corpus.hpp>
#include <trellis/train/flags.hpp>
#include <trellis/train/run_directory.hpp>
#include <trellis/train/stop_signals.hpp>
#include <trellis/trellis.hpp>

namespace trellis_cli {

using trellis::flags::Flags;

/// Defaults per task and data set (printed by `trellis train --help`).
inline Flags task_defaults(std::string const& task, std::string const& data) {
  Flags f{{"dilation", "[1]"}, {"dropoutl", "0"},  {"emb-dropout", "0"}, {"aux", "0"},        {"aux-freq", "0"},
          {"n-experts", "0"},  {"alpha", "0"},     {"beta", "0"},        {"optim", "adam"},   {"wdecay", "0"},
          {"momentum", "0"},   {"when", "[]"},     {"gamma", "0.1"},     {"plateau-patience", "-1"},
          {"plateau-factor", "0.5"}, {"max-steps", "0"}, {"seed", "1111"}, {"checkpoint-minutes", "2"},
          {"wnorm", "true"}, {"log-every", "50"}, {"max-skipped-steps", "10"}, {"anneal", "0"}, {"init-std", "0.01"}, {"untied", "false"}};
  auto assign = [&f](Flags const& values) {
    for (auto const& [k, v] : values) f[k] = v;
  };
  if (task == "charlm") {
    // Sized for a short run on a small CPU (the demo), where more updates beat a bigger
    // model: few levels, no regularisation, and no weight norm (its gain starts at
    // ||v|| and Adam grows it too slowly for a short run); the learning rate decays
    // linearly over the end of the run. The weights start at N(0, 0.2), not the
    // reference's 0.01: a level passes its input on with a gain of about
    // std x sqrt(2q) / 4 (the gates halve it twice): at 0.01 each level shrinks it
    // twentyfold, and the model sat on the unigram plateau for as many hundreds of steps
    // as rounding noise decided; at 0.2 the gain is about 1 and it leaves early.
    assign({{"ninp", "64"}, {"nhid", "128"}, {"nout", "64"}, {"nlevels", "8"}, {"dilation", "[1]"},
              {"dropout", "0"}, {"dropouti", "0"}, {"dropouth", "0"}, {"wdrop", "0"}, {"lr", "0.01"},
              {"clip", "0.25"}, {"batch-size", "16"}, {"seq-len", "128"}, {"eval-batch-size", "32"},
              {"eval-minutes", "2"}, {"valid-tokens", "100000"}, {"anneal", "0.6"}, {"init-std", "0.2"}});
    f["wnorm"] = "false";
  } else if (task == "wordlm") {
    assign({{"ninp", "128"}, {"nhid", "256"}, {"nout", "128"}, {"nlevels", "16"}, {"dropout", "0.2"},
              {"dropouti", "0.2"}, {"dropouth", "0.1"}, {"wdrop", "0"}, {"emb-dropout", "0.05"}, {"lr", "0.002"},
              {"clip", "0.25"}, {"batch-size", "16"}, {"seq-len", "64"}, {"eval-batch-size", "16"},
              {"eval-minutes", "2"}, {"valid-tokens", "50000"}, {"plateau-patience", "1"}});
  } else {
    bool const rows = data == "fashion-row";
    // The reference's sequential-MNIST settings (row by row: 6 levels, dilation to 16).
    assign({{"ninp", rows ? "28" : "1"}, {"nhid", "120"}, {"nout", "10"}, {"nlevels", rows ? "6" : "11"},
              {"dropout", "0.1"}, {"dropouti", "0.2"}, {"dropouth", "0.2"}, {"wdrop", "0.1"}, {"lr", "0.004"},
              {"clip", "0.5"}, {"batch-size", "64"}, {"seq-len", "0"}, {"eval-batch-size", "500"},
              {"eval-minutes", "1000"}, {"valid-tokens", "0"}, {"plateau-patience", "1"}});
    f["dilation"] = rows ? "[1,1,2,4,8,16]" : "[1,1,2,4,8,16,32,64,128,256,512]";
  }
  return f;
}

inline std::string defaults_help() {
  std::ostringstream out;
  out << "Defaults per task (flags given on the command line override them; with --resume, the\n"
         "checkpoint's values are the defaults and a differing flag is an error):\n";
  for (auto const& [task, data] : std::vector<std::pair<std::string, std::string>>{
           {"charlm", "sotu"}, {"wordlm", "sotu"}, {"seqclass", "fashion-row"}, {"seqclass", "fashion-pixel"}}) {
    out << "  " << task << " --data " << data << ":";
    for (auto const& [k, v] : task_defaults(task, data)) out << " --" << k << " " << v;
    out << "\n";
  }
  return out.str();
}

inline void check_task_data(std::string const& task, std::string const& data) {
  static std::map<std::string, std::vector<std::string>> const allowed{
      {"charlm", {"sotu"}},
      {"wordlm", {"sotu"}},
      {"seqclass", {"fashion-row", "fashion-pixel", "fashion-permuted", "mnist-pixel", "mnist-permuted"}}};
  auto it = allowed.find(task);
  if (it == allowed.end()) throw trellis::invalid_argument("--task " + task + ": expected charlm, wordlm or seqclass");
  if (std::find(it->second.begin(), it->second.end(), data) == it->second.end()) {
    std::string names;
    for (auto const& n : it->second) names += " " + n;
    throw trellis::invalid_argument("--data " + data + ": task " + task + " takes one of:" + names);
  }
}

/// The run directory's log, echoed to stderr above the progress bar.
template <class... Parts>
void log(trellis::RunDirectory& run, Parts const&... parts) {
  std::ostringstream line;
  (line << ... << parts);
  run.log(line.str());
  std::fprintf(stderr, "\r\033[K%s\n", line.str().c_str());
}

/// The host threads a run uses, for its log: the space's, or on a one-thread space
/// the GEMMs' (trellis::blas::host_gemm_threads); nothing on a device.
template <class Exec>
std::string threads_note(Exec const& space) {
  if constexpr (!Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename Exec::memory_space>::accessible) {
    return "";
  } else {
    int const own = static_cast<int>(space.concurrency());
    int const gemm = trellis::blas::host_gemm_threads(space);
    if (own > 1) return " on " + std::to_string(own) + " threads";
    if (gemm > 1) return " on one thread, its GEMMs on " + std::to_string(gemm);
    return trellis::blas::serial_gemm_threads_supported ? " on one thread"
                                                        : " on one thread (built without OpenMP, GEMMs too)";
  }
}

/// curves.png beside curves.csv; warns once when gnuplot fails.
inline void plot(trellis::RunDirectory& run, std::string const& metric, bool& warned) {
  if (run.plot_curves(metric) || warned) return;
  warned = true;
  log(run, "warning: gnuplot failed; curves.png not written (install gnuplot-nox)");
}

inline trellis::data::ImageSplits load_images(std::string const& data, std::string const& root) {
  if (data.rfind("fashion", 0) == 0) return trellis::data::load_fashion_mnist(trellis::data::fashion_dir(root));
  return trellis::data::load_mnist_digits(trellis::data::mnist_dir(root));
}

struct TrainSettings {
  std::string task, data, run_dir, data_root;
  double minutes = 10;
  bool resume = false;
  bool fp64 = false;
  trellis::blas::MathMode math = trellis::blas::MathMode::strict;  ///< the core's GEMM precision (--tf32, --bf16)
  int recompute = 1;       ///< the core's level recomputation interval (1: off, 0: about sqrt(levels))
  Flags flags;  ///< every model and training flag, resolved
  trellis::Communicator* comm = &trellis::single_process();  ///< the ranks sharing the work
  trellis::JobPhases* phases = nullptr;                      ///< setting up, then running
  std::size_t bucket_bytes = std::size_t(25) << 20;          ///< data-parallel: gradient bucket size
};

/// The trainer's options from the flags, with the run's checkpoint and its metadata.
inline trellis::TrainerOptions trainer_options(TrainSettings const& s, std::string const& checkpoint) {
  auto o = trellis::flags::trainer_options(s.flags, s.minutes * 60);
  o.checkpoint_path = checkpoint;
  o.checkpoint_dtype = s.fp64 ? trellis::safetensors::dtype_of<double>() : trellis::safetensors::dtype_of<float>();
  o.configuration = {{"task", s.task}, {"data", s.data}};
  o.metadata["precision"] = s.fp64 ? "fp64" : "fp32";
  return o;
}

/// Log, curves (CSV and plot) and progress bar of rank 0's run directory.
template <class Exec, class Task>
trellis::TrainerCallbacks run_directory_callbacks(trellis::RunDirectory& run, Task& task, std::string const& metric,
                                                  bool& plot_warned, double& last_bar) {
  trellis::TrainerCallbacks callbacks;
  callbacks.log = [&run](std::string const& line) { log(run, line); };
  // Every row goes to disk at once, so that curves.csv never lags the checkpoint (a run
  // killed after a checkpoint would lose those rows; rows past it are dropped on resume).
  callbacks.curve = [&run, &metric, &plot_warned](trellis::CurveRow const& row) {
    run.add_curve_row(row);
    run.write_curves(metric);
    if (!std::isnan(row.valid)) plot(run, metric, plot_warned);
  };
  callbacks.progress = [&task, &last_bar](trellis::TrainerProgress const& p) {
    double const now = std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
    if (now - last_bar < 0.5) return;
    last_bar = now;
    std::fprintf(stderr, "\r\033[Kstep %ld | epoch %ld %ld/%ld | loss %.4f | %.0f %s/s | %s left", p.step, p.epoch,
                 p.batch_in_epoch, p.batches_per_epoch, p.window_loss, p.throughput, task.unit().c_str(),
                 trellis::Trainer<Exec, Task>::format_minutes(p.seconds_left).c_str());
    std::fflush(stderr);
  };
  return callbacks;
}

/// Trains `task` for the settings' minutes of training through trellis::Trainer, with
/// the run directory's log, curves and checkpoint, then scores the test split. Returns
/// the exit status: 0, or 128 + the signal that stopped it (after a checkpoint).
template <class Exec, class Task>
int train_loop(Exec const& space, Task& task, TrainSettings const& s) {
  std::optional<trellis::RunDirectory> dir;  // rank 0's alone
  if (s.comm->is_root()) dir.emplace(s.run_dir);
  std::string const ckpt = s.run_dir + "/checkpoint.safetensors";
  bool plot_warned = false;
  std::string const metric = task.metric();
  auto const options = trainer_options(s, ckpt);
  double last_bar = -1e9;
  trellis::TrainerCallbacks callbacks;
  if (dir) callbacks = run_directory_callbacks<Exec, Task>(*dir, task, metric, plot_warned, last_bar);
  std::optional<trellis::StopSignals> signals(std::in_place);  // while training: not while testing
  callbacks.stop_requested = signals->requested();
  trellis::Trainer<Exec, Task> trainer(space, task, options, callbacks);
  if (s.resume) {
    trainer.resume(ckpt);
    if (dir) dir->load_curves(trainer.step());
  }
  s.phases->setup_done();
  if (dir)
    log(*dir, "train ", s.task, " on ", s.data, " with ", Exec::name(), threads_note(space), ", ",
        s.fp64 ? "fp64" : "fp32",
        s.fp64 ? "" : trellis::blas::math_mode_note<Exec>(s.math), ", ", task.batches_per_epoch(),
        " batches per epoch, for ", s.minutes, " minutes of training",
        s.comm->size() > 1 ? "; data-parallel: " + s.comm->description() : "");
  if (trainer.run().stopped) {
    // A rank that was not signalled stops with another's: SIGTERM's status.
    bool const here = signals->signal() != 0;
    if (dir) {
      dir->write_curves(metric);
      log(*dir, "stopped by ", here ? signals->name() : "a signal to another rank", " at step ", trainer.step());
    }
    return here ? signals->exit_status() : 128 + SIGTERM;
  }
  signals.reset();
  double const test = task.evaluate("test");
  if (!dir) return 0;
  log(*dir, "test ", metric, " ", test);
  std::printf("test %s %.4f\n", metric.c_str(), test);
  return 0;
}

/// How the core computes, not what: math mode and level recomputation.
template <class Core>
void configure_core(Core& core, TrainSettings const& s) {
  core.set_math_mode(s.math);
  core.set_recompute_interval(s.recompute);
}

/// Builds the task named by the settings and calls f(task).
template <class Exec, class Scalar, class F>
void with_task(Exec const& space, TrainSettings const& s, F&& f) {
  if (trellis::flags::boolean(s.flags, "untied")) with_task<Exec, Scalar, trellis::Untied>(space, s, f);
  else with_task<Exec, Scalar, trellis::TiedAcrossDepth>(space, s, f);
}

template <class Exec, class Scalar, class WeightTying, class F>
void with_task(Exec const& space, TrainSettings const& s, F&& f) {
  // Named as the flag, before the data are read.
  trellis::batch_shard(trellis::flags::positive(s.flags, "batch-size"), *s.comm, "--batch-size");
  if (s.task == "charlm" || s.task == "wordlm") {
    bool const words = s.task == "wordlm";
    auto options = trellis::flags::language_task_options(s.flags);
    options.gradient_bucket_bytes = s.bucket_bytes;
    if (words && options.seq_len <= options.model.core.nlevels)
      throw trellis::invalid_argument("--seq-len " + std::to_string(options.seq_len) +
                                      ": wordlm scores the positions after the first nlevels (" +
                                      std::to_string(options.model.core.nlevels) +
                                      ") of each window, so seq-len must exceed nlevels");
    auto const level = words ? trellis::data::TokenLevel::words : trellis::data::TokenLevel::characters;
    auto corpus = trellis::data::load_sotu(trellis::data::sotu_dir(s.data_root), level);
    trellis::LanguageTask<Exec, Scalar, WeightTying> task(space, options, std::move(corpus), *s.comm);
    configure_core(task.model().core(), s);
    f(task);
  } else {
    auto options = trellis::flags::classifier_task_options(s.flags, s.data);
    options.gradient_bucket_bytes = s.bucket_bytes;
    trellis::ClassifierTask<Exec, Scalar, WeightTying> task(space, options, load_images(s.data, s.data_root), *s.comm);
    configure_core(task.model().core(), s);
    f(task);
  }
}

/// Scores a checkpoint on a split; prints "<split> <metric> X".
template <class Exec, class Scalar>
void evaluate_checkpoint(Exec const& space, TrainSettings const& s, std::string const& ckpt, std::string const& split) {
  auto file = trellis::safetensors::read(ckpt);
  // Scoring starts every stream from zero: the training rows' carried state is not
  // needed, nor the training batch (which may not divide among these ranks).
  file.tensors.erase("state.h");
  file.tensors.erase("state.c");
  auto settings = s;
  settings.flags["batch-size"] = std::to_string(s.comm->size());
  with_task<Exec, Scalar>(space, settings, [&](auto& task) {
    using Task = std::remove_reference_t<decltype(task)>;
    task.load(file, ckpt, trellis::Trainer<Exec, Task>::checkpoint_extras());
    s.phases->setup_done();
    double const value = task.evaluate(split);
    if (s.comm->is_root()) std::printf("%s %s %.4f\n", split.c_str(), task.metric().c_str(), value);
  });
}

}  // namespace trellis_cli
