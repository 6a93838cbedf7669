#pragma once
// TrellisCache: what a network's forward keeps for its backward. Made and resized by
// forward; reuse one per network so that steady-state steps allocate nothing. Backward
// also reads the x, h0, c0 and masks that forward was given: keep them unchanged until
// then. Its contents belong to the network; users see its size.
#include <cstddef>

#include <trellis/core/detail/cache_state.hpp>
#include <trellis/core/structure.hpp>

namespace trellis {

template <class ExecutionSpace, class Scalar, class WeightTying, class Structure, class Activation>
class TrellisNetwork;
template <class Network>
class TrellisStream;

template <class MemorySpace, class Scalar, class Structure = Dense>
class TrellisCache {
 public:
  /// Bytes this cache holds on its memory space (the structure's scratch not counted).
  std::size_t bytes() const { return state_.bytes(); }
  /// The length and batch of the forward it holds (0 before the first).
  long length() const { return state_.length; }
  long batch() const { return state_.batch; }
  /// Levels whose gates and cells it keeps: every level, or with level recomputation
  /// of interval k, n / k + k - 1 of them.
  long level_slots() const { return long(state_.gates.extent(0)); }

 private:
  template <class, class, class, class, class>
  friend class TrellisNetwork;
  template <class>
  friend class TrellisStream;  // a prefill reads the forward's levels
  detail::CacheState<MemorySpace, Scalar, Structure> state_;
};

}  // namespace trellis
