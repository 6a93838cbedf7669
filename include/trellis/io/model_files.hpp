#pragma once
// The language model and the sequence classifier to and from safetensors in the
// reference's full key sets, so that its load_state_dict accepts our files:
//   language model: encoder.weight, decoder.weight (tied: equal), decoder.bias, the core
//          under tnet.module.full_conv. and network.0.module.full_conv.; with MoS
//          mixsoft.{prior,latent,decoder}.{weight,bias}, again under network.1.
//   classifier: the core under network.0.module.full_conv., linear.weight, linear.bias.
// On read every duplicate must equal its twin.
#include <map>
#include <set>
#include <string>

#include <trellis/io/core_file.hpp>
#include <trellis/nn/language_model.hpp>
#include <trellis/nn/sequence_classifier.hpp>

namespace trellis {

inline void write_language_model_metadata(std::map<std::string, std::string>& meta, LanguageModelConfig const& c) {
  write_shape_metadata(meta, c.core);
  meta["ntoken"] = std::to_string(c.ntoken);
  meta["n_experts"] = std::to_string(c.n_experts);
}

/// The language model's tensors in the reference's full key set.
template <class Exec, class Scalar, class... Policies>
void write_language_model(safetensors::File& f, LanguageModel<Exec, Scalar, Policies...>& m, safetensors::DType dtype) {
  auto const& c = m.config();
  write_language_model_metadata(f.metadata, c);
  f.tensors["encoder.weight"] = to_tensor(m.encoder().weight, dtype);
  f.tensors["decoder.weight"] = f.tensors["encoder.weight"];
  f.tensors["decoder.bias"] = to_tensor(m.decoder().bias, dtype);
  for (char const* prefix : {"tnet.module.full_conv.", "network.0.module.full_conv."})
    write_core(f, prefix, m.core(), true, dtype);
  if (c.n_experts > 0) {
    auto& mos = m.mixsoft();
    for (std::string const prefix : {"mixsoft.", "network.1."}) {
      f.tensors[prefix + "prior.weight"] = to_tensor(mos.prior.weight, dtype);
      f.tensors[prefix + "prior.bias"] = to_tensor(mos.prior.bias, dtype);
      f.tensors[prefix + "latent.weight"] = to_tensor(mos.latent.weight, dtype);
      f.tensors[prefix + "latent.bias"] = to_tensor(mos.latent.bias, dtype);
      f.tensors[prefix + "decoder.weight"] = f.tensors["encoder.weight"];
      f.tensors[prefix + "decoder.bias"] = f.tensors["decoder.bias"];
    }
  }
}

/// The configuration a language-model file describes (it is one exactly when it has ntoken).
inline LanguageModelConfig read_language_model_config(safetensors::File const& f, std::string const& path) {
  if (!f.metadata.count("ntoken")) throw file_error(path + ": not a language model (its metadata has no 'ntoken')");
  LanguageModelConfig c;
  c.core = read_shape_metadata(f.metadata, path);
  c.ntoken = metadata_int(f.metadata, path, "ntoken");
  c.n_experts = f.metadata.count("n_experts") ? metadata_int(f.metadata, path, "n_experts") : 0;
  return c;
}

/// Reads a language model in the reference's names. A tensor the model does not have is
/// an error unless `also` names it (see detail::reject_unknown): a checkpoint passes
/// its optimiser state and counters there.
template <class Exec, class Scalar, class... Policies>
void read_language_model(safetensors::File const& f, std::string const& path, LanguageModel<Exec, Scalar, Policies...>& m,
                         std::vector<std::string> const& also = {}) {
  auto const& c = m.config();
  auto const file_config = read_language_model_config(f, path);
  if (file_config.core.describe() != c.core.describe() || file_config.ntoken != c.ntoken ||
      file_config.n_experts != c.n_experts)
    throw file_error(path + ": holds a language model with " + file_config.core.describe() +
                     " ntoken=" + std::to_string(file_config.ntoken) + " n_experts=" +
                     std::to_string(file_config.n_experts) + "; expected " + c.core.describe() + " ntoken=" +
                     std::to_string(c.ntoken) + " n_experts=" + std::to_string(c.n_experts));
  {
    std::set<std::string> known{"encoder.weight", "decoder.weight", "decoder.bias"};
    for (char const* prefix : {"tnet.module.full_conv.", "network.0.module.full_conv."})
      detail::core_keys(known, prefix, c.core.weight_norm);
    if (c.n_experts > 0)
      for (std::string const prefix : {"mixsoft.", "network.1."})
        for (char const* n : {"prior.weight", "prior.bias", "latent.weight", "latent.bias", "decoder.weight", "decoder.bias"})
          known.insert(prefix + n);
    detail::reject_unknown(f, path, known, also,
                           c.n_experts > 0 ? "a language model with a mixture of softmaxes"
                                           : "a language model with a tied decoder (n_experts 0)");
  }
  from_tensor(m.encoder().weight, f.at(path, "encoder.weight"), path, "encoder.weight");
  if (f.has("decoder.weight")) detail::require_equal(f, path, "encoder.weight", "decoder.weight");
  from_tensor(m.decoder().bias, f.at(path, "decoder.bias"), path, "decoder.bias");
  std::string core_prefix = "tnet.module.full_conv.";
  if (!f.has(core_prefix + "bias2")) core_prefix = "network.0.module.full_conv.";
  read_core(f, path, core_prefix, m.core());
  if (f.has("tnet.module.full_conv.bias2") && f.has("network.0.module.full_conv.bias2"))
    for (auto const& [name, t] : f.tensors)
      if (name.rfind("tnet.module.full_conv.", 0) == 0)
        detail::require_equal(f, path, name, "network.0.module.full_conv." + name.substr(22));
  if (c.n_experts > 0) {
    auto& mos = m.mixsoft();
    from_tensor(mos.prior.weight, f.at(path, "mixsoft.prior.weight"), path, "mixsoft.prior.weight");
    from_tensor(mos.prior.bias, f.at(path, "mixsoft.prior.bias"), path, "mixsoft.prior.bias");
    from_tensor(mos.latent.weight, f.at(path, "mixsoft.latent.weight"), path, "mixsoft.latent.weight");
    from_tensor(mos.latent.bias, f.at(path, "mixsoft.latent.bias"), path, "mixsoft.latent.bias");
    for (char const* n : {"prior.weight", "prior.bias", "latent.weight", "latent.bias"})
      if (f.has(std::string("network.1.") + n))
        detail::require_equal(f, path, std::string("mixsoft.") + n, std::string("network.1.") + n);
    if (f.has("mixsoft.decoder.weight")) detail::require_equal(f, path, "encoder.weight", "mixsoft.decoder.weight");
    if (f.has("mixsoft.decoder.bias")) detail::require_equal(f, path, "decoder.bias", "mixsoft.decoder.bias");
    if (f.has("network.1.decoder.weight")) detail::require_equal(f, path, "encoder.weight", "network.1.decoder.weight");
    if (f.has("network.1.decoder.bias")) detail::require_equal(f, path, "decoder.bias", "network.1.decoder.bias");
  }
}

template <class Exec, class Scalar, class... Policies>
void write_sequence_classifier(safetensors::File& f, SequenceClassifier<Exec, Scalar, Policies...>& m, safetensors::DType dtype) {
  auto const& c = m.config();
  write_shape_metadata(f.metadata, c.core);
  f.metadata["nclasses"] = std::to_string(c.nclasses);
  write_core(f, "network.0.module.full_conv.", m.core(), true, dtype);
  f.tensors["linear.weight"] = to_tensor(m.linear().weight, dtype);
  f.tensors["linear.bias"] = to_tensor(m.linear().bias, dtype);
}

template <class Exec, class Scalar, class... Policies>
void read_sequence_classifier(safetensors::File const& f, std::string const& path, SequenceClassifier<Exec, Scalar, Policies...>& m,
                              std::vector<std::string> const& also = {}) {
  auto const& c = m.config();
  auto const s = read_shape_metadata(f.metadata, path);
  if (s.describe() != c.core.describe() || metadata_int(f.metadata, path, "nclasses") != c.nclasses)
    throw file_error(path + ": holds a classifier with " + s.describe() + " nclasses=" + f.metadata.at("nclasses") +
                     "; expected " + c.core.describe() + " nclasses=" + std::to_string(c.nclasses));
  std::set<std::string> known{"linear.weight", "linear.bias"};
  detail::core_keys(known, "network.0.module.full_conv.", c.core.weight_norm);
  detail::reject_unknown(f, path, known, also, "a sequence classifier");
  read_core(f, path, "network.0.module.full_conv.", m.core());
  from_tensor(m.linear().weight, f.at(path, "linear.weight"), path, "linear.weight");
  from_tensor(m.linear().bias, f.at(path, "linear.bias"), path, "linear.bias");
}

}  // namespace trellis
