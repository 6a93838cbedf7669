#pragma once
// Training configured by name: the reference's argparse flags (dashes for underscores)
// as strings, turned into the library's task and trainer options with errors that name
// the flag and its value. The trellis program's `train` is built on this; a program of
// one's own that takes the same flags (from a file, an argument list) can be too.
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <trellis/blas/gemm.hpp>
#include <trellis/core/shape.hpp>
#include <trellis/detail/int_list.hpp>
#include <trellis/errors.hpp>
#include <trellis/train/classifier_task.hpp>
#include <trellis/train/language_task.hpp>
#include <trellis/train/optimizers.hpp>
#include <trellis/train/trainer.hpp>

namespace trellis::flags {

/// Flag name (without the dashes) to its value as given.
using Flags = std::map<std::string, std::string>;

/// A flag's name and a one-line description, for help texts.
struct FlagInfo {
  char const* name;
  char const* help;
};

namespace detail {
struct FlagTables {
  std::vector<FlagInfo> model, training;
};

inline FlagTables const& flag_tables() {
  static FlagTables const tables{
      {
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
      },
      {
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
          {"max-skipped-steps", "a step whose gradients are not finite is skipped; after this many in a row the run stops, its last checkpoint kept"},
      }};
  return tables;
}
}  // namespace detail

/// The flags that define the model.
inline std::vector<FlagInfo> const& model_flags() { return detail::flag_tables().model; }

/// The flags that define the optimisation and its cadences.
inline std::vector<FlagInfo> const& training_flags() { return detail::flag_tables().training; }

// ---------------------------------------------------------------- typed values

inline double number(Flags const& f, std::string const& name) {
  auto const& v = f.at(name);
  try {
    std::size_t used = 0;
    double const x = std::stod(v, &used);
    if (used != v.size() || !std::isfinite(x)) throw std::invalid_argument(name);
    return x;
  } catch (std::exception const&) {
    throw invalid_argument("--" + name + " " + v + ": not a number");
  }
}

/// An integer that fits an int (every integer flag is a count, a size or a seed that does).
inline long integer(Flags const& f, std::string const& name) {
  double const x = number(f, name);
  if (x != std::floor(x)) throw invalid_argument("--" + name + " " + f.at(name) + ": not an integer");
  if (!(std::abs(x) <= double(std::numeric_limits<int>::max())))
    throw invalid_argument("--" + name + " " + f.at(name) + ": out of range (at most " +
                           std::to_string(std::numeric_limits<int>::max()) + " in magnitude)");
  return long(x);
}

inline std::vector<int> list(Flags const& f, std::string const& name) {
  auto const v = trellis::detail::parse_int_list(f.at(name));
  if (!v) throw invalid_argument("--" + name + " " + f.at(name) + ": expected a list of integers such as [1,2,4]");
  return *v;
}

inline bool boolean(Flags const& f, std::string const& name) {
  auto const& v = f.at(name);
  if (v == "true" || v == "1") return true;
  if (v == "false" || v == "0") return false;
  throw invalid_argument("--" + name + " " + v + ": expected true or false");
}

/// A dropout rate: in [0, 1).
inline double probability(Flags const& f, std::string const& name) {
  double const p = number(f, name);
  if (!(p >= 0 && p < 1)) throw invalid_argument("--" + name + " " + f.at(name) + ": not in [0, 1)");
  return p;
}

inline long positive(Flags const& f, std::string const& name) {
  long const v = integer(f, name);
  if (v < 1) throw invalid_argument("--" + name + " " + f.at(name) + ": must be at least 1");
  return v;
}

/// The flags of a run: `defaults`, then those a checkpoint was trained with (its
/// "flag.NAME" metadata, when `checkpoint` is given), then `given`. Resuming
/// (`must_match`), a given flag that differs from the checkpoint's is an error, except
/// those that control the run (how long, how often and how much to validate): what
/// defines the model and its optimisation may not change half way.
inline Flags resolve(Flags defaults, std::map<std::string, std::string> const* checkpoint,
                     std::string const& checkpoint_path, Flags const& given, bool must_match) {
  static std::set<std::string> const run_control{"max-steps", "eval-minutes", "checkpoint-minutes",
                                                 "log-every", "valid-tokens", "eval-batch-size",
                                                 "max-skipped-steps"};
  if (checkpoint)
    for (auto& [k, v] : defaults) {
      auto it = checkpoint->find("flag." + k);
      if (it != checkpoint->end()) v = it->second;
    }
  for (auto const& [k, v] : given) {
    if (checkpoint && must_match && defaults[k] != v && !run_control.count(k))
      throw invalid_argument("--" + k + " " + v + ": the checkpoint " + checkpoint_path + " was trained with --" + k +
                             " " + defaults[k] + " (drop the flag, or start a new run directory)");
    defaults[k] = v;
  }
  return defaults;
}

// ---------------------------------------------------------------- options

/// The core's GEMM precision from --tf32 and --bf16 (one at most; bf16 in fp32 only).
inline blas::MathMode math_mode(bool tf32, bool bf16, bool fp64) {
  if (tf32 && bf16) throw invalid_argument("--tf32 and --bf16: give one of them at most");
  if (bf16 && fp64) throw invalid_argument("--bf16: applies to --precision fp32 only");
  return tf32 ? blas::MathMode::tf32 : bf16 ? blas::MathMode::bf16 : blas::MathMode::strict;
}

/// The core's shape from ninp, nhid, nout, nlevels, dilation, aux-freq and wnorm.
inline TrellisShape core_shape(Flags const& f, char const* call) {
  TrellisShape s;
  s.ninp = int(positive(f, "ninp"));
  s.nhid = int(integer(f, "nhid"));
  s.nout = int(positive(f, "nout"));
  s.nlevels = int(positive(f, "nlevels"));
  s.dilation = list(f, "dilation");
  s.aux_frequency = int(integer(f, "aux-freq"));
  s.weight_norm = boolean(f, "wnorm");
  s.validate(call);
  return s;
}

inline OptimizerKind optimizer_kind(Flags const& f) {
  auto const& name = f.at("optim");
  if (name == "adam" || name == "adamw") return OptimizerKind::adam;
  if (name == "sgd") return OptimizerKind::sgd;
  throw invalid_argument("--optim " + name + ": expected adam, adamw or sgd");
}

inline OptimizerOptions optimizer_options(Flags const& f) {
  OptimizerOptions o;
  o.lr = number(f, "lr");
  o.weight_decay = number(f, "wdecay");
  o.momentum = number(f, "momentum");
  o.decoupled = f.at("optim") == "adamw";
  return o;
}

namespace detail {
/// What every task shares: the core, its dropouts and initialisation, the optimiser.
template <class Options, class Config>
void common_task_options(Flags const& f, Options& o, Config& c) {
  c.core = core_shape(f, "trellis train");
  c.dropout = probability(f, "dropout");
  c.dropouti = probability(f, "dropouti");
  c.dropouth = probability(f, "dropouth");
  c.wdrop = probability(f, "wdrop");
  c.init_std = number(f, "init-std");
  if (!(c.init_std > 0)) throw invalid_argument("--init-std " + f.at("init-std") + ": must be positive");
  o.optimizer = optimizer_kind(f);
  o.optimizer_options = optimizer_options(f);
  o.clip = number(f, "clip");
  o.batch_size = positive(f, "batch-size");
  o.eval_batch_size = positive(f, "eval-batch-size");
  o.seed = std::uint64_t(integer(f, "seed"));
}
}  // namespace detail

inline LanguageTaskOptions language_task_options(Flags const& f) {
  LanguageTaskOptions o;
  auto& c = o.model;
  detail::common_task_options(f, o, c);
  c.n_experts = int(integer(f, "n-experts"));
  c.dropoutl = probability(f, "dropoutl");
  c.emb_dropout = probability(f, "emb-dropout");
  c.aux = number(f, "aux");
  c.alpha = number(f, "alpha");
  c.beta = number(f, "beta");
  o.seq_len = positive(f, "seq-len");
  o.valid_tokens = integer(f, "valid-tokens");
  return o;
}

/// `data` names how images become sequences: "...-row" row by row (28 values per
/// step), otherwise pixel by pixel; "...-permuted" in a fixed permutation of the seed.
inline ClassifierTaskOptions classifier_task_options(Flags const& f, std::string const& data) {
  ClassifierTaskOptions o;
  detail::common_task_options(f, o, o.model);
  bool const rows = data.size() >= 4 && data.compare(data.size() - 4, 4, "-row") == 0;
  long const want = rows ? 28 : 1;
  if (o.model.core.ninp != want)
    throw invalid_argument("--ninp " + std::to_string(o.model.core.ninp) + ": --data " + data + " feeds " +
                           std::to_string(want) + " value(s) per step");
  o.sequence = rows ? ImageSequence::rows : ImageSequence::pixels;
  if (data.find("permuted") != std::string::npos) o.permutation = pixel_permutation(784, o.seed);
  o.valid_images = integer(f, "valid-tokens");
  return o;
}

/// The trainer's budget, cadences and LR schedule; the checkpoint's path, dtype and
/// metadata are the caller's. Every flag goes into the checkpoint's metadata as
/// "flag.NAME", so that a resumed run can be checked against it.
inline TrainerOptions trainer_options(Flags const& f, double max_seconds) {
  TrainerOptions o;
  o.max_seconds = max_seconds;
  o.max_steps = integer(f, "max-steps");
  o.anneal = number(f, "anneal");
  if (!(o.anneal >= 0 && o.anneal <= 1)) throw invalid_argument("--anneal " + f.at("anneal") + ": not in [0, 1]");
  o.eval_every_seconds = number(f, "eval-minutes") * 60;
  o.checkpoint_every_seconds = number(f, "checkpoint-minutes") * 60;
  o.log_every = positive(f, "log-every");
  if (f.count("max-skipped-steps")) o.max_skipped_steps = positive(f, "max-skipped-steps");
  o.seed = std::uint64_t(integer(f, "seed"));
  auto const when = list(f, "when");
  long const patience = integer(f, "plateau-patience");
  if (!when.empty()) {
    o.schedule.kind = LrSchedule::Kind::steps;
    o.schedule.milestones = when;
    o.schedule.gamma = number(f, "gamma");
  } else if (patience >= 0) {
    o.schedule.kind = LrSchedule::Kind::plateau;
    o.schedule.patience = int(patience);
    o.schedule.factor = number(f, "plateau-factor");
  }
  for (auto const& [k, v] : f) o.metadata["flag." + k] = v;
  return o;
}

}  // namespace trellis::flags
