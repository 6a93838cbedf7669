// What data-parallel training costs, run as `mpirun -np P trellis_mpi_bench` (or alone
// for one process):
//   sum/<mode>/<bytes>   the group's sum of a float buffer from 4 KiB to 256 MiB, by
//                        MPI_Iallreduce and in rank order (bench/mpi_model.py fits
//                        latency and bandwidth to it);
//   train_step/<model>   a language model's optimiser step on this rank's share of the
//                        global batch: tokens/s of the group, and beside it the time
//                        of one sum of the whole gradient and the step's compute alone
//                        (the same step on this rank's rows, without the group).
// Every rank runs every iteration (fixed counts, so that none waits on another in a
// sum); an iteration's time is the slowest rank's; rank 0 alone reports.
#include <benchmark/benchmark.h>
#include <mpi.h>

#include <Kokkos_Core.hpp>

#include <algorithm>
#include <chrono>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <trellis/mpi/communicator.hpp>
#include <trellis/mpi/environment.hpp>
#include <trellis/trellis.hpp>
#include <trellis/version.hpp>

namespace {

using Exec = Kokkos::DefaultExecutionSpace;
using Scalar = float;

trellis::mpi::Communicator& world() { return trellis::mpi::world(); }
trellis::mpi::Communicator& world_in_rank_order() { return trellis::mpi::world(true); }

/// The slowest rank's seconds since t0.
double group_seconds(std::chrono::steady_clock::time_point t0) {
  double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return t;
}

void group_sum(benchmark::State& state, bool rank_order, long bytes) {
  auto& comm = rank_order ? world_in_rank_order() : world();
  std::size_t const n = std::size_t(bytes) / sizeof(float);
  std::vector<float> buffer(n, 1.0f);
  comm.barrier();
  for (auto _ : state) {
    auto const t0 = std::chrono::steady_clock::now();
    comm.sum(buffer.data(), n, trellis::Element::f32);
    state.SetIterationTime(group_seconds(t0));
  }
  state.SetBytesProcessed(std::int64_t(state.iterations()) * bytes);
  state.counters["bytes"] = double(bytes);
  state.counters["ranks"] = comm.size();
}

struct Model {
  char const* name;
  long batch, seq_len, ntoken;
  trellis::TrellisShape core;
  int iterations;
};

std::vector<Model> models() {
  return {
      // The SOTU demo's character model (the trellis program's charlm defaults).
      {"sotu-charlm", 16, 128, 96, {.ninp = 64, .nhid = 128, .nout = 64, .nlevels = 8, .dilation = {1},
                                    .weight_norm = false},
       20},
      // charptb-cpu's core (bench/bench_trellis.cpp) under a character vocabulary.
      {"charptb-cpu", 24, 140, 50, {.ninp = 200, .nhid = 1050, .nout = 200, .nlevels = 4, .dilation = {1}}, 3},
  };
}

trellis::data::Corpus random_corpus(Model const& m) {
  trellis::data::Corpus c;
  c.level = trellis::data::TokenLevel::characters;
  for (long v = 0; v < m.ntoken; ++v) c.vocabulary.push_back(std::string(1, char(32 + v)));
  std::mt19937_64 rng(3);
  std::uniform_int_distribution<int> token(0, int(m.ntoken) - 1);
  long const tokens = m.batch * (m.seq_len * (m.iterations + 2) + 1);
  for (long i = 0; i < tokens; ++i) c.train.push_back(token(rng));
  c.valid = c.test = std::vector<std::int32_t>(c.train.begin(), c.train.begin() + 4 * m.seq_len);
  return c;
}

using Task = trellis::LanguageTask<Exec, Scalar>;

std::unique_ptr<Task> make_task(Model const& m, trellis::Communicator& comm, long batch) {
  trellis::LanguageTaskOptions o;
  o.model.core = m.core;
  o.model.dropout = o.model.dropouti = o.model.dropouth = 0.1;
  o.clip = 0.25;
  o.batch_size = batch;
  o.seq_len = m.seq_len;
  o.eval_batch_size = 1;
  return std::make_unique<Task>(Exec(), o, random_corpus(m), comm);
}

/// Median of `reps` group-timed calls of f.
template <class F>
double median_seconds(int reps, F&& f) {
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    world().barrier();
    auto const t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(group_seconds(t0));
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

void train_step(benchmark::State& state, Model const& m) {
  auto& comm = world();
  auto task = make_task(m, comm, m.batch);
  long const local_rows = m.batch / comm.size();
  std::uint64_t step = 0;
  task->start_epoch(1);
  long const batches = task->batches_per_epoch();
  auto one_step = [&](Task& t) {
    t.step(long(step % std::uint64_t(batches)), trellis::DropoutKey{1, ++step, 0});
    Exec().fence();
  };
  one_step(*task);  // warm up: allocations, the first GEMM plans
  for (auto _ : state) {
    auto const t0 = std::chrono::steady_clock::now();
    one_step(*task);
    state.SetIterationTime(group_seconds(t0));
  }
  // Beside it: one sum of the whole gradient, and the same step without the group.
  std::size_t gradient = 0;
  for (auto const& p : task->optimizer().parameters()) gradient += p.grad.extent(0);
  std::vector<Scalar> buffer(gradient, 1.0f);
  double const sum = comm.size() > 1 ? median_seconds(5, [&] {
    comm.sum(buffer.data(), buffer.size(), trellis::Element::f32);
  }) : 0.0;
  auto alone = make_task(m, trellis::single_process(), local_rows);
  alone->start_epoch(1);
  one_step(*alone);
  double const compute = median_seconds(std::max(3, m.iterations / 2), [&] { one_step(*alone); });
  state.counters["tokens_per_second"] =
      benchmark::Counter(double(m.batch * m.seq_len) * double(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["ranks"] = comm.size();
  state.counters["threads_per_rank"] = Exec().concurrency();
  state.counters["gradient_MiB"] = double(gradient * sizeof(Scalar)) / double(1 << 20);
  state.counters["gradient_sum_seconds"] = sum;
  state.counters["compute_seconds"] = compute;
}

/// Output for ranks other than 0.
class Silent final : public benchmark::BenchmarkReporter {
 public:
  bool ReportContext(Context const&) override { return true; }
  void ReportRuns(std::vector<Run> const&) override {}
};

}  // namespace

int main(int argc, char** argv) {
  trellis::mpi::Environment mpi(argc, argv);
  {
    Kokkos::ScopeGuard guard(argc, argv);
    benchmark::AddCustomContext("trellis", trellis::version_string);
    benchmark::AddCustomContext("execution_space", Exec::name());
    benchmark::AddCustomContext("threads_per_rank", std::to_string(Exec().concurrency()));
    benchmark::AddCustomContext("communicator", world().description());
    if (world().size() > 1)
      for (bool ordered : {false, true})
        for (long bytes = 4 << 10; bytes <= (256L << 20); bytes *= 4)
          benchmark::RegisterBenchmark((std::string("sum/") + (ordered ? "rank_order/" : "iallreduce/") +
                                        std::to_string(bytes)).c_str(),
                                       [ordered, bytes](benchmark::State& s) { group_sum(s, ordered, bytes); })
              ->Iterations(bytes <= (1L << 20) ? 200 : bytes <= (16L << 20) ? 20 : 4)
              ->Repetitions(3)
              ->ReportAggregatesOnly(true)
              ->UseManualTime()
              ->Unit(benchmark::kMillisecond);
    for (auto const& m : models())
      benchmark::RegisterBenchmark((std::string("train_step/") + m.name).c_str(),
                                   [m](benchmark::State& s) { train_step(s, m); })
          ->Iterations(m.iterations)
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
    // Rank 0 alone writes: the others drop --benchmark_out* and report nothing.
    std::vector<char*> args(argv, argv + argc);
    if (!world().is_root())
      args.erase(std::remove_if(args.begin() + 1, args.end(),
                                [](char* a) { return std::string(a).rfind("--benchmark_out", 0) == 0; }),
                 args.end());
    int nargs = int(args.size());
    benchmark::Initialize(&nargs, args.data());
    if (world().is_root()) {
      benchmark::RunSpecifiedBenchmarks();
    } else {
      Silent silent;
      benchmark::RunSpecifiedBenchmarks(&silent);
    }
    benchmark::Shutdown();
  }
  return 0;
}
