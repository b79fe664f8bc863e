#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/version.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/error.h"
#include "models/layers.h"

namespace tdpo::models {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

double scale_of(const at::Tensor& q) { return 1.0 / std::sqrt(static_cast<double>(q.size(-1))); }

// softmax(q kᵀ · scale, masked) in float32, [B, H, T, S].
at::Tensor probabilities(const at::Tensor& q, const at::Tensor& k, const at::Tensor& allowed) {
  at::Tensor scores = at::matmul(q, k.transpose(-1, -2)).to(at::kFloat).mul_(scale_of(q));
  scores.masked_fill_(allowed.logical_not(), std::numeric_limits<float>::lowest());
  return at::softmax(scores, -1);
}

// The same function as the composition of ATen ops, with a backward pass that holds one [B, H, T, S]
// float32 tensor at a time: autograd's chain (matmul, softmax, masked_fill, scale) makes four,
// two of them alive at once. At GPT-2-small, 8 pairs × 512 tokens, each is 201 MB, and the block
// backward pass is where a fused linear train step peaks (README, Memory and devices).
struct Attention : torch::autograd::Function<Attention> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& allowed) {
    at::Tensor p = probabilities(q, k, allowed);
    ctx->save_for_backward({q, k, v, allowed, p});
    return at::matmul(p.to(q.scalar_type()), v);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list s = ctx->get_saved_variables();
    const at::Tensor &q = s[0], &k = s[1], &v = s[2], &allowed = s[3], &p = s[4];
    const at::Tensor& dout = grads[0];
    at::Tensor dv = at::matmul(p.to(v.scalar_type()).transpose(-1, -2), dout);
    // Softmax's backward in place: dS = p ⊙ (dP − Σⱼ pⱼ dPⱼ) = p ⊙ dP − p ⊙ r.
    at::Tensor ds = at::matmul(dout, v.transpose(-1, -2)).to(at::kFloat);
    ds.mul_(p);
    at::Tensor r = ds.sum(-1, /*keepdim=*/true);
    ds.addcmul_(p, r, -1);
    // As masked_fill's backward: nothing flows to a masked score, also in a row with no allowed
    // key (uniform p, so the line above left it non-zero).
    ds.masked_fill_(allowed.logical_not(), 0).mul_(scale_of(q));
    at::Tensor dsq = ds.to(q.scalar_type());
    ds = at::Tensor();
    at::Tensor dq = at::matmul(dsq, k);
    at::Tensor dk = at::matmul(dsq.transpose(-1, -2), q);
    return {dq, dk, dv, at::Tensor()};
  }
};

at::Tensor eager_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& allowed) {
  if (at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad()))
    return Attention::apply(q, k, v, allowed);
  // Without a graph nothing is kept, so the scores need not exist for the whole batch at once: a
  // few sequences at a time, each one's numbers the same. The reference's forward pass runs while
  // the policy's activations are held, and there its full [B, H, T, S] scores and probabilities
  // (402 MB at GPT-2-small, 8 pairs x 512 tokens) were the fused linear step's peak.
  constexpr int64_t kScoreBytes = 32ll << 20;
  const int64_t B = q.size(0);
  const int64_t per_sequence = q.size(1) * q.size(2) * k.size(2) * int64_t(sizeof(float));
  const int64_t step = std::max<int64_t>(1, kScoreBytes / std::max<int64_t>(1, per_sequence));
  if (step >= B) return at::matmul(probabilities(q, k, allowed).to(q.scalar_type()), v);
  std::vector<at::Tensor> out;
  for (int64_t b = 0; b < B; b += step) {
    const int64_t n = std::min(step, B - b);
    const at::Tensor a = allowed.size(0) == 1 ? allowed : allowed.narrow(0, b, n);
    out.push_back(at::matmul(probabilities(q.narrow(0, b, n), k.narrow(0, b, n), a).to(q.scalar_type()), v.narrow(0, b, n)));
  }
  return at::cat(out, 0);
}

}  // namespace

// From libtorch 2.3: before it the CPU's fused kernel took no mask (2.1, 2.2) or there was none
// (2.0), and the fallback "math" kernel holds more score tensors under autograd than eager does.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
#define TDPO_SDPA 1
constexpr bool kHasSdpa = true;
#else
constexpr bool kHasSdpa = false;
#endif

bool sdpa_available() { return kHasSdpa; }

AttentionKernel parse_attention_kernel(const std::string& name) {
  if (name == "eager") return AttentionKernel::Eager;
  if (name == "sdpa") {
    if (!kHasSdpa) {
      throw range_error("ERR_TDPO_OPTION", "attnImplementation 'sdpa' needs libtorch >= 2.3; this build has libtorch " +
                                               std::to_string(TORCH_VERSION_MAJOR) + "." +
                                               std::to_string(TORCH_VERSION_MINOR) + " (use 'eager')");
    }
    return AttentionKernel::Sdpa;
  }
  throw range_error("ERR_TDPO_OPTION", "attnImplementation must be 'sdpa' or 'eager', got '" + name + "'");
}

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionMask& mask) {
#ifdef TDPO_SDPA
  if (mask.kernel == AttentionKernel::Sdpa) {
    // is_causal aligns the triangle to the top-left, right only when T == S (no cache); with a
    // cache or padding the bias goes in instead (no flash kernel on CUDA then: the
    // memory-efficient one).
    if (mask.causal_only) return at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true);
    return at::scaled_dot_product_attention(q, k, v, mask.bias, 0.0, /*is_causal=*/false);
  }
#endif
  return eager_attention(q, k, v, mask.allowed);
}

}  // namespace tdpo::models
