// The native half of a preference-optimisation step: policy forward with autograd, reference
// forward without, the fused loss, backward (accumulated over micro-batches), global grad-norm
// clipping and the optimizer update. TypeScript owns the loop and passes the learning rate.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "distributed/group.h"
#include "loss/tdpo_loss.h"
#include "models/causal_lm.h"

namespace tdpo::train {

using loss::Objective;

// No defaults: lib/options.ts holds them, and the binding passes every field.
struct StepOptions {
  Objective objective = Objective::Sft;
  double beta = NAN, alpha = NAN;  // unused by SFT
  std::string optimizer;           // rmsprop | adamw | sgd
  double weight_decay = NAN;
  // Preference objectives: the loss from the final hidden states, chunk by chunk
  // (loss/fused_linear.h); false materialises [B, T, V] logits. SFT always materialises.
  bool fused_linear = true;
  int64_t chunk_bytes = 0;  // with fused_linear: > 0
  bool gradient_checkpointing = false;
};
// Throws ERR_TDPO_OPTION naming the field ("options.beta", ...).
void validate(const StepOptions& options);

// Whether the step keeps every batch's key mask: TDPO_KEY_MASK=always, read once (the addon reads
// it at load, on the main thread). By default the mask is left out where it cannot change what the
// step reads (train_step.cc, key_mask_needed); the tests compare the two.
bool key_mask_always();

// One micro-batch, token ids with labels as a language model sees them: labels[b, t] is the
// token at t (prompt and padding -100); the step shifts them so logits at t score token t + 1.
// For the preference objectives the rows are [chosen..., rejected...] (pair i = rows i, i + B/2).
struct MicroBatch {
  at::Tensor ids, attention_mask, labels;  // int64 [B, T]
};

// Per-pair statistics (empty for SFT) and the micro-batch loss.
struct MicroStats {
  double loss = 0;
  int64_t tokens = 0;  // scored tokens (SFT)
  std::vector<double> chosen_rewards, rejected_rewards, chosen_kl, rejected_kl, chosen_logps, rejected_logps;
  std::vector<double> chosen_entropy, rejected_entropy;
};

class TrainStep {
 public:
  // policy's parameters get requires_grad (and its gradient checkpointing is set as the options
  // say); reference (frozen) may be null for SFT.
  TrainStep(std::shared_ptr<models::CausalLM> policy, std::shared_ptr<models::CausalLM> reference,
            StepOptions options);

  // Adds scale * d loss / d params to the gradients (scale = 1 / micro-batches per step).
  MicroStats accumulate(const MicroBatch& batch, double scale);
  // The same statistics without gradients (evaluation).
  MicroStats evaluate(const MicroBatch& batch) const;
  // Clips the accumulated gradient to max_grad_norm (<= 0: no clipping), applies the optimizer
  // with this learning rate, clears the gradients; returns the norm before clipping. With a
  // process group, the gradients are first summed over its ranks (bucketed allreduce after the
  // backward passes): the loop weighs each rank's micro-batches so that the sum is the global
  // batch's mean, then every rank clips by the same global norm and takes the same step.
  double apply(double lr, double max_grad_norm);
  // Data-parallel training over `group` (null: this process alone). Called after the policy took
  // rank 0's weights (a broadcast), so float32 masters are refreshed from the policy here.
  void set_group(std::shared_ptr<dist::Group> group);

  void save_optimizer(const std::string& path) const;
  void load_optimizer(const std::string& path);

 private:
  MicroStats run(const MicroBatch& batch, bool backward, double scale) const;
  MicroStats run_materialised(const MicroBatch& batch, const at::Tensor& target, bool backward, double scale) const;
  MicroStats run_fused_linear(const MicroBatch& batch, const at::Tensor& target, bool backward, double scale) const;

  // The tensors the optimizer updates: the policy's parameters, or their float32 masters.
  std::vector<at::Tensor> optimized() const;
  // A fresh optimizer of the configured kind over these tensors (learning rate set per apply).
  std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<at::Tensor>& params) const;
  // The policy's parameters take the masters' values, rounded to its dtype (none without masters).
  void round_masters_into_policy();

  std::shared_ptr<models::CausalLM> policy_, reference_;
  StepOptions options_;
  // Mixed precision (a policy held in a lower precision, i.e. bfloat16): float32 master copies of
  // its parameters, in the order of policy_->params(); empty for a float32 policy. Gradients are
  // added to the masters after every micro-batch, the optimizer (and its state) works on them,
  // and the policy gets the rounded result, as PyTorch AMP with master weights does. Without
  // them an update below bf16's resolution (lr 5e-6 on weights ~0.02: a 40th of a step) is lost.
  std::vector<at::Tensor> masters_;
  int64_t head_index_ = -1;  // the output projection's index in params() (fused linear)
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::shared_ptr<dist::Group> group_;
};

}  // namespace tdpo::train
