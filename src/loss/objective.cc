// What both implementations share: option parsing, input validation and the pair objective.
#include <cmath>
#include <limits>
#include <utility>
#include <sstream>

#include "common/error.h"
#include "loss/tdpo_loss.h"

namespace tdpo::loss {

namespace {
// The objectives. TDPO2 stops the gradient through the chosen side's KL (the paper's sg(Kw)).
const ObjectiveRow kObjectives[] = {
    {Objective::Tdpo2, "tdpo2", true, true, [](double alpha) { return KlWeights{alpha, alpha, false}; }},
    {Objective::Tdpo1, "tdpo1", true, true, [](double) { return KlWeights{1, 1, true}; }},
    {Objective::Dpo, "dpo", true, false, [](double) { return KlWeights{0, 0, false}; }},
    {Objective::Sft, "sft", false, false, [](double) { return KlWeights{}; }},
};
}  // namespace

const ObjectiveRow& objective_row(Objective o) {
  for (const auto& row : kObjectives) {
    if (row.id == o) return row;
  }
  throw Error(ErrorKind::Generic, "ERR_TDPO_NATIVE", "unknown objective");
}

const char* objective_name(Objective o) { return objective_row(o).name; }

Objective parse_objective(const std::string& name, const std::string& field, bool allow_sft) {
  std::string names;
  for (const auto& row : kObjectives) {
    if (!row.preference && !allow_sft) continue;
    if (name == row.name) return row.id;
    names += std::string(names.empty() ? "" : ", ") + "'" + row.name + "'";
  }
  throw range_error("ERR_TDPO_OPTION", field + " must be one of " + names + ", got '" + name + "'");
}

Implementation parse_implementation(const std::string& name) {
  if (name == "fused") return Implementation::Fused;
  if (name == "reference") return Implementation::Reference;
  throw range_error("ERR_TDPO_OPTION",
                    "options.implementation must be 'fused' or 'reference', got '" + name + "'");
}

void validate_options(const Options& opt, const std::string& prefix) {
  if (!objective_row(opt.objective).preference) {
    throw range_error("ERR_TDPO_OPTION", prefix + "variant must be a preference objective, got '" +
                                             objective_name(opt.objective) + "'");
  }
  // A beta far from 1 leaves the loss at its limits for every logit the kernels can tell apart
  // (beta = 5e-324 gave log 2 from a double logit of 1e300 and 0 from its float32 +Infinity).
  if (!(opt.beta >= 1e-6 && opt.beta <= 1e6)) {
    throw range_error("ERR_TDPO_OPTION", prefix + "beta must be a finite number > 0, at least 1e-6 and at most 1e6 "
                                                  "(the paper uses 0.1), got " + js_number(opt.beta));
  }
  // Bounded like beta: alpha 1e40 gave NaN gradients, and alpha * beta past ~1e300 an infinite loss.
  // A negative alpha would reward the KL it is there to hold back.
  if (!(opt.alpha >= 0 && opt.alpha <= 1e6)) {
    throw range_error("ERR_TDPO_OPTION", prefix + "alpha must be a finite number, at least 0 and at most 1e6 "
                                                  "(the paper uses 0.5), got " + js_number(opt.alpha));
  }
}

template <typename T>
void validate(const Inputs<T>& in, const Options& opt) {
  validate_options(opt, "options.");
  if (in.batch <= 0 || in.seq <= 0 || in.vocab <= 0) {
    std::ostringstream m;
    m << "shape must be three positive integers [B, T, V], got [" << in.batch << ", " << in.seq
      << ", " << in.vocab << "]";
    throw range_error("ERR_TDPO_SHAPE", m.str());
  }
  if (in.batch % 2 != 0) {
    std::ostringstream m;
    m << "shape[0] (B) must be even: rows 0..B/2-1 are chosen and B/2..B-1 rejected, got B = "
      << in.batch;
    throw range_error("ERR_TDPO_SHAPE", m.str());
  }
  if (in.vocab > INT32_MAX) throw range_error("ERR_TDPO_SHAPE", "shape[2] (V) must be < 2^31");
  for (int64_t i = 0, n = in.rows(); i < n; ++i) {
    const int32_t y = in.labels[i];
    if (y != kIgnoreIndex && (y < 0 || y >= in.vocab)) {
      std::ostringstream m;
      m << "labels[" << i << "] (row " << i / in.seq << ", position " << i % in.seq << ") is " << y
        << ": labels must be in [0, " << in.vocab << ") or -100 (ignored)";
      throw range_error("ERR_TDPO_LABEL", m.str());
    }
  }
}
template void validate<float>(const Inputs<float>&, const Options&);
template void validate<double>(const Inputs<double>&, const Options&);

PairObjective pair_objective(const Options& opt, double mw, double ml, double kw, double kl) {
  PairObjective o{};
  const ObjectiveRow& row = objective_row(opt.objective);
  const KlWeights w = row.kl(opt.alpha);
  o.logit = pair_logit(opt.objective, opt.alpha, mw, ml, kw, kl, [](double x) { return x; });
  const double x = opt.beta * o.logit;
  // -log sigmoid(x) = softplus(-x), written to stay finite for large |x|.
  o.loss = std::max(-x, 0.0) + std::log1p(std::exp(-std::abs(x)));
  const double sig_neg = x >= 0 ? std::exp(-x) / (1 + std::exp(-x)) : 1 / (1 + std::exp(x));
  const double dlogit = -opt.beta * sig_neg;
  // d logit / d (Mw, Ml, Kw, Kl) = (1, -1, chosen weight where its gradient flows, -rejected weight).
  o.d_mw = dlogit;
  o.d_ml = -dlogit;
  o.d_kw = w.chosen_grad ? dlogit * w.chosen : 0.0;
  o.d_kl = -dlogit * w.rejected;
  o.reward_chosen = opt.beta * (row.reward_kl ? mw + kw : mw);
  o.reward_rejected = opt.beta * (row.reward_kl ? ml + kl : ml);
  return o;
}

template <typename T>
int64_t first_invalid(const T* data, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(data[i]) || data[i] == std::numeric_limits<T>::infinity()) return i;
  }
  return -1;
}
template int64_t first_invalid<float>(const float*, int64_t);
template int64_t first_invalid<double>(const double*, int64_t);

template <typename T>
void check_labelled_logits(const Inputs<T>& in) {
  // log pi(y) = -inf makes a log-ratio infinite and, with the KL that comes with it, leaves the
  // TDPO logit as inf - inf; DPO would return loss = Infinity. All variants refuse it alike.
  const int64_t V = in.vocab;
  for (int64_t i = 0, n = in.rows(); i < n; ++i) {
    const int32_t y = in.labels[i];
    if (y == kIgnoreIndex) continue;
    for (auto [field, data] : {std::pair{"policyLogits", in.policy}, {"referenceLogits", in.reference}}) {
      if (data[i * V + y] != -std::numeric_limits<T>::infinity()) continue;
      std::ostringstream m;
      m << field << "[" << i / in.seq << ", " << i % in.seq << ", " << y
        << "] is -Infinity at the labelled token: its log-probability would be -Infinity and the "
           "loss undefined; mask the position (label -100) or keep labelled tokens finite";
      throw range_error("ERR_TDPO_LOGITS", m.str());
    }
  }
}
template void check_labelled_logits<float>(const Inputs<float>&);
template void check_labelled_logits<double>(const Inputs<double>&);

template <typename T>
void throw_invalid_logits(const char* field, const T* data, const Inputs<T>& in, int64_t row,
                          bool all_neg_inf) {
  std::ostringstream m;
  const int64_t b = row / in.seq, t = row % in.seq;
  if (all_neg_inf) {
    m << field << "[" << b << ", " << t << ", :] is -inf everywhere at a scored position (label "
      << in.labels[row] << "): a distribution needs at least one finite logit";
  } else {
    const int64_t v = first_invalid(data + row * in.vocab, in.vocab);
    const T x = data[row * in.vocab + (v < 0 ? 0 : v)];
    m << field << "[" << b << ", " << t << ", " << v << "] is " << (std::isnan(x) ? "NaN" : "+Infinity")
      << ": logits must be finite or -Infinity (a banned token)";
  }
  throw range_error("ERR_TDPO_LOGITS", m.str());
}
template void throw_invalid_logits<float>(const char*, const float*, const Inputs<float>&, int64_t,
                                          bool);
template void throw_invalid_logits<double>(const char*, const double*, const Inputs<double>&,
                                           int64_t, bool);

void size_pair_fields(Result& res, int64_t pairs, const Options& opt) {
  for (auto* v : {&res.losses, &res.chosen_rewards, &res.rejected_rewards, &res.chosen_logratio, &res.rejected_logratio,
                  &res.chosen_kl, &res.rejected_kl, &res.chosen_logps, &res.rejected_logps})
    v->assign(pairs, 0.0);
  if (opt.entropy) res.chosen_entropy.assign(pairs, 0.0), res.rejected_entropy.assign(pairs, 0.0);
}

PairObjective record_pair(Result& res, int64_t pair, const Options& opt, const double m[2], const double k[2],
                          const double lp[2], const double h[2]) {
  const PairObjective o = pair_objective(opt, m[0], m[1], k[0], k[1]);
  if (std::isnan(o.loss)) {
    throw range_error("ERR_TDPO_LOGITS", "pair " + std::to_string(pair) +
                                             " has an undefined loss (an infinite log-ratio or KL on both sides): "
                                             "check for -Infinity logits at labelled tokens");
  }
  res.losses[pair] = o.loss;
  res.chosen_rewards[pair] = o.reward_chosen;
  res.rejected_rewards[pair] = o.reward_rejected;
  res.chosen_logratio[pair] = m[0];
  res.rejected_logratio[pair] = m[1];
  res.chosen_kl[pair] = k[0];
  res.rejected_kl[pair] = k[1];
  res.chosen_logps[pair] = lp[0];
  res.rejected_logps[pair] = lp[1];
  if (opt.entropy) res.chosen_entropy[pair] = h[0], res.rejected_entropy[pair] = h[1];
  return o;
}

}  // namespace tdpo::loss
