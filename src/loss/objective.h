// The training objectives, defined once: each is a row of the table in objective.cc (its name and
// how the sequence KLs enter the pair logit), and both loss implementations and the train step
// read that row. Adding a preference loss = an enum value here, a row in objective.cc, and its
// name in lib/options.ts.
#pragma once

#include <string>

namespace tdpo::loss {

enum class Objective { Tdpo2, Tdpo1, Dpo, Sft };

// The pair logit of a preference objective, from the pair's sums (M: log-ratios, K: sequence KLs):
//   logit = (Mw - Ml) - (rejected_kl * Kl - chosen_kl * Kw)
// with the gradient through Kw stopped unless chosen_kl_grad. Alpha scales the weights marked so.
struct KlWeights {
  double chosen = 0, rejected = 0;
  bool chosen_grad = false;
};

struct ObjectiveRow {
  Objective id;
  const char* name;
  bool preference;  // false: SFT (no pairs, no reference)
  bool reward_kl;   // the implicit reward is beta (M + K) (TDPO), else beta M (DPO)
  // KL weights as a function of alpha.
  KlWeights (*kl)(double alpha);
};

const ObjectiveRow& objective_row(Objective o);
const char* objective_name(Objective o);
// Throws ERR_TDPO_OPTION naming `field` and the valid names; SFT only where allow_sft.
Objective parse_objective(const std::string& name, const std::string& field, bool allow_sft);

// The pair logit for scalars (the fused kernel) and for tensors (the reference composition, where
// `stop` detaches): one formula for both.
template <typename T, typename Stop>
T pair_logit(Objective o, double alpha, const T& mw, const T& ml, const T& kw, const T& kl, Stop stop) {
  const KlWeights w = objective_row(o).kl(alpha);
  T logit = mw - ml;
  if (w.rejected != 0) logit = logit - w.rejected * kl;
  if (w.chosen != 0) logit = logit + w.chosen * (w.chosen_grad ? kw : stop(kw));
  return logit;
}

}  // namespace tdpo::loss
