#pragma once
// Starting and ending MPI for a program that may or may not run under a launcher:
// launched_by_mpi() reads the variables mpirun (Open MPI, MPICH) and Slurm's srun set,
// so that a program started by hand runs alone without initialising MPI at all.
#include <mpi.h>

#include <cstdlib>
#include <string>

#include <trellis/errors.hpp>

namespace trellis::mpi {

/// Whether a launcher started this process as one rank of a job.
inline bool launched_by_mpi() {
  for (char const* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK", "MPI_LOCALNRANKS"})
    if (std::getenv(name)) return true;
  return false;
}

/// This rank's index among the ranks of its node, as the launcher tells it (0 if none
/// does): which GPU a rank takes.
inline int local_rank() {
  for (char const* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "PMI_LOCAL_RANK"})
    if (char const* v = std::getenv(name)) return std::atoi(v);
  return 0;
}

/// MPI from construction to destruction (once per process). Kokkos' threads never call
/// MPI: the main thread's calls are enough (MPI_THREAD_FUNNELED).
class Environment {
 public:
  Environment(int& argc, char**& argv) {
    int provided = 0;
    if (MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
      throw backend_error("trellis::mpi::Environment: MPI_Init_thread failed");
  }
  ~Environment() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }
  Environment(Environment const&) = delete;
  Environment& operator=(Environment const&) = delete;
};

}  // namespace trellis::mpi
