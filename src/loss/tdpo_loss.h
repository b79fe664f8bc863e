// The TDPO / DPO preference loss as a pure function: logits and labels in, loss, per-pair
// statistics and (optionally) d loss / d policy logits out. Two implementations with one contract:
//   fused      one pass over the vocabulary per row for the statistics, one recomputing pass for
//              the gradient; O(rows) extra memory besides the returned gradient.
//   reference  the libtorch composition of the paper's Appendix B code, differentiated by autograd
//              (made numerically safe: log-softmax, and q log q = 0 where q = 0).
// Layout: logits [B, T, V] row-major, labels [B, T] already aligned with the logits (no shift),
// -100 = not scored. Rows 0..B/2-1 are the chosen responses, rows B/2..B-1 the rejected ones, and
// pair i is (row i, row i + B/2), as in the official TDPO code's concatenated batches.
#pragma once

#include <ATen/ATen.h>

#include <cmath>

#include <cstdint>
#include <string>
#include <vector>

#include "loss/objective.h"

namespace tdpo::loss {

constexpr int32_t kIgnoreIndex = -100;

enum class Implementation { Fused, Reference };

// No defaults here: they live in one place, lib/options.ts, and every caller passes all fields
// (NaN fails validate()).
struct Options {
  Objective objective = Objective::Sft;  // a preference objective; Sft fails validate()
  double beta = NAN;
  double alpha = NAN;
  bool grad = false;
  // Also each sequence's policy entropy (Result::chosen_entropy...): 2-3% more time in the fused
  // kernel, extra [B, T, V] passes in the reference composition, so the benchmark leaves it off.
  bool entropy = false;
};

template <typename T>
struct Inputs {
  const T* policy = nullptr;     // [B, T, V]
  const T* reference = nullptr;  // [B, T, V]
  const int32_t* labels = nullptr;  // [B, T]
  int64_t batch = 0, seq = 0, vocab = 0;
  int64_t rows() const { return batch * seq; }
  int64_t pairs() const { return batch / 2; }
};

// Per pair (length B/2 each). Logratio = sum_t (log pi(y_t) - log ref(y_t)) and
// Kl = sum_t KL(ref(.|t) || pi(.|t)), both over scored positions only.
struct Result {
  double loss = 0;  // mean of losses
  std::vector<double> losses, chosen_rewards, rejected_rewards;
  std::vector<double> chosen_logratio, rejected_logratio, chosen_kl, rejected_kl;
  std::vector<double> chosen_logps, rejected_logps;  // sum_t log pi(y_t): the policy's own log-probs
  std::vector<double> chosen_entropy, rejected_entropy;  // sum_t H(pi(.|t)); empty unless Options::entropy
  at::Tensor grad;  // [B, T, V], same dtype as the inputs; undefined unless Options::grad
};

Implementation parse_implementation(const std::string& name);  // throws ERR_TDPO_OPTION

// The options alone (objective, beta, alpha); messages name each field as prefix + name, e.g.
// "options.beta" or "loss.beta". The config check and validate() below both call it.
void validate_options(const Options& opt, const std::string& prefix);

// Shape, labels and options; throws tdpo::Error naming the field. Both implementations call it.
template <typename T>
void validate(const Inputs<T>& in, const Options& opt);

template <typename T>
Result fused(const Inputs<T>& in, const Options& opt);  // float and double instantiated

Result reference(const Inputs<float>& in, const Options& opt);

// The reference composition over tensors on any device, for the train step's materialised path
// off the CPU: policy and reference [B, T, V] floating (the policy with autograd when it requires
// grad), labels [B, T]. `loss` is the autograd scalar; `result` holds the statistics (no grad).
// dead_rows: some unscored row is -inf everywhere (the host checks find out; see reference.cc).
struct Composed {
  Result result;
  at::Tensor loss;
};
Composed compose(const at::Tensor& policy, const at::Tensor& reference, const at::Tensor& labels, const Options& opt,
                 bool dead_rows = false);

inline Result compute(Implementation impl, const Inputs<float>& in, const Options& opt) {
  return impl == Implementation::Fused ? fused(in, opt) : reference(in, opt);
}

// The pair-level objective shared by the fused kernel's combine step: given the sums of one pair,
// the pre-sigmoid logit, the loss and the coefficients of d loss_i / d (Mw, Ml, Kw, Kl).
struct PairObjective {
  double logit, loss, reward_chosen, reward_rejected;
  double d_mw, d_ml, d_kw, d_kl;
};
PairObjective pair_objective(const Options& opt, double mw, double ml, double kw, double kl);
// Sizes res's per-pair fields for `pairs` pairs (the entropy's only with Options::entropy).
void size_pair_fields(Result& res, int64_t pairs, const Options& opt);
// One pair's sums (index 0 chosen, 1 rejected: log-ratio m, KL k, policy log-prob lp, policy
// entropy h, read only with Options::entropy) -> its objective, written into res's per-pair fields
// (sized by size_pair_fields); ERR_TDPO_LOGITS when undefined.
PairObjective record_pair(Result& res, int64_t pair, const Options& opt, const double m[2], const double k[2],
                          const double lp[2], const double h[2]);

// Where a non-finite input is, for error messages: the first NaN or +inf in data[0..n).
template <typename T>
int64_t first_invalid(const T* data, int64_t n);

// A vectorised check of one row: any NaN / +inf, and whether every entry is -inf.
struct RowCheck {
  bool invalid, all_neg_inf;
};
RowCheck check_row(const float* data, int64_t n);
RowCheck check_row(const double* data, int64_t n);

// The instruction set the float kernel runs with on this CPU: "avx512", "avx2", "sse2" (x86-64) or
// "generic"; benchmark figures depend on it.
const char* kernel_isa();

// Throws ERR_TDPO_LOGITS when either model's logit at a scored label is -inf.
template <typename T>
void check_labelled_logits(const Inputs<T>& in);

// Throws ERR_TDPO_LOGITS for the first NaN / +inf in a [B, T, V] array (field names it), or, with
// all_neg_inf, for a scored row whose logits are all -inf (no distribution to score against).
template <typename T>
[[noreturn]] void throw_invalid_logits(const char* field, const T* data, const Inputs<T>& in,
                                       int64_t row, bool all_neg_inf);

}  // namespace tdpo::loss
