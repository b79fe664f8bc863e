#include "train/train_step.h"

#include <cmath>
#include <cstdlib>
#include <sstream>
#include <type_traits>

#include "common/alloc.h"
#include "common/error.h"
#include "io/atomic_file.h"
#include "loss/fused_linear.h"

namespace tdpo::train {

void validate(const StepOptions& o) {
  if (o.objective != Objective::Sft) {
    loss::Options lo;
    lo.objective = o.objective;
    lo.beta = o.beta;
    lo.alpha = o.alpha;
    loss::validate_options(lo, "options.");
  }
  if (o.optimizer != "rmsprop" && o.optimizer != "adamw" && o.optimizer != "sgd") {
    throw range_error("ERR_TDPO_OPTION", "options.optimizer must be 'rmsprop', 'adamw' or 'sgd', got '" + o.optimizer + "'");
  }
  if (!(o.weight_decay >= 0 && std::isfinite(o.weight_decay))) {
    throw range_error("ERR_TDPO_OPTION", "options.weightDecay must be a finite number >= 0, got " + js_number(o.weight_decay));
  }
  if (o.fused_linear && o.chunk_bytes <= 0) {
    throw range_error("ERR_TDPO_OPTION", "options.chunkMb must be > 0");
  }
}

TrainStep::TrainStep(std::shared_ptr<models::CausalLM> policy, std::shared_ptr<models::CausalLM> reference,
                     StepOptions options)
    : policy_(std::move(policy)), reference_(std::move(reference)), options_(std::move(options)) {
  validate(options_);
  if (options_.objective != Objective::Sft && !reference_) {
    throw range_error("ERR_TDPO_OPTION", "a preference objective needs a reference model");
  }
  if (reference_ && reference_->device() != policy_->device()) {
    throw range_error("ERR_TDPO_OPTION", "the reference model is on " + reference_->device().str() + ", the policy on " +
                                             policy_->device().str() + ": load both on one device");
  }
  policy_->set_gradient_checkpointing(options_.gradient_checkpointing);
  std::vector<at::Tensor> params = policy_->params();
  const at::Tensor& head = policy_->output_weight();
  bool mixed = false;
  for (size_t i = 0; i < params.size(); ++i) {
    params[i].requires_grad_(true);
    if (params[i].is_same(head)) head_index_ = static_cast<int64_t>(i);
    mixed = mixed || params[i].scalar_type() != at::kFloat;
  }
  if (mixed) {
    masters_.resize(params.size());
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); ++i) masters_[i] = params[i].detach().to(at::kFloat, /*non_blocking=*/false, /*copy=*/true);
    params = masters_;
  }
  optimizer_ = make_optimizer(params);
}

std::unique_ptr<torch::optim::Optimizer> TrainStep::make_optimizer(const std::vector<at::Tensor>& params) const {
  // Defaults as in PyTorch, which the official TDPO code uses (RMSprop: alpha 0.99, eps 1e-8).
  if (options_.optimizer == "rmsprop") {
    return std::make_unique<torch::optim::RMSprop>(params, torch::optim::RMSpropOptions(0.0).weight_decay(options_.weight_decay));
  }
  if (options_.optimizer == "adamw") {
    return std::make_unique<torch::optim::AdamW>(params, torch::optim::AdamWOptions(0.0).weight_decay(options_.weight_decay));
  }
  if (options_.optimizer == "sgd") {
    return std::make_unique<torch::optim::SGD>(params, torch::optim::SGDOptions(0.0).weight_decay(options_.weight_decay));
  }
  throw range_error("ERR_TDPO_OPTION", "optimizer must be 'rmsprop', 'adamw' or 'sgd', got '" + options_.optimizer + "'");
}

bool key_mask_always() {
  static const bool always = [] {
    const char* e = std::getenv("TDPO_KEY_MASK");
    return e != nullptr && std::string(e) == "always";
  }();
  return always;
}

namespace {
// labels[b, t] -> the label the logits at t are scored against: token t + 1 (last position -100).
at::Tensor shift_labels(const at::Tensor& labels) {
  return at::cat({labels.slice(1, 1), at::full({labels.size(0), 1}, loss::kIgnoreIndex, labels.options())}, 1);
}

// The key mask, or none where it cannot change what the step reads. When each row's padding
// comes after its tokens (as collatePairs pads) and no padding position carries a label, every
// key a token sees under the causal mask is a token, and no padding position's logits are scored
// (their target is a later padding position's label, or none): so the mask changes nothing the
// loss or a statistic reads (under eager attention not a bit), and without it SDPA takes its
// causal kernel, the only one that is flash attention on CUDA. Checked on the host batch.
at::Tensor key_mask_needed(const MicroBatch& host) {
  const at::Tensor& mask = host.attention_mask;
  if (!mask.defined() || key_mask_always()) return mask;
  const at::Tensor real = mask != 0;
  const bool padding_last = (real.slice(1, 1) <= real.slice(1, 0, -1)).all().item<bool>();
  const bool padding_unlabelled = host.labels.masked_select(real.logical_not()).eq(loss::kIgnoreIndex).all().item<bool>();
  return padding_last && padding_unlabelled ? at::Tensor() : mask;
}
}  // namespace

MicroStats TrainStep::run(const MicroBatch& host_batch, bool backward, double scale) const {
  // One crossing to the policy's device per micro-batch (nothing moves on the CPU).
  const at::Device device = policy_->device();
  auto on_device = [&](const at::Tensor& t) { return t.defined() ? t.to(device) : t; };
  const MicroBatch batch{on_device(host_batch.ids), on_device(key_mask_needed(host_batch)), on_device(host_batch.labels)};
  const at::Tensor target = shift_labels(batch.labels);
  torch::AutoGradMode grad_mode(backward);
  if (options_.objective == Objective::Sft) {
    MicroStats out;
    memory_phase("policy forward");
    at::Tensor logits = policy_->forward(batch.ids, batch.attention_mask).to(at::kFloat);
    memory_phase("loss");
    out.tokens = (target != loss::kIgnoreIndex).sum().item<int64_t>();
    // A mean over no scored token is 0 / 0: such a batch has loss 0 and adds no gradient (as a
    // preference pair without scored tokens adds none), and says so with tokens = 0.
    if (out.tokens == 0) return out;
    at::Tensor loss = at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}), target.reshape({-1}),
                                             {}, at::Reduction::Mean, loss::kIgnoreIndex);
    out.loss = loss.item<double>();
    if (backward) {
      memory_phase("backward");
      (loss * scale).backward();
    }
    return out;
  }
  return options_.fused_linear ? run_fused_linear(batch, target, backward, scale)
                               : run_materialised(batch, target, backward, scale);
}

namespace {
MicroStats pair_stats(loss::Result&& res) {
  MicroStats out;
  out.loss = res.loss;
  out.chosen_rewards = std::move(res.chosen_rewards);
  out.rejected_rewards = std::move(res.rejected_rewards);
  out.chosen_kl = std::move(res.chosen_kl);
  out.rejected_kl = std::move(res.rejected_kl);
  out.chosen_logps = std::move(res.chosen_logps);
  out.rejected_logps = std::move(res.rejected_logps);
  out.chosen_entropy = std::move(res.chosen_entropy);
  out.rejected_entropy = std::move(res.rejected_entropy);
  return out;
}

loss::Options loss_options(const StepOptions& o, bool grad) {
  loss::Options lo;
  lo.objective = o.objective;
  lo.beta = o.beta;
  lo.alpha = o.alpha;
  lo.grad = grad;
  lo.entropy = true;  // logged as entropy/chosen, entropy/rejected
  return lo;
}
}  // namespace

MicroStats TrainStep::run_materialised(const MicroBatch& batch, const at::Tensor& target, bool backward,
                                       double scale) const {
  memory_phase("policy forward");
  at::Tensor logits = policy_->forward(batch.ids, batch.attention_mask).to(at::kFloat);
  at::Tensor ref_logits;
  memory_phase("reference forward");
  {
    at::NoGradGuard no_grad;
    ref_logits = reference_->forward(batch.ids, batch.attention_mask).to(at::kFloat).contiguous();
  }
  if (!policy_->device().is_cpu() || std::string(loss::cpu_row_math()) == "aten") {
    // Off the CPU (or with TDPO_FUSED_LINEAR_ROWS=aten, which tests this path on the CPU): the
    // reference composition in libtorch ops, its gradient by autograd, the unfused baseline.
    memory_phase("loss");
    loss::Composed c = loss::compose(logits, ref_logits, target, loss_options(options_, backward));
    if (backward) {
      memory_phase("backward");
      (c.loss * scale).backward();
    }
    return pair_stats(std::move(c.result));
  }
  const at::Tensor policy_values = logits.detach().contiguous();
  const at::Tensor labels32 = target.to(at::kInt).contiguous();
  loss::Inputs<float> in;
  in.policy = policy_values.data_ptr<float>();
  in.reference = ref_logits.data_ptr<float>();
  in.labels = labels32.data_ptr<int32_t>();
  in.batch = logits.size(0);
  in.seq = logits.size(1);
  in.vocab = logits.size(2);
  memory_phase("loss");
  loss::Result res = loss::fused(in, loss_options(options_, backward));
  // The fused kernel gives d loss / d logits; autograd carries it into the parameters.
  if (backward) {
    memory_phase("backward");
    logits.backward(res.grad.mul_(scale));
  }
  return pair_stats(std::move(res));
}

MicroStats TrainStep::run_fused_linear(const MicroBatch& batch, const at::Tensor& target, bool backward,
                                       double scale) const {
  // The reference first: its forward pass's temporaries then come and go before the policy's
  // activations are held, and only its [B, T, H] hidden states wait for the loss.
  at::Tensor ref_hidden;
  memory_phase("reference forward");
  {
    at::NoGradGuard no_grad;
    ref_hidden = reference_->hidden(batch.ids, batch.attention_mask);
  }
  memory_phase("policy forward");
  const at::Tensor hidden = policy_->hidden(batch.ids, batch.attention_mask);
  loss::LinearInputs in;
  in.policy_hidden = hidden.detach().reshape({-1, hidden.size(-1)});
  in.policy_weight = policy_->output_weight().detach();
  in.reference_hidden = ref_hidden.reshape({-1, ref_hidden.size(-1)});
  in.reference_weight = reference_->output_weight();
  in.labels = target;
  loss::LinearOptions lo;
  lo.loss = loss_options(options_, backward);
  lo.chunk_bytes = options_.chunk_bytes;
  lo.grad_scale = scale;
  memory_phase("loss");
  if (backward) {
    // The projection's gradient is summed straight into the parameter's .grad (with masters, the
    // float32 master's, unrounded), before the backward pass through the blocks: no V x H buffer
    // of its own lives through that pass, where the step's memory peaks. GPT-2's tied wte then
    // collects its embedding gradient on top, in place.
    at::NoGradGuard no_grad;
    const at::Tensor& w = masters_.empty() ? policy_->output_weight() : masters_.at(head_index_);
    if (!w.grad().defined()) w.mutable_grad() = at::zeros_like(w);
    lo.grad_weight_into = w.grad();
  }
  loss::LinearResult res = loss::fused_linear(in, lo);
  if (backward) memory_phase("backward");
  // Nothing of the loss but grad_hidden lives on through the blocks' backward pass.
  in = loss::LinearInputs();
  ref_hidden.reset();
  if (backward) {
    const at::Tensor grad = std::move(res.grad_hidden).view_as(hidden);
    res.grad_weight.reset();
    hidden.backward(grad);
  }
  return pair_stats(std::move(res.stats));
}

MicroStats TrainStep::accumulate(const MicroBatch& batch, double scale) {
  // A NaN scale would turn every weight NaN at the next apply, on every path alike.
  if (!std::isfinite(scale)) {
    throw range_error("ERR_TDPO_OPTION", "accumulate(batch, scale): the gradient scale must be finite, got " + js_number(scale));
  }
  MicroStats stats = run(batch, true, scale);
  if (!masters_.empty()) {
    // Each micro-batch's rounded gradient is summed in float32, not in bf16 across micro-batches.
    at::NoGradGuard no_grad;
    const std::vector<at::Tensor>& params = policy_->params();
    for (size_t i = 0; i < params.size(); ++i) {
      if (!params[i].grad().defined()) continue;
      at::Tensor& g = masters_[i].mutable_grad();
      if (g.defined()) {
        g.add_(params[i].grad());
      } else {
        g = params[i].grad().to(at::kFloat);
      }
      params[i].mutable_grad().reset();
    }
  }
  return stats;
}

void TrainStep::set_group(std::shared_ptr<dist::Group> group) {
  group_ = std::move(group);
  at::NoGradGuard no_grad;
  const std::vector<at::Tensor>& model = policy_->params();
  for (size_t i = 0; i < masters_.size(); ++i) masters_[i].copy_(model[i]);
}

std::vector<at::Tensor> TrainStep::optimized() const { return masters_.empty() ? policy_->params() : masters_; }

MicroStats TrainStep::evaluate(const MicroBatch& batch) const { return run(batch, false, 1.0); }

double TrainStep::apply(double lr, double max_grad_norm) {
  if (!(lr >= 0 && lr <= 1e6)) throw range_error("ERR_TDPO_OPTION", "apply(lr): lr must be a number >= 0 and at most 1e6, got " + js_number(lr));
  if (std::isnan(max_grad_norm)) throw range_error("ERR_TDPO_OPTION", "apply(lr, maxGradNorm): maxGradNorm must be a number");
  memory_phase("optimizer");
  std::vector<at::Tensor> params = optimized();
  double norm = 0;
  if (group_ && group_->size() > 1) {
    // A rank whose share of the batch was empty (an uneven last batch) has no gradients yet.
    std::vector<at::Tensor> grads;
    for (auto& p : params) {
      if (!p.grad().defined()) p.mutable_grad() = at::zeros_like(p);
      grads.push_back(p.grad());
    }
    group_->allreduce(grads, dist::Op::Sum);
  }
  {
    at::NoGradGuard no_grad;
    double sq = 0;
    for (const auto& p : params) {
      if (p.grad().defined()) sq += p.grad().pow(2).sum().item<double>();
    }
    norm = std::sqrt(sq);
    if (!std::isfinite(norm)) {
      // Applied, it would make every weight NaN (or, clipped, silently skip the step). Every rank
      // sees the same summed gradient, so every rank refuses alike.
      optimizer_->zero_grad();
      throw range_error("ERR_TDPO_NONFINITE", "the gradient is not finite (norm " + js_number(norm) +
                                                  "): the step was not applied and the gradient was cleared; "
                                                  "the weights are as before. A lower learning rate or beta may help");
    }
    if (max_grad_norm > 0 && norm > max_grad_norm) {
      const double factor = max_grad_norm / (norm + 1e-6);  // as torch.nn.utils.clip_grad_norm_
      for (auto& p : params) {
        if (p.grad().defined()) p.grad().mul_(factor);
      }
    }
  }
  for (auto& group : optimizer_->param_groups()) group.options().set_lr(lr);
  optimizer_->step();
  optimizer_->zero_grad();
  round_masters_into_policy();
  memory_phase("between steps");
  return norm;
}

namespace {
std::string shape_str(const at::Tensor& t) {
  std::ostringstream s;
  s << t.sizes();
  return s.str();
}

// The optimizer's key for a parameter's state: libtorch 1.13 prints the TensorImpl pointer (as
// c10::guts::to_string does), libtorch 2.x uses the pointer itself.
template <typename Key>
Key state_key(const at::Tensor& p) {
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream s;
    s << static_cast<const void*>(p.unsafeGetTensorImpl());
    return s.str();
  } else {
    return p.unsafeGetTensorImpl();
  }
}

// The per-parameter tensors a loaded optimizer holds for p (none before its first step).
std::vector<at::Tensor> state_tensors(const torch::optim::Optimizer& optimizer, const at::Tensor& p) {
  const auto& state = optimizer.state();
  using Key = typename std::decay_t<decltype(state)>::key_type;
  const auto found = state.find(state_key<Key>(p));
  if (found == state.end()) return {};
  const torch::optim::OptimizerParamState* s = found->second.get();
  if (auto* r = dynamic_cast<const torch::optim::RMSpropParamState*>(s)) return {r->square_avg(), r->momentum_buffer(), r->grad_avg()};
  if (auto* a = dynamic_cast<const torch::optim::AdamWParamState*>(s)) return {a->exp_avg(), a->exp_avg_sq(), a->max_exp_avg_sq()};
  if (auto* g = dynamic_cast<const torch::optim::SGDParamState*>(s)) return {g->momentum_buffer()};
  return {};
}
}  // namespace

// The optimizer's name goes into the archive, so that loading another optimizer's state is
// refused by name instead of failing inside libtorch (an "INTERNAL ASSERT FAILED").
void TrainStep::save_optimizer(const std::string& path) const {
  torch::serialize::OutputArchive archive;
  optimizer_->save(archive);
  archive.write("tdpo.optimizer", c10::IValue(options_.optimizer));
  // The masters are state too: resuming from the rounded policy alone would not be bit-identical.
  for (size_t i = 0; i < masters_.size(); ++i) archive.write("tdpo.master." + std::to_string(i), masters_[i]);
  // Streamed through a sink that never reports an error to libtorch: its writer throws from a
  // destructor on a short write, which would abort the process (a full disk did).
  io::write_file_atomically(path, [&](io::FileSink& sink) {
    archive.save_to([&](const void* data, size_t n) { return sink.write(data, n); });
  });
}

void TrainStep::load_optimizer(const std::string& path) {
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path, policy_->device());  // saved on rank 0's GPU, loaded on this rank's
  } catch (const c10::Error& e) {
    throw range_error("ERR_TDPO_CHECKPOINT", "cannot read the optimizer state " + path + ": " +
                                                 e.what_without_backtrace());
  }
  c10::IValue saved;
  if (archive.try_read("tdpo.optimizer", saved) && saved.isString() &&
      saved.toStringRef() != options_.optimizer) {
    throw range_error("ERR_TDPO_CHECKPOINT", path + " holds the state of a '" + saved.toStringRef() +
                                                 "' optimizer; this run uses '" + options_.optimizer + "'");
  }
  // Everything is read and checked before anything of this step changes: a refused file leaves
  // the optimizer, its state and the weights as they were.
  std::vector<at::Tensor> targets = optimized();
  std::unique_ptr<torch::optim::Optimizer> loaded = make_optimizer(targets);
  const std::string not_ours = path + " does not hold '" + options_.optimizer +
                               "' optimizer state for this model's parameters (another optimizer or model shape?)";
  try {
    loaded->load(archive);
  } catch (const c10::Error& e) {
    throw range_error("ERR_TDPO_CHECKPOINT", not_ours);
  }
  // libtorch checks only the parameter count: state of another model with as many tensors loads,
  // and the next step would fail half-applied.
  for (size_t i = 0; i < targets.size(); ++i) {
    for (const at::Tensor& t : state_tensors(*loaded, targets[i])) {
      if (t.defined() && !t.sizes().equals(targets[i].sizes())) {
        throw range_error("ERR_TDPO_CHECKPOINT", not_ours + ": parameter " + std::to_string(i) + " is " +
                                                     shape_str(targets[i]) + ", its state " + shape_str(t));
      }
    }
  }
  // A float32 run's state has no masters: they stay the loaded policy's values. A float32 run
  // resuming a bf16 one (--allow-change dtype) takes the masters as its weights.
  std::vector<at::Tensor> masters(targets.size());
  for (size_t i = 0; i < targets.size(); ++i) {
    if (!archive.try_read("tdpo.master." + std::to_string(i), masters[i])) continue;
    if (!masters[i].sizes().equals(targets[i].sizes())) {
      throw range_error("ERR_TDPO_CHECKPOINT", path + ": master weight " + std::to_string(i) + " has another shape than this model's");
    }
  }
  optimizer_ = std::move(loaded);
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < targets.size(); ++i) {
    if (masters[i].defined()) targets[i].copy_(masters[i]);
  }
  round_masters_into_policy();  // a no-op when the policy was loaded from the same checkpoint
}

void TrainStep::round_masters_into_policy() {
  at::NoGradGuard no_grad;
  const std::vector<at::Tensor>& model = policy_->params();
  for (size_t i = 0; i < masters_.size(); ++i) model[i].copy_(masters_[i]);
}

}  // namespace tdpo::train
