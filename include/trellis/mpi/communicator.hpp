#pragma once
// trellis::Communicator over an MPI communicator (the Trellis::mpi target). Sums run
// as MPI_Iallreduce, or, with rank_ordered_sums, in an order the program fixes: each
// rank receives every rank's slice of the buffer (an all-to-all), adds them in rank
// order, and the slices are gathered back; two runs with the same number of ranks then
// give the same bits whatever algorithm the MPI would pick.
#include <mpi.h>
#if __has_include(<mpi-ext.h>)
#include <mpi-ext.h>
#endif

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <trellis/errors.hpp>
#include <trellis/train/communicator.hpp>

namespace trellis::mpi {

namespace detail {

inline MPI_Datatype datatype(Element e) {
  switch (e) {
    case Element::f32: return MPI_FLOAT;
    case Element::f64: return MPI_DOUBLE;
    default: return MPI_INT64_T;
  }
}

inline std::size_t bytes(Element e) { return e == Element::f32 ? 4 : 8; }

/// An MPI call's error as an exception naming the call and MPI's message.
inline void check(int status, char const* call) {
  if (status == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(status, text, &length);
  throw backend_error(std::string("trellis::mpi: ") + call + " failed: " + std::string(text, std::size_t(length)));
}

/// The largest message one MPI call takes (its counts are int).
inline int count_of(std::size_t n, char const* call) {
  if (n > std::size_t(2147483647))
    throw invalid_argument(std::string("trellis::mpi: ") + call + ": " + std::to_string(n) +
                           " elements exceed one MPI message; use smaller buckets");
  return int(n);
}

}  // namespace detail

/// Whether this MPI passes device (CUDA) buffers itself: asked of the library at run
/// time where it can say, else false (device buffers then go through the host).
inline bool cuda_aware() {
#if defined(MPIX_CUDA_AWARE_SUPPORT) && MPIX_CUDA_AWARE_SUPPORT
  return MPIX_Query_cuda_support() == 1;
#else
  return false;
#endif
}

/// The MPI library's version line, for logs.
inline std::string library_version() {
  char text[MPI_MAX_LIBRARY_VERSION_STRING];
  int length = 0;
  MPI_Get_library_version(text, &length);
  std::string s(text, std::size_t(length));
  auto const end = s.find_first_of(",\n");
  return end == std::string::npos ? s : s.substr(0, end);
}

class Communicator final : public trellis::Communicator {
 public:
  /// `comm` is used as it is (not duplicated, not freed).
  explicit Communicator(MPI_Comm comm, bool rank_ordered_sums = false)
      : comm_(comm), ordered_(rank_ordered_sums) {
    detail::check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    detail::check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
    // Errors come back as status codes, which check() turns into exceptions.
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  bool rank_ordered_sums() const { return ordered_; }
  bool takes_device_buffers() const override { return cuda_aware(); }
  std::string description() const override {
    return "MPI (" + library_version() + "), " + std::to_string(size_) + " ranks, " +
           (ordered_ ? "sums in rank order" : "sums by MPI_Iallreduce") + " on host buffers, device broadcasts " +
           (cuda_aware() ? "passed to MPI (CUDA-aware)" : "staged through the host (not CUDA-aware)");
  }

  void broadcast(void* data, std::size_t count, Element e, int root) override {
    detail::check(MPI_Bcast(data, detail::count_of(count, "MPI_Bcast"), detail::datatype(e), root, comm_), "MPI_Bcast");
  }

  std::unique_ptr<Pending> start_sum(void* data, std::size_t count, Element e) override {
    if (ordered_) return std::make_unique<OrderedSum>(*this, data, count, e);
    auto p = std::make_unique<MpiSum>();
    detail::check(MPI_Iallreduce(MPI_IN_PLACE, data, detail::count_of(count, "MPI_Iallreduce"), detail::datatype(e),
                                 MPI_SUM, comm_, &p->request),
                  "MPI_Iallreduce");
    return p;
  }

  void gather(void const* send, std::size_t count, void* recv, Element e, int root) override {
    int const n = detail::count_of(count, "MPI_Gather");
    detail::check(MPI_Gather(send, n, detail::datatype(e), recv, n, detail::datatype(e), root, comm_), "MPI_Gather");
  }

  void barrier() override { detail::check(MPI_Barrier(comm_), "MPI_Barrier"); }

  bool agree(bool ok) override {
    int mine = ok ? 1 : 0, all = 0;
    detail::check(MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, comm_), "MPI_Allreduce");
    return all == 1;
  }

  [[noreturn]] void abort(int status) override {
    MPI_Abort(comm_, status);
    std::exit(status);
  }

 private:
  struct MpiSum final : Pending {
    MpiSum() = default;
    MpiSum(MpiSum const&) = delete;
    MpiSum& operator=(MpiSum const&) = delete;
    MPI_Request request = MPI_REQUEST_NULL;
    void wait() override { detail::check(MPI_Wait(&request, MPI_STATUS_IGNORE), "MPI_Wait"); }
    ~MpiSum() override {
      if (request != MPI_REQUEST_NULL) MPI_Wait(&request, MPI_STATUS_IGNORE);
    }
  };

  /// The buffer cut into size() slices (the last padded); rank r receives slice r of
  /// every rank, adds them in rank order 0, 1, ..., and the slices are gathered back.
  /// The all-to-all starts at once; the adds and the gather happen in wait().
  struct OrderedSum final : Pending {
    OrderedSum(Communicator const& c, void* data, std::size_t count, Element e)
        : comm(c.comm_), rank(c.rank_), size(c.size_), data(static_cast<char*>(data)), count(count), element(e) {
      std::size_t const P = std::size_t(size);
      slice = (count + P - 1) / P;
      std::size_t const b = detail::bytes(e);
      send.assign(slice * P * b, 0);
      std::memcpy(send.data(), data, count * b);
      recv.resize(slice * P * b);
      int const n = detail::count_of(slice, "MPI_Ialltoall");
      detail::check(MPI_Ialltoall(send.data(), n, detail::datatype(e), recv.data(), n, detail::datatype(e), comm,
                                  &request),
                    "MPI_Ialltoall");
    }
    OrderedSum(OrderedSum const&) = delete;
    OrderedSum& operator=(OrderedSum const&) = delete;
    ~OrderedSum() override {
      if (request != MPI_REQUEST_NULL) MPI_Wait(&request, MPI_STATUS_IGNORE);
    }
    void wait() override {
      detail::check(MPI_Wait(&request, MPI_STATUS_IGNORE), "MPI_Wait");
      std::size_t const P = std::size_t(size);
      if (element == Element::f32) add<float>(P);
      else if (element == Element::f64) add<double>(P);
      else add<std::int64_t>(P);
      int const n = detail::count_of(slice, "MPI_Allgather");
      detail::check(MPI_Allgather(MPI_IN_PLACE, n, detail::datatype(element), send.data(), n,
                                  detail::datatype(element), comm),
                    "MPI_Allgather");
      std::memcpy(data, send.data(), count * detail::bytes(element));
    }
    template <class T>
    void add(std::size_t P) {
      auto const* in = reinterpret_cast<T const*>(recv.data());
      auto* out = reinterpret_cast<T*>(send.data()) + std::size_t(rank) * slice;
      for (std::size_t i = 0; i < slice; ++i) {
        T s = in[i];
        for (std::size_t r = 1; r < P; ++r) s += in[r * slice + i];
        out[i] = s;
      }
    }
    MPI_Comm comm;
    int rank, size;
    char* data;
    std::size_t count, slice = 0;
    Element element;
    std::vector<char> send, recv;
    MPI_Request request = MPI_REQUEST_NULL;
  };

  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
  bool ordered_ = false;
};

/// The communicator of every rank of the job: a duplicate of MPI_COMM_WORLD, so that
/// its collectives and error handler stay apart from the program's own; sums by
/// MPI_Iallreduce or in rank order. Made at the first call (after MPI has started).
inline Communicator& world(bool rank_ordered_sums = false) {
  static MPI_Comm const job = [] {
    MPI_Comm dup = MPI_COMM_NULL;
    detail::check(MPI_Comm_dup(MPI_COMM_WORLD, &dup), "MPI_Comm_dup");
    return dup;
  }();
  static Communicator any_order(job, false);
  static Communicator rank_order(job, true);
  return rank_ordered_sums ? rank_order : any_order;
}

}  // namespace trellis::mpi
