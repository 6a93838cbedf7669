#pragma once
// The core to and from safetensors in the reference's names and shapes, so that its
// load_state_dict accepts our files and we read its weights:
//   <prefix>weight1_g (4q,1,1), weight1_v (4q, ninp, 2), weight2_g, weight2_v (4q, q, 2),
//   bias2 (4q); without weight norm weight1, weight2. Under weight drop (the
//   reference's language model and classifier) v and the raw weights carry "_raw".
// The shape travels as metadata (ninp, nhid, nout, nlevels, dilation, aux_frequency,
// wnorm). On read every duplicate must equal its twin, and a tensor no reader takes is
// an error naming it.
#include <Kokkos_Core.hpp>

#include <cstdint>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <trellis/core/shape.hpp>
#include <trellis/core/weight_tying.hpp>
#include <trellis/detail/int_list.hpp>
#include <trellis/errors.hpp>
#include <trellis/io/safetensors.hpp>
#include <trellis/io/tensor_io.hpp>
#include <trellis/io/torch_layout.hpp>

namespace trellis {

namespace detail {

inline std::string dilation_json(std::vector<int> const& d) {
  std::ostringstream out;
  out << '[';
  for (std::size_t i = 0; i < d.size(); ++i) out << (i ? ", " : "") << d[i];
  out << ']';
  return out.str();
}

/// Our (K, G q, 2 in) [tap 0 | tap 1] <-> the reference's (G q, in, 2) when K = 1 (tied
/// across depth); an untied core's K kernels as (K, G q, in, 2).
inline std::vector<long> kernel_file_shape(long kernels, long rows, long in) {
  return kernels == 1 ? std::vector<long>{rows, in, 2} : std::vector<long>{kernels, rows, in, 2};
}

template <class View>
safetensors::Tensor kernel_to_torch(View const& w, safetensors::DType dtype) {
  auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), w);
  long const K = long(h.extent(0)), rows = long(h.extent(1)), in = long(h.extent(2)) / 2;
  std::vector<double> values;
  for (long k = 0; k < K; ++k) {
    auto const one = kernel_to_torch_layout(h.data(), k, rows, in);
    values.insert(values.end(), one.begin(), one.end());
  }
  auto const shape = kernel_file_shape(K, rows, in);
  return safetensors::Tensor::from_double(dtype, std::vector<std::int64_t>(shape.begin(), shape.end()), values);
}

/// A tensor's shape checked against the expected one; the error names file and tensor.
inline void require_shape(safetensors::Tensor const& t, std::string const& path, std::string const& name,
                          std::vector<long> const& want) {
  if (tensor_shape(t) != want) fail_tensor_shape(path, name, tensor_shape(t), want);
}

template <class View>
void kernel_from_torch(View const& w, safetensors::Tensor const& t, std::string const& path,
                           std::string const& name) {
  long const K = long(w.extent(0)), rows = long(w.extent(1)), in = long(w.extent(2)) / 2;
  require_shape(t, path, name, kernel_file_shape(K, rows, in));
  auto const values = t.to_double();
  auto h = Kokkos::create_mirror_view(w);
  for (long k = 0; k < K; ++k) kernel_from_torch_layout(values.data() + k * rows * in * 2, k, rows, in, h.data());
  Kokkos::deep_copy(w, h);
}

/// A per-row tensor (K, G q): gains as the reference's (G q, 1, 1), the bias as (G q);
/// an untied core's with a leading K.
template <class View>
safetensors::Tensor per_row_to_torch(View const& g, std::vector<long> const& row_shape, safetensors::DType dtype) {
  auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), g);
  long const K = long(h.extent(0));
  std::vector<double> values(h.data(), h.data() + h.span());
  std::vector<std::int64_t> shape(row_shape.begin(), row_shape.end());
  if (K != 1) shape.insert(shape.begin(), K);
  return safetensors::Tensor::from_double(dtype, shape, values);
}

template <class View>
void per_row_from_torch(View const& g, safetensors::Tensor const& t, std::string const& path, std::string const& name,
                         std::vector<long> want) {
  if (g.extent(0) != 1) want.insert(want.begin(), long(g.extent(0)));
  require_shape(t, path, name, want);
  auto const values = t.to_double();
  auto h = Kokkos::create_mirror_view(g);
  using T = typename View::non_const_value_type;
  for (std::size_t i = 0; i < values.size(); ++i) h.data()[i] = T(values[i]);
  Kokkos::deep_copy(g, h);
}

inline void require_equal(safetensors::File const& f, std::string const& path, std::string const& a,
                          std::string const& b) {
  auto const& ta = f.at(path, a);
  auto const& tb = f.at(path, b);
  if (ta.shape != tb.shape || ta.to_double() != tb.to_double())
    throw file_error(path + ": tensors '" + a + "' and '" + b + "' must be equal (the reference stores them twice)");
}

}  // namespace detail

/// The core's metadata keys (docs/file-formats.md).
namespace detail {

/// Every name a core's tensor may have under `prefix` (with or without weight drop's "_raw").
inline void core_keys(std::set<std::string>& keys, std::string const& prefix, bool weight_norm) {
  for (std::string const raw : {"", "_raw"}) {
    keys.insert(prefix + (weight_norm ? "weight1_v" : "weight1") + raw);
    keys.insert(prefix + (weight_norm ? "weight2_v" : "weight2") + raw);
  }
  if (weight_norm) {
    keys.insert(prefix + "weight1_g");
    keys.insert(prefix + "weight2_g");
  }
  keys.insert(prefix + "bias2");
}

/// A tensor that no reader takes is an error naming it: a misspelt name, or a tensor
/// of another model, never passes silently. `also` holds what the caller reads itself:
/// exact names, or prefixes ending in '.'.
inline void reject_unknown(safetensors::File const& f, std::string const& path, std::set<std::string> const& known,
                           std::vector<std::string> const& also, char const* what) {
  for (auto const& [name, t] : f.tensors) {
    if (known.count(name)) continue;
    bool taken = false;
    for (auto const& a : also)
      taken = taken || name == a || (!a.empty() && a.back() == '.' && name.rfind(a, 0) == 0);
    if (!taken) throw file_error(path + ": tensor '" + name + "' is not part of " + what);
  }
}

}  // namespace detail

inline void write_shape_metadata(std::map<std::string, std::string>& meta, TrellisShape const& s) {
  meta["ninp"] = std::to_string(s.ninp);
  meta["nhid"] = std::to_string(s.nhid);
  meta["nout"] = std::to_string(s.nout);
  meta["nlevels"] = std::to_string(s.nlevels);
  meta["dilation"] = detail::dilation_json(s.dilation);
  meta["aux_frequency"] = std::to_string(s.aux_frequency);
  meta["wnorm"] = s.weight_norm ? "true" : "false";
}

inline int metadata_int(std::map<std::string, std::string> const& meta, std::string const& path,
                        std::string const& key) {
  auto it = meta.find(key);
  if (it == meta.end()) throw file_error(path + ": metadata has no '" + key + "'");
  try {
    std::size_t used = 0;
    int const v = std::stoi(it->second, &used);
    if (used != it->second.size()) throw std::invalid_argument(key);
    return v;
  } catch (std::exception const&) {
    throw file_error(path + ": metadata '" + key + "' is \"" + it->second + "\", not an integer");
  }
}

inline TrellisShape read_shape_metadata(std::map<std::string, std::string> const& meta, std::string const& path) {
  TrellisShape s;
  s.ninp = metadata_int(meta, path, "ninp");
  s.nhid = metadata_int(meta, path, "nhid");
  s.nout = metadata_int(meta, path, "nout");
  s.nlevels = metadata_int(meta, path, "nlevels");
  s.aux_frequency = metadata_int(meta, path, "aux_frequency");
  auto const d = meta.find("dilation");
  if (d == meta.end()) throw file_error(path + ": metadata has no 'dilation'");
  auto const dilation = detail::parse_int_list(d->second);
  if (!dilation) throw file_error(path + ": metadata 'dilation' is \"" + d->second + "\", not a JSON list of integers");
  s.dilation = *dilation;
  auto const w = meta.find("wnorm");
  if (w == meta.end() || (w->second != "true" && w->second != "false"))
    throw file_error(path + ": metadata 'wnorm' must be \"true\" or \"false\"");
  s.weight_norm = w->second == "true";
  try {
    s.validate("trellis::read_shape_metadata");
  } catch (std::exception const& e) {
    throw file_error(path + ": " + e.what());
  }
  return s;
}

/// Writes a core's tensors (its parameters, or anything of their shapes, such as their
/// gradients) under `prefix` (e.g. "tnet.module.full_conv."). An untied core's kernels
/// (one per level: the gated TCN) have no counterpart in the reference: its tensors
/// carry a leading kernel dimension.
template <class Params>
void write_core_tensors(safetensors::File& f, std::string const& prefix, Params const& p, bool weight_norm,
                        bool raw_names, safetensors::DType dtype) {
  long const rows = long(p.weight1.extent(1));
  std::string const raw = raw_names ? "_raw" : "";
  if (weight_norm) {
    f.tensors[prefix + "weight1_g"] = detail::per_row_to_torch(p.weight1_g, {rows, 1, 1}, dtype);
    f.tensors[prefix + "weight1_v" + raw] = detail::kernel_to_torch(p.weight1, dtype);
    f.tensors[prefix + "weight2_g"] = detail::per_row_to_torch(p.weight2_g, {rows, 1, 1}, dtype);
    f.tensors[prefix + "weight2_v" + raw] = detail::kernel_to_torch(p.weight2, dtype);
  } else {
    f.tensors[prefix + "weight1" + raw] = detail::kernel_to_torch(p.weight1, dtype);
    f.tensors[prefix + "weight2" + raw] = detail::kernel_to_torch(p.weight2, dtype);
  }
  f.tensors[prefix + "bias2"] = detail::per_row_to_torch(p.bias2, {rows}, dtype);
}

/// Writes the network's parameters under `prefix`; an untied network's file says
/// weight_tying untied in its metadata.
template <class Network>
void write_core(safetensors::File& f, std::string const& prefix, Network const& net, bool raw_names,
                safetensors::DType dtype) {
  write_core_tensors(f, prefix, net.parameters(), net.shape().weight_norm, raw_names, dtype);
  if constexpr (!Network::weight_tying::tied) f.metadata["weight_tying"] = Network::weight_tying::name;
}

/// Reads the core's tensors from under `prefix`; names with or without "_raw" are
/// accepted. The file's weight tying must be the network's.
template <class Network>
void read_core(safetensors::File const& f, std::string const& path, std::string const& prefix, Network& net) {
  auto const& p = net.parameters();
  bool const weight_norm = net.shape().weight_norm;
  auto const it = f.metadata.find("weight_tying");
  std::string const file_tying = it == f.metadata.end() ? TiedAcrossDepth::name : it->second;
  if (file_tying != Network::weight_tying::name)
    throw file_error(path + ": holds a core whose weight tying is '" + file_tying + "'; this model's is '" +
                     Network::weight_tying::name + "'");
  auto pick = [&](std::string const& name) {
    if (f.has(prefix + name + "_raw")) return prefix + name + "_raw";
    if (f.has(prefix + name)) return prefix + name;
    throw file_error(path + ": no tensor '" + prefix + name + "' (nor '" + prefix + name + "_raw')" +
                     (weight_norm ? " (the metadata says wnorm true)" : " (the metadata says wnorm false)"));
  };
  long const rows = long(p.weight1.extent(1));
  if (weight_norm) {
    auto const g1 = prefix + "weight1_g", g2 = prefix + "weight2_g";
    detail::per_row_from_torch(p.weight1_g, f.at(path, g1), path, g1, {rows, 1, 1});
    detail::per_row_from_torch(p.weight2_g, f.at(path, g2), path, g2, {rows, 1, 1});
    auto const v1 = pick("weight1_v"), v2 = pick("weight2_v");
    detail::kernel_from_torch(p.weight1, f.at(path, v1), path, v1);
    detail::kernel_from_torch(p.weight2, f.at(path, v2), path, v2);
  } else {
    auto const w1 = pick("weight1"), w2 = pick("weight2");
    detail::kernel_from_torch(p.weight1, f.at(path, w1), path, w1);
    detail::kernel_from_torch(p.weight2, f.at(path, w2), path, w2);
  }
  detail::per_row_from_torch(p.bias2, f.at(path, prefix + "bias2"), path, prefix + "bias2", {rows});
}

/// A bare core file (docs/file-formats.md, "core model"): the reference's TrellisNet names under
/// "full_conv." and the shape in the metadata.
inline TrellisShape read_core_shape(safetensors::File const& f, std::string const& path) {
  if (f.metadata.count("ntoken")) throw file_error(path + ": a language model (its metadata has 'ntoken'), not a bare core");
  return read_shape_metadata(f.metadata, path);
}

template <class Network>
void read_core_model(safetensors::File const& f, std::string const& path, Network& net) {
  auto const& s = net.shape();
  auto const file_shape = read_core_shape(f, path);
  if (file_shape.describe() != s.describe())
    throw file_error(path + ": holds a core with " + file_shape.describe() + "; expected " + s.describe());
  std::set<std::string> known;
  detail::core_keys(known, "full_conv.", s.weight_norm);
  detail::reject_unknown(f, path, known, {}, s.weight_norm ? "a core with weight normalisation"
                                                          : "a core without weight normalisation");
  read_core(f, path, "full_conv.", net);
}

template <class Network>
void write_core_model(safetensors::File& f, Network const& net, safetensors::DType dtype) {
  write_shape_metadata(f.metadata, net.shape());
  write_core(f, "full_conv.", net, false, dtype);
}

}  // namespace trellis
