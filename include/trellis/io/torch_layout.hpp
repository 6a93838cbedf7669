#pragma once
// The reference code is channels-first and batch-first: a core's input is (N, C, L), its
// output (N, L, nout), its state (N, q, 1), its aux outputs (N, naux, L, nout), tokens
// (N, L). The library is time-major: (L, N, C), states (N, q), aux (naux, L, N, nout),
// tokens (L, N), log-probabilities (L N, ntoken) with row t N + n. These move tensors
// between the two for files (`trellis run`, the PyTorch fixtures).
#include <Kokkos_Core.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include <trellis/errors.hpp>
#include <trellis/io/safetensors.hpp>

namespace trellis {

/// A core kernel in the torch layout: kernel k of our (K, rows, 2 in) weights, columns
/// [tap 0 | tap 1], as the reference's (rows, in, 2), i.e. ref(r, j, tap) = ours(k, r,
/// tap * in + j). `ours` is the row-major host copy of all K kernels.
template <class T>
std::vector<double> kernel_to_torch_layout(T const* ours, long k, long rows, long in) {
  std::vector<double> ref(std::size_t(rows * in * 2));
  for (long r = 0; r < rows; ++r)
    for (long j = 0; j < in; ++j)
      for (long tap = 0; tap < 2; ++tap)
        ref[std::size_t((r * in + j) * 2 + tap)] = double(ours[(k * rows + r) * 2 * in + tap * in + j]);
  return ref;
}

/// The inverse: the reference's (rows, in, 2) into kernel k of ours.
template <class T>
void kernel_from_torch_layout(double const* ref, long k, long rows, long in, T* ours) {
  for (long r = 0; r < rows; ++r)
    for (long j = 0; j < in; ++j)
      for (long tap = 0; tap < 2; ++tap)
        ours[(k * rows + r) * 2 * in + tap * in + j] = T(ref[(r * in + j) * 2 + tap]);
}

namespace detail {

/// For each element of the file tensor in its (row-major) order, the offset of the same
/// element in the row-major array of `extents`; file axis k is array axis perm[k].
inline std::vector<std::size_t> permuted_offsets(std::vector<long> const& extents, std::vector<int> const& perm) {
  std::size_t const rank = extents.size();
  std::vector<long> stride(rank, 1);
  for (std::size_t r = rank - 1; r > 0; --r) stride[r - 1] = stride[r] * extents[r];
  long total = 1;
  for (long e : extents) total *= e;
  std::vector<std::size_t> out;
  out.reserve(std::size_t(total));
  std::vector<long> index(rank, 0);  // over the file's axes
  for (long i = 0; i < total; ++i) {
    long offset = 0;
    for (std::size_t k = 0; k < rank; ++k) offset += index[k] * stride[std::size_t(perm[k])];
    out.push_back(std::size_t(offset));
    for (std::size_t k = rank; k-- > 0;) {
      if (++index[k] < extents[std::size_t(perm[k])]) break;
      index[k] = 0;
    }
  }
  return out;
}

inline std::vector<long> file_shape(std::vector<long> const& extents, std::vector<int> const& perm) {
  std::vector<long> shape;
  for (int p : perm) shape.push_back(extents[std::size_t(p)]);
  return shape;
}

/// The View's values (as an array of `extents`, row-major) as a tensor with axes `perm`.
template <class View>
safetensors::Tensor to_file(View const& v, std::vector<long> const& extents, std::vector<int> const& perm,
                            safetensors::DType dtype) {
  auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), v);
  auto const offsets = permuted_offsets(extents, perm);
  std::vector<double> values;
  values.reserve(offsets.size());
  for (auto o : offsets) values.push_back(double(h.data()[o]));
  auto const shape = file_shape(extents, perm);
  return safetensors::Tensor::from_double(dtype, {shape.begin(), shape.end()}, values);
}

inline void require_file_shape(safetensors::Tensor const& t, std::vector<long> const& want, std::string const& path,
                               std::string const& name, char const* layout) {
  if (tensor_shape(t) != want) fail_tensor_shape(path, name, tensor_shape(t), shape_of(want) + " " + layout);
}

/// The inverse of to_file; the tensor's shape must be the permuted extents.
template <class View>
void from_file(View const& v, std::vector<long> const& extents, std::vector<int> const& perm,
               safetensors::Tensor const& t, std::string const& path, std::string const& name, char const* layout) {
  require_file_shape(t, file_shape(extents, perm), path, name, layout);
  auto const values = t.to_double();
  auto const offsets = permuted_offsets(extents, perm);
  auto h = Kokkos::create_mirror_view(v);
  using T = typename View::non_const_value_type;
  for (std::size_t i = 0; i < offsets.size(); ++i) h.data()[offsets[i]] = T(values[i]);
  Kokkos::deep_copy(v, h);
}

template <class View>
std::vector<long> extents_of(View const& v) {
  std::vector<long> e;
  for (unsigned r = 0; r < View::rank; ++r) e.push_back(long(v.extent(r)));
  return e;
}

}  // namespace detail


/// A sequence (L, N, C) from / as a channels-first tensor (N, C, L).
template <class View>
void sequence_from_torch(View const& v, safetensors::Tensor const& t, std::string const& path,
                             std::string const& name) {
  detail::from_file(v, detail::extents_of(v), {1, 2, 0}, t, path, name, "(N, C, L)");
}
template <class View>
safetensors::Tensor sequence_to_torch(View const& v, safetensors::DType dtype) {
  return detail::to_file(v, detail::extents_of(v), {1, 2, 0}, dtype);
}

/// An output (L, N, C) from / as a batch-first tensor (N, L, C).
template <class View>
void output_from_torch(View const& v, safetensors::Tensor const& t, std::string const& path,
                           std::string const& name) {
  detail::from_file(v, detail::extents_of(v), {1, 0, 2}, t, path, name, "(N, L, C)");
}
template <class View>
safetensors::Tensor output_to_torch(View const& v, safetensors::DType dtype) {
  return detail::to_file(v, detail::extents_of(v), {1, 0, 2}, dtype);
}

/// A state (N, q) from / as the reference's (N, q, 1).
template <class View>
void state_from_torch(View const& v, safetensors::Tensor const& t, std::string const& path,
                          std::string const& name) {
  detail::from_file(v, {long(v.extent(0)), long(v.extent(1)), 1}, {0, 1, 2}, t, path, name, "(N, q, 1)");
}
template <class View>
safetensors::Tensor state_to_torch(View const& v, safetensors::DType dtype) {
  return detail::to_file(v, {long(v.extent(0)), long(v.extent(1)), 1}, {0, 1, 2}, dtype);
}

/// Aux outputs (naux, L, N, C) from / as the reference's (N, naux, L, C).
template <class View>
void aux_from_torch(View const& v, safetensors::Tensor const& t, std::string const& path, std::string const& name) {
  detail::from_file(v, detail::extents_of(v), {2, 0, 1, 3}, t, path, name, "(N, naux, L, C)");
}
template <class View>
safetensors::Tensor aux_to_torch(View const& v, safetensors::DType dtype) {
  return detail::to_file(v, detail::extents_of(v), {2, 0, 1, 3}, dtype);
}

/// Log-probabilities (L N, V), row t N + n, as the reference's (N, L, V).
template <class View>
safetensors::Tensor rows_to_torch(View const& v, long L, long N, safetensors::DType dtype) {
  return detail::to_file(v, {L, N, long(v.extent(1))}, {1, 0, 2}, dtype);
}

/// Tokens (L, N) from the reference's (N, L); integers of any stored type, each in
/// [0, ntoken) (an error names the first that is not, with its position).
template <class View>
void tokens_from_torch(View const& v, safetensors::Tensor const& t, long ntoken, std::string const& path,
                           std::string const& name) {
  long const L = long(v.extent(0)), N = long(v.extent(1));
  detail::require_file_shape(t, {N, L}, path, name, "(N, L)");
  auto const values = t.to_double();
  for (std::size_t i = 0; i < values.size(); ++i) {
    double const x = values[i];
    if (!(x >= 0 && x < double(ntoken)) || x != double(long(x)))
      throw file_error(path + ": tensor '" + name + "' holds " + std::to_string(x) + " at (" +
                       std::to_string(long(i) / L) + ", " + std::to_string(long(i) % L) +
                       "); tokens are integers in [0, " + std::to_string(ntoken) + ")");
  }
  detail::from_file(v, {L, N}, {1, 0}, t, path, name, "(N, L)");
}

}  // namespace trellis
