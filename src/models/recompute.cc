#include "models/recompute.h"

#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include "models/causal_lm.h"

namespace tdpo::models {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The block travels to the backward pass in the context's saved data, which holds IValues only:
// a capsule carries it.
struct BlockHolder : torch::CustomClassHolder {
  std::function<at::Tensor(const at::Tensor&)> block;
};

struct Recompute : torch::autograd::Function<Recompute> {
  // Runs with gradients disabled (Function::apply), so the block records no graph.
  static at::Tensor forward(AutogradContext* ctx, const c10::intrusive_ptr<BlockHolder>& holder, const at::Tensor& x,
                            at::TensorList params) {
    ctx->saved_data["block"] = c10::IValue::make_capsule(holder);
    std::vector<at::Tensor> saved{x};
    saved.insert(saved.end(), params.begin(), params.end());
    ctx->save_for_backward(saved);
    return holder->block(x);
  }

  // One gradient per input of apply(): none for the holder, then x, then each parameter.
  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    auto holder = c10::static_intrusive_pointer_cast<BlockHolder>(ctx->saved_data["block"].toCapsule());
    variable_list saved = ctx->get_saved_variables();
    const bool x_grad = saved[0].requires_grad();
    at::Tensor x = saved[0].detach().requires_grad_(x_grad);
    variable_list wrt;
    std::vector<size_t> slot;  // wrt[k] is input slot[k] of saved
    if (x_grad) {
      wrt.push_back(x);
      slot.push_back(0);
    }
    for (size_t i = 1; i < saved.size(); ++i) {
      if (saved[i].requires_grad()) {
        wrt.push_back(saved[i]);
        slot.push_back(i);
      }
    }
    variable_list out(1 + saved.size());
    if (wrt.empty()) return out;
    at::Tensor y;
    {
      at::AutoGradMode enable(true);
      y = holder->block(x);
    }
    variable_list grads = torch::autograd::grad({y}, wrt, {grad_out[0]}, /*retain_graph=*/false,
                                                /*create_graph=*/false, /*allow_unused=*/true);
    for (size_t k = 0; k < wrt.size(); ++k) out[1 + slot[k]] = grads[k];
    return out;
  }
};

}  // namespace

at::Tensor recompute_in_backward(std::function<at::Tensor(const at::Tensor&)> block, const at::Tensor& x,
                                 at::TensorList params) {
  auto holder = c10::make_intrusive<BlockHolder>();
  holder->block = std::move(block);
  return Recompute::apply(holder, x, params);
}

at::Tensor CausalLM::run_block(const std::function<at::Tensor(const at::Tensor&)>& block, const at::Tensor& x,
                               size_t first, size_t count, const KVCache* cache) const {
  if (!checkpointing_ || cache != nullptr || !at::GradMode::is_enabled()) return block(x);
  return recompute_in_backward(block, x, at::TensorList(params_.data() + first, count));
}

}  // namespace tdpo::models
