#pragma once
// What data-parallel training needs from a group of processes: broadcast, sums
// (blocking and started-then-waited), a gather, a barrier and an agreement, on
// contiguous buffers and on Views. SingleProcess is the group of one; an MPI_Comm is
// trellis::mpi::Communicator (trellis/mpi/communicator.hpp, the Trellis::mpi target).
// Views in memory the host cannot read are summed through host buffers always (CUDA-
// aware MPIs take device buffers in blocking collectives, not in non-blocking ones),
// and broadcast through host buffers unless the group takes device buffers.
#include <Kokkos_Core.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>

#include <trellis/errors.hpp>

namespace trellis {

enum class Element { f32, f64, i64 };

template <class T>
constexpr Element element_of() {
  if constexpr (std::is_same_v<T, float>) return Element::f32;
  else if constexpr (std::is_same_v<T, double>) return Element::f64;
  else {
    static_assert(std::is_same_v<T, std::int64_t> || std::is_same_v<T, long>, "trellis: f32, f64 or i64 buffers");
    return Element::i64;
  }
}

class Communicator {
 public:
  /// A sum in flight; wait() returns when the buffer holds the group's sum.
  class Pending {
   public:
    virtual ~Pending() = default;
    virtual void wait() = 0;
  };

  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// For logs: the implementation, the group's size, how device buffers travel.
  virtual std::string description() const = 0;
  /// Whether buffers in device memory may be passed as they are to broadcast and
  /// gather (never to start_sum).
  virtual bool takes_device_buffers() const { return false; }

  virtual void broadcast(void* data, std::size_t count, Element e, int root) = 0;
  /// Starts summing `data` over the group, in place; the buffer must not be touched
  /// until the returned Pending is waited on.
  virtual std::unique_ptr<Pending> start_sum(void* data, std::size_t count, Element e) = 0;
  /// `count` elements from every rank, in rank order, into `recv` on `root`.
  virtual void gather(void const* send, std::size_t count, void* recv, Element e, int root) = 0;
  virtual void barrier() = 0;
  /// True on every rank when `ok` is true on every rank.
  virtual bool agree(bool ok) = 0;
  /// Ends every process of the group now (a rank that cannot go on).
  [[noreturn]] virtual void abort(int status) = 0;

  void sum(void* data, std::size_t count, Element e) { start_sum(data, count, e)->wait(); }
  bool is_root() const { return rank() == 0; }
};

/// The group of one process: every operation leaves the data as it is.
class SingleProcess final : public Communicator {
  struct Done final : Pending {
    void wait() override {}
  };

 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string description() const override { return "one process"; }
  bool takes_device_buffers() const override { return true; }
  void broadcast(void*, std::size_t, Element, int) override {}
  std::unique_ptr<Pending> start_sum(void*, std::size_t, Element) override { return std::make_unique<Done>(); }
  void gather(void const* send, std::size_t count, void* recv, Element e, int) override {
    if (send != recv) std::memcpy(recv, send, count * (e == Element::f32 ? 4 : 8));
  }
  void barrier() override {}
  bool agree(bool ok) override { return ok; }
  [[noreturn]] void abort(int status) override { std::exit(status); }
};

/// The communicator of a program that runs alone.
inline SingleProcess& single_process() {
  static SingleProcess one;
  return one;
}

namespace detail {
/// f(pointer) with `v`'s data where the group can read it: the View itself, or a host
/// copy (copied back afterwards when `write_back`).
template <class View, class F>
void with_group_buffer(Communicator& comm, View const& v, bool write_back, bool device_ok, F&& f) {
  if (!v.span_is_contiguous()) fail("trellis::Communicator: a View that is not contiguous (", v.label(), ")");
  constexpr bool host = Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename View::memory_space>::accessible;
  if (comm.size() == 1) return;
  if (host || device_ok) {
    Kokkos::fence();  // the group reads and writes the View from outside Kokkos
    return f(v.data());
  }
  auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), v);
  f(h.data());
  if (write_back) Kokkos::deep_copy(v, h);
}
}  // namespace detail

/// Rank `root`'s values of `v` on every rank.
template <class View>
void broadcast(Communicator& comm, View const& v, int root = 0) {
  using T = std::remove_const_t<typename View::value_type>;
  detail::with_group_buffer(comm, v, true, comm.takes_device_buffers(),
                            [&](T* p) { comm.broadcast(p, v.span(), element_of<T>(), root); });
}

/// The group's sum of `v`, in place.
template <class View>
void sum(Communicator& comm, View const& v) {
  using T = std::remove_const_t<typename View::value_type>;
  detail::with_group_buffer(comm, v, true, false, [&](T* p) { comm.sum(p, v.span(), element_of<T>()); });
}

/// The first and count of this rank's rows of `rows` split as evenly as it goes (the
/// first ranks take one more): for evaluation, where shards need not be equal.
struct Shard {
  long first = 0, count = 0;
};

inline Shard even_shard(long rows, int rank, int size) {
  long const base = rows / size, extra = rows % size;
  return Shard{rank * base + std::min<long>(rank, extra), base + (rank < extra ? 1 : 0)};
}

/// This rank's rows of a training batch, which must divide: every rank's share of the
/// loss then weighs the same, and the mean of their gradients is the batch's.
inline Shard batch_shard(long batch, Communicator const& comm, char const* what) {
  if (batch % comm.size() != 0)
    throw invalid_argument(std::string(what) + " " + std::to_string(batch) + " does not divide among " +
                           std::to_string(comm.size()) + " ranks (rank " + std::to_string(comm.rank()) +
                           "): give a multiple of " + std::to_string(comm.size()));
  return even_shard(batch, comm.rank(), comm.size());
}

/// Thrown on the ranks that set up fine when another did not.
class peer_failed : public std::runtime_error {
 public:
  peer_failed() : std::runtime_error("stopping: another rank failed to set up (its message says why)") {}
};

/// How a job of ranks stops on an error. Setting up (reading data, building the model,
/// loading a checkpoint) makes no collective call, so a rank that fails there can tell
/// the others at the agreement that ends setting up, and every rank stops with its own
/// message. Once running, the others may be waiting on the failed rank in a sum: the
/// job ends at once.
class JobPhases {
 public:
  explicit JobPhases(Communicator& comm) : comm_(comm) {}
  bool running() const { return running_; }
  /// "rank R of P: " for messages of a job of several ranks, else "".
  std::string rank_prefix() const {
    if (comm_.size() == 1) return "";
    return "rank " + std::to_string(comm_.rank()) + " of " + std::to_string(comm_.size()) + ": ";
  }

  /// Every rank has set up, or none goes on (peer_failed on the ranks that did).
  void setup_done() {
    if (!comm_.agree(true)) throw peer_failed();
    running_ = true;
  }

  /// After this rank's error has been reported: setting up, tells the other ranks;
  /// running, ends the job (it does not return).
  void failed(std::exception const& e) {
    if (comm_.size() == 1) return;
    if (running_) comm_.abort(1);
    if (!dynamic_cast<peer_failed const*>(&e)) comm_.agree(false);
  }

 private:
  Communicator& comm_;
  bool running_ = false;
};

}  // namespace trellis
