// The reference composition: the paper's Appendix B code in libtorch ops, with autograd for the
// gradient. It is the baseline the benchmark compares against, so it stays the straightforward
// [B, T, V]-tensor formulation; only two things differ from the paper's code, both for safety:
// log pi_ref comes from log_softmax (softmax().log() turns underflow into -inf and -inf logits into
// NaN), and q (log q - log p) is taken as 0 where q = 0.
#include <torch/torch.h>

#include <utility>
#include <vector>

#include "common/error.h"
#include "loss/tdpo_loss.h"

namespace tdpo::loss {
namespace {

// The composition also runs on CUDA (the train step's materialised path off the CPU): the values
// are read on the host.
std::vector<double> to_vector(const at::Tensor& t) {
  auto c = t.detach().to(at::kCPU, at::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

// Returns whether some unscored row is -inf everywhere (allowed: it is not scored).
bool check_logits(const char* field, const float* data, const Inputs<float>& in) {
  const int64_t V = in.vocab;
  bool unscored_all_neg_inf = false;
  for (int64_t i = 0, rows = in.rows(); i < rows; ++i) {
    const RowCheck c = check_row(data + i * V, V);
    if (c.invalid) throw_invalid_logits(field, data, in, i, false);
    if (c.all_neg_inf && in.labels[i] != kIgnoreIndex) throw_invalid_logits(field, data, in, i, true);
    unscored_all_neg_inf |= c.all_neg_inf;
  }
  return unscored_all_neg_inf;
}

}  // namespace

Composed compose(const at::Tensor& policy_in, const at::Tensor& ref_in, const at::Tensor& labels, const Options& opt,
                  bool dead_rows) {
  const int64_t B = policy_in.size(0), P = B / 2;
  at::Tensor policy = policy_in, ref = ref_in;
  auto mask = labels != kIgnoreIndex;
  auto index = labels.masked_fill(~mask, 0).to(torch::kLong).unsqueeze(2);
  if (dead_rows) {
    // An unscored row that is -inf everywhere has a NaN log-softmax; torch::where below drops it
    // from the values, but autograd multiplies the dropped branch's NaN by 0 into the gradient.
    // Such rows are replaced by zeros (their gradient is 0 either way); only then, so the common
    // case keeps the plain composition the benchmark measures.
    auto keep = mask.unsqueeze(2);
    policy = torch::where(keep, policy, torch::zeros({}, policy.options()));
    ref = torch::where(keep, ref, torch::zeros({}, ref.options()));
  }
  auto pi_vocab_logps = policy.log_softmax(-1);
  auto ref_vocab_logps = ref.log_softmax(-1);
  auto ref_vocab_ps = ref_vocab_logps.exp();

  auto pi_per_token_logps = pi_vocab_logps.gather(2, index).squeeze(2);
  auto ref_per_token_logps = ref_vocab_logps.gather(2, index).squeeze(2);
  auto zero = torch::zeros({}, policy.options());
  auto per_position_rewards = torch::where(mask, pi_per_token_logps - ref_per_token_logps, zero);
  auto kl_terms = torch::where(ref_vocab_ps > 0, ref_vocab_ps * (ref_vocab_logps - pi_vocab_logps),
                               zero);
  auto per_position_kl = torch::where(mask, kl_terms.sum(-1), zero);

  // The pair objective in double, as the fused kernel computes it: a float32 beta * logit rounds
  // a tiny beta to 0 and turns an infinite logit into NaN where the value is +-Infinity.
  auto logratio = per_position_rewards.sum(-1).to(torch::kDouble);  // [B]
  auto logps = torch::where(mask, pi_per_token_logps, zero).sum(-1).to(torch::kDouble);
  auto kl = per_position_kl.sum(-1).to(torch::kDouble);
  torch::Tensor entropy;  // the policy's own, per sequence: a statistic, outside autograd
  if (opt.entropy) {
    torch::NoGradGuard no_grad;
    // One [B, T, V] temporary, in place (not in pi_vocab_logps: autograd saved it). p log p is
    // NaN only where p = 0 (log p = -inf), and counts 0 there.
    const auto pi_logps = pi_vocab_logps.detach();
    auto h = pi_logps.exp().mul_(pi_logps).nan_to_num_(0.0).sum(-1).neg_();
    entropy = torch::where(mask, h, zero).sum(-1).to(torch::kDouble);
  }
  auto mw = logratio.slice(0, 0, P), ml = logratio.slice(0, P, B);
  auto kw = kl.slice(0, 0, P), kl_l = kl.slice(0, P, B);

  const torch::Tensor values = pair_logit(opt.objective, opt.alpha, mw, ml, kw, kl_l,
                                          [](const torch::Tensor& t) { return t.detach(); });
  auto losses = -torch::log_sigmoid(opt.beta * values);
  auto loss = losses.mean();
  const double loss_value = loss.item<double>();
  if (std::isnan(loss_value)) {
    throw range_error("ERR_TDPO_LOGITS",
                      "the loss is undefined (an infinite log-ratio or KL on both sides of a "
                      "pair): check for -Infinity logits at labelled tokens");
  }

  Composed out;
  Result& res = out.result;
  const bool tdpo = objective_row(opt.objective).reward_kl;
  res.loss = loss_value;
  // Every per-pair result in one [n, P] tensor: on CUDA one copy to the host instead of one each.
  std::vector<std::pair<std::vector<double>*, torch::Tensor>> rows = {
      {&res.losses, losses},
      {&res.chosen_rewards, opt.beta * (tdpo ? mw + kw : mw)},
      {&res.rejected_rewards, opt.beta * (tdpo ? ml + kl_l : ml)},
      {&res.chosen_logratio, mw},
      {&res.rejected_logratio, ml},
      {&res.chosen_kl, kw},
      {&res.rejected_kl, kl_l},
      {&res.chosen_logps, logps.slice(0, 0, P)},
      {&res.rejected_logps, logps.slice(0, P, B)}};
  if (opt.entropy) {
    rows.push_back({&res.chosen_entropy, entropy.slice(0, 0, P)});
    rows.push_back({&res.rejected_entropy, entropy.slice(0, P, B)});
  }
  std::vector<torch::Tensor> values_of_rows;
  for (const auto& r : rows) values_of_rows.push_back(r.second.detach().to(torch::kDouble));
  const std::vector<double> host = to_vector(torch::stack(values_of_rows));
  for (size_t i = 0; i < rows.size(); ++i)
    rows[i].first->assign(host.begin() + int64_t(i) * P, host.begin() + int64_t(i + 1) * P);
  out.loss = loss;
  return out;
}

Result reference(const Inputs<float>& in, const Options& opt) {
  validate(in, opt);
  const bool dead_rows = check_logits("policyLogits", in.policy, in) | check_logits("referenceLogits", in.reference, in);
  check_labelled_logits(in);
  const int64_t B = in.batch, T = in.seq, V = in.vocab;
  torch::AutoGradMode grad_mode(opt.grad);

  // from_blob reads the callers' buffers in place; nothing below writes to them.
  auto policy = torch::from_blob(const_cast<float*>(in.policy), {B, T, V});
  auto ref = torch::from_blob(const_cast<float*>(in.reference), {B, T, V});
  auto labels = torch::from_blob(const_cast<int32_t*>(in.labels), {B, T}, torch::kInt32);
  if (opt.grad) policy = policy.detach().requires_grad_(true);
  Composed c = compose(policy, ref, labels, opt, dead_rows);
  if (opt.grad) {
    c.loss.backward();
    c.result.grad = policy.grad();
  }
  return std::move(c.result);
}

}  // namespace tdpo::loss
