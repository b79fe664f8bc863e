// The fused linear TDPO loss: the preference loss from the final hidden states and the output
// projections of the policy and the reference, computing the logits of at most a chunk of rows at
// a time. Never materialises [B, T, V] logits, for either model or for the gradient.
//
// How a row's coefficients are had. A row's gradient c (1[v = y] - p) + a (p - q) needs c and a,
// which depend on its whole pair's sums (fused.cc). Rows that are not scored (prompt, padding) are
// dropped first; then:
//   - whole pairs per chunk: consecutive pairs are grouped while their scored rows fit the chunk;
//     the chunk's logits are computed once, the pairs' sums and coefficients follow, and the
//     gradient is written over the policy's logits in place and multiplied into the hidden states'
//     and the projection's gradients. No recomputation: the same matmuls as the materialised path
//     (one forward per model, two backward for the policy), on scored rows only.
//   - a pair larger than a chunk: each side's rows in even chunks, two passes: statistics first,
//     keeping the last chunk's logits (a rejected chunk where the pair has scored rejected rows);
//     then the gradient: the kept chunk's from its logits, the others' with the policy's logits
//     recomputed, and the reference's only for rows whose KL term has a gradient (none under
//     DPO, the rejected rows only under TDPO2).
// The chunk budget bounds the policy's and the reference's float32 logits of one chunk. The
// default, 128 MB (lib/options.ts), was chosen by measurement (`npx tdpo bench --train --pairs 8
// -T 512 --fused-linear on --chunk-mb N`, README): at GPT-2's shape a pair's logits (2 x 154 MB
// for 768 scored rows) were the step's memory peak; in 128 MB chunks the peak moves to the
// blocks' backward pass (0.25 GB lower than whole pairs), for about 1.05x the step time (a
// second pass over three quarters of each pair's rows, the reference's over one quarter). On
// CUDA the default is 1024 MB (chunkMbOn in lib/options.ts): there the many small chunks' kernel
// launches and host reads, not the arithmetic, cost the time.
//
// Per-row math: the fused kernel's SIMD rows (row_kernel.h) for CPU tensors; libtorch ops on any
// other device (CUDA), where the same chunking and pair objective run unchanged.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "loss/tdpo_loss.h"

namespace tdpo::loss {

struct LinearInputs {
  at::Tensor policy_hidden;     // [B * T, H] final hidden states (after the last norm)
  at::Tensor policy_weight;     // [V, H]: logits = hidden @ weight^T
  at::Tensor reference_hidden;  // [B * T, H']
  at::Tensor reference_weight;  // [V, H']
  at::Tensor labels;            // [B, T] aligned with the rows (no shift), -100 = not scored
};

enum class RowMath { Auto, Kernel, Aten };  // Auto: Kernel for CPU tensors, Aten elsewhere

struct LinearOptions {
  Options loss;                 // objective, beta, alpha; grad: compute the gradients
  int64_t chunk_bytes = 0;      // > 0: the logits of one chunk (policy + reference, float32)
  double grad_scale = 1;        // multiplies the gradients (1 / micro-batches per step)
  RowMath rows = RowMath::Auto;
  // Optional [V, H] float32 (or wider) tensor the projection's gradient is added into, in place
  // (the parameter's own .grad): no second V x H buffer lives through the backward pass.
  at::Tensor grad_weight_into;
};

struct LinearResult {
  Result stats;            // loss and per-pair statistics, as loss::fused returns them (no grad)
  at::Tensor grad_hidden;  // [B * T, H] d loss / d policy_hidden (0 on rows not scored); with grad
  at::Tensor grad_weight;  // [V, H] d loss / d policy_weight, at least float32 (grad_weight_into, if given); with grad
  int64_t chunks = 0;           // chunks of logits computed (second passes included)
  int64_t recomputed_rows = 0;  // rows whose policy logits were computed twice
};

// What RowMath::Auto runs on CPU tensors: the kernel, or libtorch's ops when the environment has
// TDPO_FUSED_LINEAR_ROWS=aten (read once, at the first call; the tests run the CUDA path's math
// on the CPU this way, and the train step's materialised path then uses the libtorch composition
// it runs off the CPU). "kernel" or "aten".
const char* cpu_row_math();

// Throws ERR_TDPO_OPTION / ERR_TDPO_SHAPE / ERR_TDPO_LABEL for bad inputs, ERR_TDPO_LOGITS for
// non-finite logits (a diverged model), naming the batch row and position.
LinearResult fused_linear(const LinearInputs& in, const LinearOptions& opt);

}  // namespace tdpo::loss
