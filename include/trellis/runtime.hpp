#pragma once
// Starting Kokkos from a program that takes a thread count (the trellis program, the
// examples), and from names chosen at run time (a backend, a precision) to the
// execution space and scalar type the templates take. A program that owns its Kokkos
// setup and types does not need this.
#include <Kokkos_Core.hpp>
#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#endif

#if defined(__linux__)
#include <sched.h>
#endif

#include <algorithm>
#include <cstdlib>
#include <initializer_list>
#include <string>
#include <thread>

#include <trellis/errors.hpp>

namespace trellis {

/// Kokkos::initialize with a thread count (0: Kokkos' default). With `rank_of_job`,
/// a process that is one rank of an MPI job on a build with a GPU backend takes the
/// GPU of its rank among those of its node (its local rank modulo the node's GPUs).
/// The settings type differs between Kokkos 3.4 and 4.x, so callers need not know
/// which they have.
inline void initialize_kokkos(int num_threads, bool rank_of_job = false) {
#if KOKKOS_VERSION >= 40000
  Kokkos::InitializationSettings settings;
  if (num_threads > 0) settings.set_num_threads(num_threads);
#if defined(KOKKOS_ENABLE_CUDA)
  if (rank_of_job) settings.set_map_device_id_by("mpi_rank");
#endif
  Kokkos::initialize(settings);
#else
  Kokkos::InitArguments args;
  if (num_threads > 0) args.num_threads = num_threads;
  Kokkos::initialize(args);
#endif
  (void)rank_of_job;
}

/// Subnormal numbers (magnitudes below FLT_MIN, about 1.2e-38 in float, 2.2e-308 in
/// double) flushed to zero, as results (FTZ) and as inputs (DAZ), on this thread; on
/// x86 only, elsewhere nothing (returns false). Deep training drives some gradients
/// into that range, where x86 arithmetic is several times slower; flushed, those
/// values become zero, which changes results in their last bits at most where they
/// occur. Threads started afterwards (Kokkos', Eigen's) inherit the setting.
inline bool flush_subnormals(bool on = true) {
#if defined(__SSE__) || defined(__x86_64__)
  unsigned const bits = 0x8040;  // FTZ (bit 15) and DAZ (bit 6) of MXCSR
  _mm_setcsr(on ? (_mm_getcsr() | bits) : (_mm_getcsr() & ~bits));
  return true;
#else
  (void)on;
  return false;
#endif
}

/// Whether this thread flushes subnormal numbers to zero.
inline bool subnormals_flushed() {
#if defined(__SSE__) || defined(__x86_64__)
  return (_mm_getcsr() & 0x8040u) == 0x8040u;
#else
  return false;
#endif
}

/// flush_subnormals(on) on the calling thread and on every host thread of a running
/// execution space (one work item per thread, statically spread); a device's own
/// threads are set by how its code is compiled, not here.
template <class Exec>
bool flush_subnormals(Exec const& space, bool on = true) {
  bool const done = flush_subnormals(on);
  if constexpr (Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename Exec::memory_space>::accessible) {
    Kokkos::parallel_for("trellis::flush_subnormals",
                         Kokkos::RangePolicy<Exec, Kokkos::Schedule<Kokkos::Static>>(space, 0, space.concurrency()),
                         [on](long) { flush_subnormals(on); });
    space.fence();
  }
  return done;
}

/// The cores this process may run on: its CPU affinity mask where the system has one
/// (a container or `taskset` narrows it), else the hardware's threads; at least 1.
inline int available_cores() {
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
#endif
  return std::max(1u, std::thread::hardware_concurrency());
}

namespace detail {
/// The largest count the variables `names` hold; 1 when none holds more.
inline int largest_count_in(std::initializer_list<char const*> names) {
  int count = 1;
  for (char const* name : names)
    if (char const* v = std::getenv(name)) count = std::max(count, std::atoi(v));
  return count;
}
}  // namespace detail

/// How many ranks of this job a launcher started on this node, as its variables say;
/// 1 when none does.
inline int launcher_local_ranks() {
  return detail::largest_count_in({"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"});
}

/// Host threads for a process that is not told: OMP_NUM_THREADS's first value where it
/// is set, as OpenMP itself reads it; otherwise the cores this process may run on,
/// shared with the other ranks a launcher started on this node.
inline int default_host_threads() {
  if (char const* v = std::getenv("OMP_NUM_THREADS"); v && std::atoi(v) > 0) return std::atoi(v);
  return std::max(1, available_cores() / launcher_local_ranks());
}

/// How many ranks a launcher (mpirun, mpiexec, srun) started this job with, as its
/// variables say; 1 when none does.
inline int launcher_ranks() {
  return detail::largest_count_in({"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS"});
}

/// Empty when every rank a launcher started (launcher_ranks) is in the job of
/// `ranks_in_job`; otherwise why not, for an error: each rank would work alone on the
/// same files.
inline std::string missing_ranks(int ranks_in_job, bool built_with_mpi) {
  int const started = launcher_ranks();
  if (started <= ranks_in_job) return "";
  return "started as one of " + std::to_string(started) + " ranks, but " +
         (!built_with_mpi ? std::string("this program was built without MPI (scripts/install-deps installs Open MPI)")
                          : "MPI sees " + std::to_string(ranks_in_job) +
                                " (with Slurm, give srun --mpi=pmix or --mpi=pmi2)");
}

/// The best backend this build enables: cuda, else openmp, else serial.
inline std::string default_backend() {
#if defined(KOKKOS_ENABLE_CUDA)
  return "cuda";
#elif defined(KOKKOS_ENABLE_OPENMP)
  return "openmp";
#else
  return "serial";
#endif
}

/// The backends this build enables, each after a space.
inline std::string enabled_backends() {
  std::string out;
#if defined(KOKKOS_ENABLE_SERIAL)
  out += " serial";
#endif
#if defined(KOKKOS_ENABLE_OPENMP)
  out += " openmp";
#endif
#if defined(KOKKOS_ENABLE_CUDA)
  out += " cuda";
#endif
  return out;
}

/// f.template operator()<Exec>() for the execution space named `backend` (serial,
/// openmp, cuda); a backend this build lacks is an error listing those it has.
template <class F>
void with_backend(std::string const& backend, F&& f) {
#if defined(KOKKOS_ENABLE_SERIAL)
  if (backend == "serial") return f.template operator()<Kokkos::Serial>();
#endif
#if defined(KOKKOS_ENABLE_OPENMP)
  if (backend == "openmp") return f.template operator()<Kokkos::OpenMP>();
#endif
#if defined(KOKKOS_ENABLE_CUDA)
  if (backend == "cuda") return f.template operator()<Kokkos::Cuda>();
#endif
  throw invalid_argument("--backend " + backend + ": not enabled in this build (enabled:" + enabled_backends() + ")");
}

/// f(float{}) for "fp32", f(double{}) for "fp64".
template <class F>
void with_precision(std::string const& precision, F&& f) {
  if (precision == "fp32") return f(float{});
  if (precision == "fp64") return f(double{});
  throw invalid_argument("--precision " + precision + ": expected fp32 or fp64");
}

}  // namespace trellis
