#pragma once
// A model's learnable tensors as flat views, for optimisers, clipping and checkpoints.
#include <Kokkos_Core.hpp>

#include <functional>
#include <string>
#include <vector>

namespace trellis {

/// One learnable tensor and its gradient, both seen as flat (span) views over the
/// model's own storage (unmanaged: the model must outlive the list).
template <class MemorySpace, class Scalar>
struct ParameterRef {
  using flat_view = Kokkos::View<Scalar*, Kokkos::LayoutRight, MemorySpace>;
  std::string name;
  flat_view value, grad;
  std::vector<long> shape;  ///< the tensor's extents in the library's layout
};

template <class MemorySpace, class Scalar>
using ParameterList = std::vector<ParameterRef<MemorySpace, Scalar>>;

/// A model's parameters by the stage of backward that finishes their gradients, in
/// that order: each stage a list of name prefixes. Data-parallel training starts
/// summing a stage's gradients over the ranks while backward goes on.
using GradientStages = std::vector<std::vector<std::string>>;

/// Called by a model's train_step with k when the gradients of stage k are final.
using StageFinal = std::function<void(int)>;

/// Appends (name, value, grad) unless the tensor is empty (an absent weight-norm gain).
template <class MemorySpace, class Scalar, class View>
void add_parameter(ParameterList<MemorySpace, Scalar>& list, std::string name, View const& value,
                   View const& grad) {
  if (value.span() == 0) return;
  ParameterRef<MemorySpace, Scalar> p;
  p.name = std::move(name);
  p.value = typename ParameterRef<MemorySpace, Scalar>::flat_view(value.data(), value.span());
  p.grad = typename ParameterRef<MemorySpace, Scalar>::flat_view(grad.data(), grad.span());
  for (unsigned r = 0; r < View::rank; ++r) p.shape.push_back(long(value.extent(r)));
  list.push_back(std::move(p));
}

/// The core's tensors, named "core.<tensor>" (absent weight-norm gains skipped).
template <class MemorySpace, class Scalar, class Network>
void add_core_parameters(ParameterList<MemorySpace, Scalar>& list, Network& core) {
  auto& p = core.parameters();
  auto& g = core.gradients();
  add_parameter(list, "core.weight1", p.weight1, g.weight1);
  add_parameter(list, "core.weight1_g", p.weight1_g, g.weight1_g);
  add_parameter(list, "core.weight2", p.weight2, g.weight2);
  add_parameter(list, "core.weight2_g", p.weight2_g, g.weight2_g);
  add_parameter(list, "core.bias2", p.bias2, g.bias2);
}

template <class Exec, class MemorySpace, class Scalar>
void zero_gradients(Exec const& space, ParameterList<MemorySpace, Scalar> const& list) {
  for (auto const& p : list) Kokkos::deep_copy(space, p.grad, Scalar(0));
}

}  // namespace trellis
