#include "models/checkpoint.h"

#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>

#include "common/error.h"

namespace tdpo::models {

namespace {
std::string shape_text(const std::vector<int64_t>& s) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << "]";
  return o.str();
}
}  // namespace

std::unique_ptr<CausalLM> load_model(const ModelConfig& config,
                                     const std::vector<io::TensorSource>& sources,
                                     at::ScalarType dtype, at::Device device) {
  validate_config(config);
  // Names and shapes are matched against the config before anything is allocated: a config.json
  // that asks for far more layers than the checkpoint holds is refused at once instead of
  // allocating for minutes. Every layer has a tensor, so a config with more layers than the
  // checkpoint has tensors is wrong within its first sources.size() + 1 layers: only those specs
  // are built, and the first missing one is named.
  ModelConfig probe = config;
  probe.layers = std::min<int64_t>(config.layers, static_cast<int64_t>(sources.size()) + 1);
  const std::vector<ParamSpec> specs = param_specs(probe);
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < specs.size(); ++i) index[specs[i].name] = i;
  std::vector<const io::TensorSource*> chosen(specs.size(), nullptr);
  for (const auto& src : sources) {
    const std::string name = canonical_name(config, src.name);
    if (name.empty()) continue;
    auto it = index.find(name);
    if (it == index.end()) {
      throw range_error("ERR_TDPO_CHECKPOINT", "unexpected tensor '" + src.name + "' in " + src.file +
                                                   " for a " + config.model_type + " model with " +
                                                   std::to_string(config.layers) + " layers (config.json)");
    }
    if (chosen[it->second] != nullptr) {
      throw range_error("ERR_TDPO_CHECKPOINT", "tensor '" + name + "' appears twice (" +
                                                   chosen[it->second]->file + ", " + src.file + ")");
    }
    const auto& want = specs[it->second].shape;
    if (src.shape != want) {
      throw range_error("ERR_TDPO_CHECKPOINT", "tensor '" + src.name + "' in " + src.file + " has shape " +
                                                   shape_text(src.shape) + " but the config needs " +
                                                   shape_text(want));
    }
    chosen[it->second] = &src;
  }
  for (size_t i = 0; i < chosen.size(); ++i) {
    if (chosen[i] == nullptr) {
      throw range_error("ERR_TDPO_CHECKPOINT", "tensor '" + specs[i].name +
                                                   "' is missing from the checkpoint (config.json asks for " +
                                                   std::to_string(config.layers) + " layers)");
    }
  }
  auto model = make_model(config, dtype, device);
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < chosen.size(); ++i) {
    at::Tensor t = io::read_tensor(*chosen[i]);
    // NaN or infinite weights load fine and give NaN logits or all-zero generations later.
    const at::Tensor finite = at::isfinite(t);
    if (!finite.all().item<bool>()) {
      const int64_t at_index = (~finite).reshape({-1}).nonzero()[0].item<int64_t>();
      const double v = t.reshape({-1})[at_index].item<double>();
      throw range_error("ERR_TDPO_CHECKPOINT", "tensor '" + chosen[i]->name + "' in " + chosen[i]->file +
                                                   " holds " + (std::isnan(v) ? "NaN" : v > 0 ? "+Infinity" : "-Infinity") +
                                                   " (at flat index " + std::to_string(at_index) +
                                                   "): the checkpoint is corrupt or diverged");
    }
    model->params()[i].copy_(t);
  }
  return model;
}

void save_model(const CausalLM& model, const std::string& path) {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (size_t i = 0; i < model.specs().size(); ++i) tensors.emplace_back(model.specs()[i].name, model.params()[i]);
  io::write_safetensors(path, tensors);
}

}  // namespace tdpo::models
