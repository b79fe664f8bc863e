#include "models/checkpoint.h"

#include <ATen/core/grad_mode.h>

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
  auto model = make_model(config, dtype, device);
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < model->specs().size(); ++i) index[model->specs()[i].name] = i;
  std::vector<const io::TensorSource*> chosen(model->specs().size(), nullptr);
  for (const auto& src : sources) {
    const std::string name = canonical_name(config, src.name);
    if (name.empty()) continue;
    auto it = index.find(name);
    if (it == index.end()) {
      throw range_error("ERR_TDPO_CHECKPOINT", "unexpected tensor '" + src.name + "' in " + src.file +
                                                   " for a " + config.model_type + " model");
    }
    if (chosen[it->second] != nullptr) {
      throw range_error("ERR_TDPO_CHECKPOINT", "tensor '" + name + "' appears twice (" +
                                                   chosen[it->second]->file + ", " + src.file + ")");
    }
    const auto& want = model->specs()[it->second].shape;
    if (src.shape != want) {
      throw range_error("ERR_TDPO_CHECKPOINT", "tensor '" + src.name + "' in " + src.file + " has shape " +
                                                   shape_text(src.shape) + " but the config needs " +
                                                   shape_text(want));
    }
    chosen[it->second] = &src;
  }
  for (size_t i = 0; i < chosen.size(); ++i) {
    if (chosen[i] == nullptr) {
      throw range_error("ERR_TDPO_CHECKPOINT", "tensor '" + model->specs()[i].name +
                                                   "' is missing from the checkpoint");
    }
  }
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < chosen.size(); ++i) model->params()[i].copy_(io::read_tensor(*chosen[i]));
  return model;
}

void save_model(const CausalLM& model, const std::string& path) {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (size_t i = 0; i < model.specs().size(); ++i) tensors.emplace_back(model.specs()[i].name, model.params()[i]);
  io::write_safetensors(path, tensors);
}

}  // namespace tdpo::models
