// The trellis program (docs/cli.md). Results go to stdout, progress
// and logs to stderr; errors to stderr with a non-zero exit status, naming the file,
// tensor or flag at fault.
//
//   trellis from-rnn --state-dict R.safetensors --cell lstm|rnn-tanh|rnn-relu
//                    --history L --input X.safetensors --output Y.safetensors
//   trellis run --model M.safetensors --input X.safetensors --output Y.safetensors
//   trellis train --task charlm|wordlm|seqclass --data NAME --run-dir DIR --minutes M [flags] [--resume]
//   trellis eval --checkpoint C.safetensors --data NAME [--split valid|test]
//   trellis generate --checkpoint C.safetensors --prompt TEXT --tokens K [--temperature T] [--top-k K]
//                    [--top-p P] [--seed S] [--streams N]
//   mpirun -np P trellis train|eval ...   (data-parallel over P ranks; output from rank 0)
#include <CLI/CLI.hpp>
#include <Kokkos_Core.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>
#include <set>
#include <string>

#include <trellis/io/run_model.hpp>
#include <trellis/trellis.hpp>

#if defined(TRELLIS_HAS_MPI)
#include <trellis/mpi/communicator.hpp>
#include <trellis/mpi/environment.hpp>
constexpr bool with_mpi = true;
#else
constexpr bool with_mpi = false;
#endif

#include "train.hpp"

namespace {

struct Common {
  std::string backend;
  std::string precision = "fp32";
  int threads = 0;
  bool tf32 = false;
  bool bf16 = false;
  bool keep_subnormals = false;
  int recompute = 1;
  double bucket_mb = 25;
  bool ordered_sums = false;
  trellis::Communicator* comm = &trellis::single_process();
  trellis::JobPhases* phases = nullptr;

  /// The commands that do not share their work refuse to run as several ranks.
  void alone(char const* command) const {
    if (comm->size() > 1)
      throw trellis::invalid_argument(std::string(command) + " runs in one process: start it without mpirun");
  }

  trellis::blas::MathMode math_mode() const { return trellis::flags::math_mode(tf32, bf16, precision == "fp64"); }
};

struct FromRnn {
  std::string state_dict, cell, input, output;
  int history = 0;
};

void from_rnn(FromRnn const& a, Common const& common) {
  common.alone("from-rnn");
  auto const cell = trellis::parse_cell(a.cell);
  auto const sd = trellis::safetensors::read(a.state_dict);
  auto const w = trellis::recurrent_from_pytorch(sd, cell, a.state_dict);
  auto const input = trellis::safetensors::read(a.input);
  trellis::with_backend(common.backend, [&]<class Exec>() {
    trellis::with_precision(common.precision, [&](auto scalar) {
      auto const start = std::chrono::steady_clock::now();
      auto const out = trellis::run_recurrent_file<Exec, decltype(scalar)>(Exec(), w, a.history, input, a.input,
                                                                            common.math_mode());
      double const seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      trellis::safetensors::write(a.output, out);
      auto const& y = out.tensors.at("y").shape;
      std::fprintf(stderr, "trellis from-rnn: %s, %d layers, hidden %d, history %d: %d levels on %s in %.3f s\n",
                   a.cell.c_str(), w.layers(), w.hidden_size, a.history,
                   trellis::trellis_shape_for(w, a.history).nlevels, Exec::name(), seconds);
      std::printf("wrote y (%ld, %ld, %ld) to %s\n", long(y[0]), long(y[1]), long(y[2]), a.output.c_str());
    });
  });
}

struct RunCommand {
  std::string model, input, output;
};

void run(RunCommand const& a, Common const& common) {
  common.alone("run");
  auto const model = trellis::safetensors::read(a.model);
  auto const input = trellis::safetensors::read(a.input);
  trellis::with_backend(common.backend, [&]<class Exec>() {
    trellis::with_precision(common.precision, [&](auto scalar) {
      auto const out =
          trellis::run_model_file<Exec, decltype(scalar)>(Exec(), model, a.model, input, a.input, common.math_mode());
      trellis::safetensors::write(a.output, out);
      auto const name = out.has("log_probs") ? "log_probs" : "out";
      auto const& shape = out.tensors.at(name).shape;
      std::printf("wrote %s (%ld, %ld, %ld), h, c%s to %s\n", name, long(shape[0]), long(shape[1]), long(shape[2]),
                  out.has("aux") ? ", aux" : "", a.output.c_str());
    });
  });
}

struct TrainCommand {
  std::string task, data, run_dir, data_dir, checkpoint, split = "test";
  double minutes = 10;
  bool resume = false;
  trellis_cli::Flags values;            ///< as given on the command line
  std::map<std::string, CLI::Option*> options;
  CLI::Option* wnorm_off = nullptr;  ///< --no-wnorm; with --wnorm it gives the flag "wnorm"
};

/// The task's defaults, (resuming or evaluating) the checkpoint's, then the command line's.
trellis_cli::Flags resolve_flags(TrainCommand const& t, trellis::safetensors::File const* checkpoint,
                                 std::string const& checkpoint_path, bool allow_override) {
  trellis_cli::Flags given;
  for (auto const& [k, opt] : t.options)
    if (opt->count() > 0 || (k == "wnorm" && t.wnorm_off && t.wnorm_off->count() > 0)) given[k] = t.values.at(k);
  return trellis::flags::resolve(trellis_cli::task_defaults(t.task, t.data), checkpoint ? &checkpoint->metadata : nullptr,
                                 checkpoint_path, given, !allow_override);
}

/// What train and eval share: the task, the data, the math, the ranks.
trellis_cli::TrainSettings settings(TrainCommand const& t, Common const& common) {
  trellis_cli::TrainSettings s;
  s.task = t.task;
  s.data = t.data;
  s.data_root = trellis::data::data_root(t.data_dir);
  s.math = common.math_mode();
  s.comm = common.comm;
  s.phases = common.phases;
  return s;
}

int train(TrainCommand& t, Common const& common) {
  trellis_cli::check_task_data(t.task, t.data);
  if (!(t.minutes > 0)) throw trellis::invalid_argument("--minutes " + std::to_string(t.minutes) + ": must be positive");
  auto s = settings(t, common);
  s.run_dir = t.run_dir;
  s.minutes = t.minutes;
  s.resume = t.resume;
  s.fp64 = common.precision == "fp64";
  s.recompute = common.recompute;
  s.bucket_bytes = std::size_t(common.bucket_mb * double(1 << 20));
  std::string const ckpt = t.run_dir + "/checkpoint.safetensors";
  if (t.resume) {
    auto const file = trellis::safetensors::read(ckpt);
    auto const task = file.metadata.count("task") ? file.metadata.at("task") : "";
    auto const data = file.metadata.count("data") ? file.metadata.at("data") : "";
    if (task != t.task || data != t.data)
      throw trellis::invalid_argument("--resume: " + ckpt + " is a " + task + " run on " + data + ", not " + t.task +
                                      " on " + t.data);
    s.flags = resolve_flags(t, &file, ckpt, false);
  } else {
    if (std::filesystem::exists(ckpt))
      throw trellis::invalid_argument("--run-dir " + t.run_dir + ": holds a checkpoint already; pass --resume to continue it, or choose another directory");
    s.flags = resolve_flags(t, nullptr, "", true);
  }
  int status = 0;
  trellis::with_backend(common.backend, [&]<class Exec>() {
    trellis::with_precision(common.precision, [&](auto scalar) {
      Exec space;
      trellis_cli::with_task<Exec, decltype(scalar)>(space, s,
                                                     [&](auto& task) { status = trellis_cli::train_loop(space, task, s); });
    });
  });
  return status;
}

void evaluate(TrainCommand& t, Common& common, bool precision_given) {
  auto const file = trellis::safetensors::read(t.checkpoint);
  if (!file.metadata.count("task") || !file.metadata.count("data"))
    throw trellis::file_error(t.checkpoint + ": not a checkpoint of trellis train (no 'task' and 'data' in its metadata)");
  t.task = file.metadata.at("task");
  if (file.metadata.at("data") != t.data)
    throw trellis::invalid_argument("--data " + t.data + ": " + t.checkpoint + " was trained on " + file.metadata.at("data"));
  if (t.split != "valid" && t.split != "test")
    throw trellis::invalid_argument("--split " + t.split + ": expected valid or test");
  auto s = settings(t, common);
  s.flags = resolve_flags(t, &file, t.checkpoint, true);
  if (!precision_given && file.metadata.count("precision")) common.precision = file.metadata.at("precision");
  trellis::with_backend(common.backend, [&]<class Exec>() {
    trellis::with_precision(common.precision, [&](auto scalar) {
      Exec space;
      trellis_cli::evaluate_checkpoint<Exec, decltype(scalar)>(space, s, t.checkpoint, t.split);
    });
  });
}

struct GenerateCommand {
  std::string checkpoint;
  trellis::GenerationOptions options;
};

void generate(GenerateCommand const& g, Common& common, bool precision_given) {
  common.alone("generate");
  auto const file = trellis::safetensors::read(g.checkpoint);
  if (!precision_given && file.metadata.count("precision")) common.precision = file.metadata.at("precision");
  trellis::with_backend(common.backend, [&]<class Exec>() {
    trellis::with_precision(common.precision, [&](auto scalar) {
      auto const r =
          trellis::generate_text<Exec, decltype(scalar)>(Exec(), file, g.checkpoint, g.options, common.math_mode());
      std::fprintf(stderr, "trellis generate: a prompt of %ld %s (%ld outside the vocabulary, read as <unk>); %ld x %ld "
                   "by exact streaming on %s in %.3f s\n", r.prompt_tokens, r.level.c_str(), r.unknown,
                   long(r.continuations.size()), g.options.tokens, Exec::name(), r.seconds);
      for (std::size_t n = 0; n < r.continuations.size(); ++n)
        std::printf("%s%s\n", r.continuations.size() > 1 ? ("[stream " + std::to_string(n) + "]\n").c_str() : "",
                    r.continuations[n].c_str());
    });
  });
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"trellis: Trellis Networks on Kokkos"};
  app.require_subcommand(1);
  Common common;
  common.backend = trellis::default_backend();
  auto add_common = [&](CLI::App* sub) {
    sub->add_option("--backend", common.backend, "serial|openmp|cuda (default: the best enabled)")
        ->capture_default_str();
    sub->add_option("--precision", common.precision, "fp32|fp64")->capture_default_str();
    sub->add_option("--threads", common.threads, "host threads: the OpenMP backend's, or the GEMMs' on serial (default: OMP_NUM_THREADS, else every core)");
    sub->add_flag("--tf32", common.tf32, "allow TF32 tensor cores on CUDA in fp32");
    sub->add_flag("--keep-subnormals", common.keep_subnormals,
                  "keep subnormal numbers (below about 1.2e-38 in fp32) instead of flushing them to zero, "
                  "which is faster on x86 and changes results only where they occur");
    sub->add_flag("--bf16", common.bf16,
                  "bfloat16 products, fp32 sums, in the core's GEMMs in fp32: AMX tiles on CPUs "
                  "that have AMX-BF16 (else strict fp32 there), bf16 tensor cores on CUDA");
  };
  // Training's memory against time; results are the same.
  auto add_recompute = [&](CLI::App* sub) {
    sub->add_option("--recompute", common.recompute,
                    "level recomputation: keep every K-th level, recompute the rest in backward "
                    "(1: keep all, 0: about sqrt(nlevels))")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
  };

  FromRnn fr;
  auto* from_rnn_cmd = app.add_subcommand(
      "from-rnn", "build the sparse TrellisNet equal to a PyTorch nn.LSTM / nn.RNN truncated to --history steps, run it on x, write y");
  from_rnn_cmd->add_option("--state-dict", fr.state_dict, "the nn.LSTM / nn.RNN state_dict as safetensors")->required();
  from_rnn_cmd->add_option("--cell", fr.cell, "lstm|rnn-tanh|rnn-relu")->required()->check(
      CLI::IsMember({"lstm", "rnn-tanh", "rnn-relu"}));
  from_rnn_cmd->add_option("--history", fr.history, "L: the truncation length")->required()->check(CLI::PositiveNumber);
  from_rnn_cmd->add_option("--input", fr.input, "safetensors with x (T, N, input)")->required();
  from_rnn_cmd->add_option("--output", fr.output, "safetensors to write y (T, N, hidden) to")->required();
  add_common(from_rnn_cmd);

  RunCommand rc;
  auto* run_cmd = app.add_subcommand(
      "run", "the forward pass of a core (x, h, c -> out, h, c, aux) or a language model (tokens -> log_probs, h, c)");
  run_cmd->add_option("--model", rc.model, "safetensors in the reference's names; a language model when its metadata has ntoken")
      ->required();
  run_cmd->add_option("--input", rc.input, "safetensors with x (N, ninp, L) [h, c (N, q, 1)], or tokens (N, L) [h, c]")
      ->required();
  run_cmd->add_option("--output", rc.output, "safetensors to write the outputs to")->required();
  add_common(run_cmd);

  TrainCommand tr;
  auto add_model_flags = [&](CLI::App* sub) {
    for (auto const* list : {&trellis::flags::model_flags(), &trellis::flags::training_flags()})
      for (auto const& info : *list) {
        if (std::string(info.name) == "wnorm" || std::string(info.name) == "untied") continue;
        // As argparse: a flag given twice takes its last value.
        tr.options[info.name] = sub->add_option(std::string("--") + info.name, tr.values[info.name], info.help)
                                    ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
      }
    auto* wn = sub->add_flag_callback("--wnorm", [&] { tr.values["wnorm"] = "true"; }, "weight normalisation on");
    auto* nwn = sub->add_flag_callback("--no-wnorm", [&] { tr.values["wnorm"] = "false"; }, "weight normalisation off");
    wn->excludes(nwn);
    tr.options["wnorm"] = wn;
    tr.wnorm_off = nwn;
    tr.options["untied"] = sub->add_flag_callback("--untied", [&] { tr.values["untied"] = "true"; },
                                                  "one kernel per level: the gated TCN of the paper's comparison");
    sub->add_option("--data-dir", tr.data_dir,
                    "where scripts/fetch-data put the data sets (default: $TRELLIS_DATA or ~/.cache/trellis)");
  };
  auto* train_cmd = app.add_subcommand("train", "train a TrellisNet on a real data set");
  train_cmd->add_option("--task", tr.task, "charlm|wordlm|seqclass")->required();
  train_cmd->add_option("--data", tr.data,
                        "sotu (charlm, wordlm); fashion-row, fashion-pixel, fashion-permuted, mnist-pixel, mnist-permuted (seqclass)")
      ->required();
  train_cmd->add_option("--run-dir", tr.run_dir, "directory for curves.csv, curves.png, checkpoint.safetensors, log.txt")
      ->required();
  train_cmd->add_option("--minutes", tr.minutes, "training time (not counting data preparation, validation, checkpoints)")
      ->capture_default_str();
  train_cmd->add_flag("--resume", tr.resume, "continue from the run directory's checkpoint");
  add_model_flags(train_cmd);
  add_common(train_cmd);
  add_recompute(train_cmd);
  train_cmd->add_option("--bucket-mb", common.bucket_mb,
                        "data-parallel (mpirun): gradients are summed over the ranks in buckets of this many MiB, "
                        "each started as soon as backward has finished it")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  train_cmd->add_flag("--deterministic-sums", common.ordered_sums,
                      "data-parallel: sum gradients in rank order, so that two runs with the same number of ranks "
                      "give the same bits whatever algorithm the MPI picks");
  train_cmd->footer(trellis_cli::defaults_help());

  auto* eval_cmd = app.add_subcommand("eval", "score a checkpoint of trellis train");
  eval_cmd->add_option("--checkpoint", tr.checkpoint, "checkpoint.safetensors of a run")->required();
  eval_cmd->add_option("--data", tr.data, "the data set it was trained on")->required();
  eval_cmd->add_option("--split", tr.split, "valid|test")->capture_default_str();
  eval_cmd->add_option("--data-dir", tr.data_dir,
                       "where scripts/fetch-data put the data sets (default: $TRELLIS_DATA or ~/.cache/trellis)");
  eval_cmd->add_option("--eval-batch-size", tr.values["eval-batch-size"], "batch size of evaluation");
  tr.options["eval-batch-size"] = eval_cmd->get_option("--eval-batch-size");
  add_common(eval_cmd);

  GenerateCommand gen;
  auto& go = gen.options;
  auto* gen_cmd = app.add_subcommand("generate", "continue a prompt with a charlm or wordlm checkpoint, one exact "
                                                 "streaming step per token; the text goes to stdout");
  gen_cmd->add_option("--checkpoint", gen.checkpoint, "checkpoint.safetensors of a charlm or wordlm run")->required();
  gen_cmd->add_option("--prompt", go.prompt, "text to continue; empty: start a new document from the zero state");
  gen_cmd->add_option("--tokens", go.tokens, "tokens (characters or words) to generate")->required();
  gen_cmd->add_option("--temperature", go.sampling.temperature, "divides the log-probabilities; 0: greedy")
      ->capture_default_str();
  gen_cmd->add_option("--top-k", go.sampling.top_k, "draw from the K most likely tokens (0: all)")->capture_default_str();
  gen_cmd->add_option("--top-p", go.sampling.top_p, "draw from the most likely tokens holding probability P (nucleus)")
      ->capture_default_str();
  gen_cmd->add_option("--seed", go.seed, "the generator's seed: the same seed gives the same text")->capture_default_str();
  gen_cmd->add_option("--streams", go.streams, "independent continuations, generated together")->capture_default_str();
  add_common(gen_cmd);

  try {
    app.parse(argc, argv);
  } catch (CLI::ParseError const& e) {
    return app.exit(e);
  }
  trellis::flush_subnormals(!common.keep_subnormals);
#if defined(TRELLIS_HAS_MPI)
  // A rank of an MPI job (mpirun, srun) trains data-parallel; started by hand, alone.
  std::optional<trellis::mpi::Environment> mpi;
  if (trellis::mpi::launched_by_mpi()) {
    mpi.emplace(argc, argv);
    common.comm = &trellis::mpi::world(common.ordered_sums);
  }
#endif
  auto& comm = *common.comm;
  if (auto const why = trellis::missing_ranks(comm.size(), with_mpi); !why.empty()) {
    std::fprintf(stderr, "trellis: %s\n", why.c_str());
    return 1;
  }
  trellis::JobPhases phases(comm);
  common.phases = &phases;
  // The OpenMP runtime read its variables when the program loaded: with OMP_PROC_BIND
  // unset it binds no thread, which is what this program wants on shared machines.
  // Saying so spares every command Kokkos' advice about binding.
  if (!std::getenv("OMP_PROC_BIND")) setenv("OMP_PROC_BIND", "false", 0);
  trellis::initialize_kokkos(common.threads, comm.size() > 1);
  // On Serial the GEMMs still use the cores.
  trellis::blas::set_serial_gemm_threads(
      common.threads > 0 ? common.threads : trellis::default_host_threads());
  int status = 0;
  try {
    if (*from_rnn_cmd) from_rnn(fr, common);
    if (*run_cmd) run(rc, common);
    if (*train_cmd) status = train(tr, common);
    if (*eval_cmd) evaluate(tr, common, eval_cmd->get_option("--precision")->count() > 0);
    if (*gen_cmd) generate(gen, common, gen_cmd->get_option("--precision")->count() > 0);
  } catch (std::exception const& e) {
    std::fprintf(stderr, "trellis %s: %s%s\n", app.get_subcommands().front()->get_name().c_str(),
                 phases.rank_prefix().c_str(), e.what());
    std::fflush(stderr);
    status = 1;
    phases.failed(e);
  }
  Kokkos::finalize();
  return status;
}
