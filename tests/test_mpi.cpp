// Data-parallel training over MPI, as `mpirun -np 2 test_mpi`: the communicator's
// operations; P ranks with a global batch B against one process with batch B (fp64,
// every regulariser on, clipping on, buckets small enough that tensors span them):
// every step's loss and the final parameters within 1e-9; the rank-ordered sums give
// the same bits twice; checkpoints move between 2 ranks and 1 process; sharded
// evaluation equals one process's; an indivisible batch is an error on every rank.
// Every rank also runs the one-process side itself, so each compares locally.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <mpi.h>

#include <Kokkos_Core.hpp>

#include <cmath>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <trellis/mpi/communicator.hpp>
#include <trellis/mpi/environment.hpp>
#include <trellis/trellis.hpp>

#include "files.hpp"
#include "training.hpp"

using namespace trellis::test;

namespace {

using Exec = Kokkos::DefaultExecutionSpace;
namespace fs = std::filesystem;

trellis::mpi::Communicator& world() { return trellis::mpi::world(); }
trellis::mpi::Communicator& world_in_rank_order() { return trellis::mpi::world(true); }

/// A folder every rank names alike (rank 0's pid), for checkpoints they share.
fs::path shared_dir() {
  static fs::path const dir = [] {
    long pid = long(::getpid());
    world().broadcast(&pid, 1, trellis::Element::i64, 0);
    auto d = fs::temp_directory_path() / ("trellis-test-mpi-" + std::to_string(pid));
    fs::create_directories(d);
    return d;
  }();
  return dir;
}

/// Every regulariser of the language model on, a mixture of softmaxes as the head,
/// and buckets of 512 bytes, so that every tensor spans several.
trellis::LanguageTaskOptions lm_options() {
  auto o = language_options();
  o.model.emb_dropout = 0.1;
  o.model.n_experts = 2;
  o.model.dropoutl = 0.1;
  o.model.alpha = 0.01;
  o.model.beta = 0.01;
  o.gradient_bucket_bytes = 512;
  return o;
}

trellis::ClassifierTaskOptions classifier() {
  auto o = classifier_options(trellis::ImageSequence::rows);
  o.model.dropout = o.model.dropouti = 0.2;
  o.clip = 0.3;
  o.batch_size = 6;  // 12 training images: 2 batches an epoch
  o.gradient_bucket_bytes = 256;
  return o;
}

struct MakeLanguageTask {
  auto operator()(Exec const& space, trellis::Communicator& comm) const {
    return std::make_unique<trellis::LanguageTask<Exec, double>>(
        space, lm_options(), synthetic_corpus(trellis::data::TokenLevel::characters), comm);
  }
};

struct MakeClassifierTask {
  auto operator()(Exec const& space, trellis::Communicator& comm) const {
    return std::make_unique<trellis::ClassifierTask<Exec, double>>(space, classifier(), synthetic_images(), comm);
  }
};

struct Run {
  Record record;
  std::vector<double> parameters;
  long step = 0;
};

/// Trains to `steps` (from `resume_from` when given), checkpointing to `checkpoint`
/// when given.
template <class Make>
Run train(Make make, trellis::Communicator& comm, long steps, std::string const& resume_from = "",
          std::string const& checkpoint = "") {
  Exec space;
  auto task = make(space, comm);
  Run out;
  auto o = per_step(steps);
  o.seed = 17;
  o.checkpoint_path = checkpoint;
  o.checkpoint_dtype = trellis::safetensors::DType::F64;
  trellis::Trainer<Exec, std::remove_reference_t<decltype(*task)>> t(space, *task, o, recording(out.record));
  if (!resume_from.empty()) t.resume(resume_from);
  t.run();
  out.parameters = host_values(task->optimizer());
  out.step = t.step();
  return out;
}

void check_close(std::vector<double> const& a, std::vector<double> const& b, double tolerance, char const* what) {
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    worst = std::max(worst, std::abs(a[i] - b[i]) / std::max(1.0, std::abs(b[i])));
  INFO(what, ": worst relative difference ", worst);
  CHECK(worst <= tolerance);
}

template <class Make>
void check_ranks_equal_one_process(Make make) {
  auto const one = train(make, trellis::single_process(), 20);
  auto const ranks = train(make, world(), 20);
  REQUIRE(one.record.losses.size() == 20);
  check_close(ranks.record.losses, one.record.losses, 1e-9, "losses");
  check_close(ranks.record.valids, one.record.valids, 1e-9, "validations");
  check_close(ranks.parameters, one.parameters, 1e-9, "parameters and optimiser state");
}

template <class Make>
void check_checkpoints_move(Make make, std::string const& name) {
  auto const one = train(make, trellis::single_process(), 20);
  // 2 ranks write at step 10 (rank 0 alone); one process goes on from there.
  auto const from_ranks = (shared_dir() / (name + "-ranks.safetensors")).string();
  train(make, world(), 10, "", from_ranks);
  world().barrier();
  auto const resumed_alone = train(make, trellis::single_process(), 20, from_ranks);
  CHECK(resumed_alone.step == 20);
  check_close(resumed_alone.record.losses, std::vector<double>(one.record.losses.begin() + 10, one.record.losses.end()),
              1e-9, "one process after 2 ranks");
  check_close(resumed_alone.parameters, one.parameters, 1e-9, "parameters");
  world().barrier();
  // One process writes at step 10 (on rank 0 only: the others have no file to write);
  // 2 ranks go on from there.
  auto const from_one = (shared_dir() / (name + "-one.safetensors")).string();
  train(make, trellis::single_process(), 10, "", world().is_root() ? from_one : "");
  world().barrier();
  auto const resumed_ranks = train(make, world(), 20, from_one);
  check_close(resumed_ranks.record.losses, std::vector<double>(one.record.losses.begin() + 10, one.record.losses.end()),
              1e-9, "2 ranks after one process");
  check_close(resumed_ranks.parameters, one.parameters, 1e-9, "parameters");
}

}  // namespace

TEST_CASE("communicator: broadcast, started sums, rank-ordered sums, gather, agreement") {
  auto& c = world();
  int const P = c.size(), r = c.rank();
  REQUIRE(P >= 2);
  Kokkos::View<double*, Kokkos::HostSpace> v("v", 7);
  for (int i = 0; i < 7; ++i) v(i) = r * 100 + i;
  trellis::broadcast(c, v, 1);
  for (int i = 0; i < 7; ++i) CHECK(v(i) == 100 + i);

  // Two sums in flight at once, waited on in the other order.
  std::vector<float> a(1000), b(3);
  for (int i = 0; i < 1000; ++i) a[std::size_t(i)] = float((r + 1) * i);
  for (int i = 0; i < 3; ++i) b[std::size_t(i)] = float(r == 0 ? 1 : 0);
  auto pa = c.start_sum(a.data(), a.size(), trellis::Element::f32);
  auto pb = c.start_sum(b.data(), b.size(), trellis::Element::f32);
  pb->wait();
  pa->wait();
  for (int i = 0; i < 1000; ++i) CHECK(a[std::size_t(i)] == float(i * P * (P + 1) / 2));
  CHECK(b == std::vector<float>{1, 1, 1});

  // Rank-ordered sums: values whose sum depends on the order, added 0, 1, ..., P - 1;
  // 11 elements among P ranks leave a padded last slice.
  auto value = [](int rank, int i) { return (rank % 2 ? 1e16 : 1.0) * (1 + 0.1 * i) * (rank + 1); };
  std::vector<double> d(11);
  for (int i = 0; i < 11; ++i) d[std::size_t(i)] = value(r, i);
  world_in_rank_order().sum(d.data(), d.size(), trellis::Element::f64);
  for (int i = 0; i < 11; ++i) {
    double expected = value(0, i);
    for (int k = 1; k < P; ++k) expected += value(k, i);
    CHECK(d[std::size_t(i)] == expected);
  }

  std::vector<std::int64_t> mine{r, 10 * r}, all(std::size_t(2 * P));
  c.gather(mine.data(), 2, all.data(), trellis::Element::i64, 0);
  if (r == 0)
    for (int k = 0; k < P; ++k) CHECK((all[std::size_t(2 * k)] == k && all[std::size_t(2 * k + 1)] == 10 * k));
  CHECK(c.agree(true));
  CHECK(!c.agree(r != 1));
  CHECK(c.description().find("ranks") != std::string::npos);
}

TEST_CASE("job phases: a rank that fails to set up stops every rank, each with its own message") {
  int const r = world().rank(), P = world().size();
  trellis::JobPhases phases(world());
  CHECK(phases.rank_prefix() == "rank " + std::to_string(r) + " of " + std::to_string(P) + ": ");
  if (r == 1) {
    phases.failed(std::runtime_error("no data"));  // tells the others, and returns
  } else {
    CHECK(error_of<trellis::peer_failed>([&] { phases.setup_done(); }) ==
          "stopping: another rank failed to set up (its message says why)");
  }
  CHECK(!phases.running());
  trellis::JobPhases fine(world());
  fine.setup_done();
  CHECK(fine.running());
  trellis::JobPhases alone(trellis::single_process());
  CHECK(alone.rank_prefix().empty());
}

TEST_CASE("gradient reducer: buckets start when their stage is final, and hold the mean") {
  Exec space;
  using Flat = Kokkos::View<double*, Kokkos::LayoutRight, Exec::memory_space>;
  // Backward finishes "head." first, then "core.", then "embedding." (1000 values in
  // buckets of 48 doubles: tensors span buckets, and one bucket holds two stages).
  std::vector<std::pair<std::string, long>> tensors{{"embedding.w", 300}, {"core.w", 500}, {"head.b", 200}};
  std::vector<Flat> values, grads;
  trellis::ParameterList<Exec::memory_space, double> list;
  int const r = world().rank(), P = world().size();
  for (auto const& [name, n] : tensors) {
    values.emplace_back("v", n);
    grads.emplace_back("g", n);
    auto h = Kokkos::create_mirror_view(grads.back());
    for (long i = 0; i < n; ++i) h(i) = double(r + 1) * double(i + 1);
    Kokkos::deep_copy(grads.back(), h);
    trellis::add_parameter(list, name, values.back(), grads.back());
  }
  trellis::GradientReducer<Exec, double> reducer(world(), list, {{"head."}, {"core."}, {"embedding."}}, 48 * 8);
  REQUIRE(reducer.buckets() == 21);  // 1000 values, 48 a bucket
  reducer.stage_final(space, 0);
  CHECK(reducer.in_flight() == 4);  // the head's 200 values fill 4 buckets; the fifth holds core values too
  reducer.stage_final(space, 1);
  CHECK(reducer.in_flight() == 14);  // the core ends at value 700, in the fifteenth bucket
  reducer.finish(space);
  CHECK(reducer.in_flight() == 0);
  double const mean = double(P + 1) / 2;
  for (std::size_t t = 0; t < tensors.size(); ++t) {
    auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), grads[t]);
    for (long i = 0; i < tensors[t].second; ++i) {
      INFO(tensors[t].first, "(", i, ")");
      REQUIRE(h(i) == mean * double(i + 1));
    }
  }
}

TEST_CASE("data parallel: P ranks x B/P equal one process x B, step by step (language model)") {
  check_ranks_equal_one_process(MakeLanguageTask{});
}

TEST_CASE("data parallel: P ranks x B/P equal one process x B, step by step (classifier)") {
  check_ranks_equal_one_process(MakeClassifierTask{});
}

TEST_CASE("data parallel: sums in rank order give the same bits twice") {
  for (auto make : {0, 1}) {
    auto twice = [&] {
      return make == 0 ? train(MakeLanguageTask{}, world_in_rank_order(), 12)
                       : train(MakeClassifierTask{}, world_in_rank_order(), 12);
    };
    auto const first = twice(), second = twice();
    CHECK(first.record.losses == second.record.losses);
    CHECK(first.parameters == second.parameters);
  }
}

TEST_CASE("data parallel: a checkpoint of P ranks resumes on one process, and the reverse") {
  check_checkpoints_move(MakeLanguageTask{}, "lm");
  check_checkpoints_move(MakeClassifierTask{}, "classifier");
}

TEST_CASE("data parallel: sharded evaluation equals one process's") {
  Exec space;
  auto lm_one = MakeLanguageTask{}(space, trellis::single_process());
  auto lm_ranks = MakeLanguageTask{}(space, world());
  for (auto const* split : {"valid", "test", "train"})
    CHECK(lm_ranks->evaluate(split) == doctest::Approx(lm_one->evaluate(split)).epsilon(1e-12));
  auto cls_one = MakeClassifierTask{}(space, trellis::single_process());
  auto cls_ranks = MakeClassifierTask{}(space, world());
  for (auto const* split : {"valid", "test", "train"}) CHECK(cls_ranks->evaluate(split) == cls_one->evaluate(split));
}

TEST_CASE("data parallel: a batch that does not divide among the ranks is an error on every rank") {
  Exec space;
  auto o = classifier();
  o.batch_size = 2 * world().size() + 1;
  auto const message = error_of<trellis::invalid_argument>(
      [&] { trellis::ClassifierTask<Exec, double> task(space, o, synthetic_images(), world()); });
  CHECK(message == "trellis::ClassifierTask: batch_size " + std::to_string(o.batch_size) + " does not divide among " +
                       std::to_string(world().size()) + " ranks (rank " + std::to_string(world().rank()) +
                       "): give a multiple of " + std::to_string(world().size()));
}

int main(int argc, char** argv) {
  trellis::mpi::Environment mpi(argc, argv);
  int status = 0;
  {
    Kokkos::ScopeGuard guard(argc, argv);
    doctest::Context context;
    context.applyCommandLine(argc, argv);
    status = context.run();
    std::error_code ec;
    world().barrier();
    if (world().is_root()) fs::remove_all(shared_dir(), ec);
  }
  // A failure on any rank fails the job.
  int worst = status;
  MPI_Allreduce(&status, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  return worst;
}
