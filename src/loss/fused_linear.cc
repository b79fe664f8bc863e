#include "loss/fused_linear.h"

#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cstdlib>
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "common/error.h"
#include "loss/row_kernel.h"

namespace tdpo::loss {
namespace {

using detail::RowStats;

struct Layout {
  int64_t batch, seq, pairs, vocab;
  std::vector<int64_t> rows;     // scored rows, pair by pair: pair p's chosen rows, then its rejected rows
  std::vector<int32_t> labels;   // the label of each of those rows
  std::vector<int64_t> offset;   // pair p's rows are [offset[2p], offset[2p + 2]); the rejected start at offset[2p + 1]
};

void check_inputs(const LinearInputs& in) {
  auto shape_error = [](const std::string& m) { return range_error("ERR_TDPO_SHAPE", m); };
  for (auto [t, name] : {std::pair{&in.policy_hidden, "policyHidden"}, {&in.policy_weight, "policyWeight"},
                         {&in.reference_hidden, "referenceHidden"}, {&in.reference_weight, "referenceWeight"}}) {
    if (!t->defined() || t->dim() != 2) throw shape_error(std::string(name) + " must be a 2-D tensor");
    if (!at::isFloatingType(t->scalar_type())) throw type_error("ERR_TDPO_TYPE", std::string(name) + " must hold floating-point values");
  }
  if (!in.labels.defined() || in.labels.dim() != 2) throw shape_error("labels must be a [B, T] tensor");
  const int64_t B = in.labels.size(0), T = in.labels.size(1), V = in.policy_weight.size(0);
  if (B < 2 || B % 2 != 0) throw shape_error("the batch must hold pairs: B must be even and >= 2, got " + std::to_string(B));
  if (V > INT32_MAX) throw shape_error("the vocabulary must be < 2^31");
  std::ostringstream m;
  if (in.policy_hidden.size(0) != B * T || in.reference_hidden.size(0) != B * T) {
    m << "the hidden states must have B * T = " << B * T << " rows, got " << in.policy_hidden.size(0) << " (policy) and "
      << in.reference_hidden.size(0) << " (reference)";
  } else if (in.policy_hidden.size(1) != in.policy_weight.size(1) || in.reference_hidden.size(1) != in.reference_weight.size(1)) {
    m << "each model's hidden size must match its projection's: policy " << in.policy_hidden.size(1) << " vs "
      << in.policy_weight.size(1) << ", reference " << in.reference_hidden.size(1) << " vs " << in.reference_weight.size(1);
  } else if (in.reference_weight.size(0) != V) {
    m << "the reference's vocabulary (" << in.reference_weight.size(0) << ") differs from the policy's (" << V << ")";
  }
  if (!m.str().empty()) throw shape_error(m.str());
}

Layout layout_of(const LinearInputs& in) {
  Layout L;
  L.batch = in.labels.size(0);
  L.seq = in.labels.size(1);
  L.pairs = L.batch / 2;
  L.vocab = in.policy_weight.size(0);
  const at::Tensor labels = in.labels.to(at::kCPU, at::kLong).contiguous();
  const int64_t* y = labels.data_ptr<int64_t>();
  for (int64_t p = 0; p < L.pairs; ++p) {
    for (int side = 0; side < 2; ++side) {
      L.offset.push_back(int64_t(L.rows.size()));
      const int64_t row0 = (p + side * L.pairs) * L.seq;
      for (int64_t t = 0; t < L.seq; ++t) {
        const int64_t label = y[row0 + t];
        if (label == kIgnoreIndex) continue;
        if (label < 0 || label >= L.vocab) {
          std::ostringstream m;
          m << "labels[" << (p + side * L.pairs) << ", " << t << "] = " << label << " is outside [0, " << L.vocab
            << ") and is not -100";
          throw range_error("ERR_TDPO_LABEL", m.str());
        }
        L.rows.push_back(row0 + t);
        L.labels.push_back(int32_t(label));
      }
    }
  }
  L.offset.push_back(int64_t(L.rows.size()));
  return L;
}

// One chunk: scored rows [begin, end) of the layout, their hidden states and logits.
struct Chunk {
  int64_t begin = 0, end = 0;
  at::Tensor index;       // int64 [n] rows of the [B * T, H] inputs, on the inputs' device
  at::Tensor policy_h;    // [n, H]
  at::Tensor z, r;        // float32 [n, V] logits (r undefined when not needed)
  int64_t size() const { return end - begin; }
};

class Runner {
 public:
  Runner(const LinearInputs& in, const LinearOptions& opt)
      : in_(in), opt_(opt), L_(layout_of(in)), stats_(L_.rows.size()), c_(L_.rows.size()), a_(L_.rows.size()) {
    kernel_ = opt.rows == RowMath::Kernel ||
              (opt.rows == RowMath::Auto && in.policy_hidden.device().is_cpu() && std::string(cpu_row_math()) == "kernel");
    if (kernel_ && !(in.policy_hidden.device().is_cpu() && in.reference_hidden.device().is_cpu()))
      throw range_error("ERR_TDPO_OPTION", "the SIMD row kernel needs CPU tensors");
    device_ = in.policy_hidden.device();
    const int64_t row_bytes = 2 * L_.vocab * int64_t(sizeof(float));
    cap_ = std::max<int64_t>(1, opt.chunk_bytes / row_bytes);
    if (opt.loss.grad) {
      grad_hidden_ = at::zeros_like(in.policy_hidden);
      // Summed over chunks in at least float32 (each chunk's product is in the weight's dtype; a
      // bf16 running sum would lose the later chunks' contributions).
      const at::ScalarType wide = at::promote_types(in.policy_weight.scalar_type(), at::kFloat);
      if (opt.grad_weight_into.defined()) {
        const at::Tensor& g = opt.grad_weight_into;
        if (!g.sizes().equals(in.policy_weight.sizes()) || g.scalar_type() != wide || g.device() != in.policy_weight.device()) {
          throw range_error("ERR_TDPO_OPTION", "grad_weight_into must be a " + std::string(c10::toString(wide)) +
                                                   " tensor shaped and placed as policy_weight");
        }
        grad_weight_ = g;
      } else {
        grad_weight_ = at::zeros_like(in.policy_weight, wide);
      }
    }
  }

  LinearResult run() {
    for (int64_t p = 0; p < L_.pairs;) {
      int64_t q = p + 1;
      while (q < L_.pairs && rows_of(p, q + 1) <= cap_) ++q;
      if (rows_of(p, q) <= cap_) {
        one_pass(p, q);
      } else {
        two_pass(p);  // q == p + 1: this pair alone exceeds a chunk
      }
      p = q;
    }
    LinearResult out;
    out.stats = std::move(res_);
    out.stats.loss = total_ / double(L_.pairs);
    out.grad_hidden = grad_hidden_;
    out.grad_weight = grad_weight_;
    out.chunks = chunks_;
    out.recomputed_rows = recomputed_;
    return out;
  }

 private:
  int64_t rows_of(int64_t p, int64_t q) const { return L_.offset[2 * q] - L_.offset[2 * p]; }

  Chunk make_chunk(int64_t begin, int64_t end) const {
    Chunk ch{begin, end, {}, {}, {}, {}};
    std::vector<int64_t> idx(L_.rows.begin() + begin, L_.rows.begin() + end);
    ch.index = at::tensor(idx, at::TensorOptions().dtype(at::kLong)).to(device_);
    ch.policy_h = in_.policy_hidden.index_select(0, ch.index);
    return ch;
  }
  static at::Tensor logits(const at::Tensor& h, const at::Tensor& w) {
    return at::mm(h, w.t()).to(at::kFloat).contiguous();
  }
  at::Tensor reference_logits(const Chunk& ch) const {
    return logits(in_.reference_hidden.index_select(0, ch.index.to(in_.reference_hidden.device())),
                  in_.reference_weight)
        .to(device_);
  }
  at::Tensor chunk_labels(const Chunk& ch) const {
    std::vector<int64_t> y(L_.labels.begin() + ch.begin, L_.labels.begin() + ch.end);
    return at::tensor(y, at::TensorOptions().dtype(at::kLong)).to(device_);
  }

  // Both models' logits and each row's statistics.
  void forward(Chunk& ch) {
    ++chunks_;
    ch.z = logits(ch.policy_h, in_.policy_weight);
    ch.r = reference_logits(ch);
    if (kernel_) {
      forward_kernel(ch);
    } else {
      forward_aten(ch);
    }
    for (int64_t i = ch.begin; i < ch.end; ++i) check_row(i);
  }

  void forward_kernel(const Chunk& ch) {
    const float* z = ch.z.data_ptr<float>();
    const float* r = ch.r.data_ptr<float>();
    const int64_t V = L_.vocab, n = ch.size();
    at::parallel_for(0, n, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        stats_[ch.begin + i] = detail::row_forward(z + i * V, r + i * V, V, L_.labels[ch.begin + i], opt_.loss.entropy);
      }
    });
  }

  // The kernel's statistics with libtorch ops, in the kernel's form: sums of exp against each
  // model's own max, KL = sum e^(r - m_r) ((r - m_r) - (z - m_z)) / s_r + log s_z - log s_r (no
  // large log-sum-exp offsets inside the float32 sum), terms with q = 0 counted as 0; the per-row
  // combination in double on the host.
  void forward_aten(const Chunk& ch) {
    const at::Tensor y = chunk_labels(ch).unsqueeze(1);
    const at::Tensor& z = ch.z;
    const at::Tensor& r = ch.r;
    const at::Tensor bad = (z.isnan() | (z == INFINITY)).any(1, true) | (r.isnan() | (r == INFINITY)).any(1, true);
    const at::Tensor mz = z.amax(1, true), mr = r.amax(1, true);
    const at::Tensor dz = z - mz, dr = r - mr;
    const at::Tensor er = dr.exp();
    const at::Tensor acc = at::where(er > 0, er * (dr - dz), at::zeros_like(er)).sum(1, true);
    const at::Tensor ez = dz.exp();
    const at::Tensor hz = at::where(ez > 0, ez * dz, at::zeros_like(ez)).sum(1, true);
    const at::Tensor cols = at::cat({mz, ez.sum(1, true), mr, er.sum(1, true), acc, z.gather(1, y), r.gather(1, y),
                                     bad.to(at::kFloat), hz}, 1)
                                .to(at::kCPU, at::kDouble)
                                .contiguous();
    const double* v = cols.data_ptr<double>();
    for (int64_t i = 0; i < ch.size(); ++i, v += 9) {
      RowStats& s = stats_[ch.begin + i];
      s.max_z = v[0];
      s.logsum_z = std::log(v[1]);
      s.max_r = v[2];
      s.logsum_r = std::log(v[3]);
      s.logp = (v[5] - v[0]) - s.logsum_z;
      s.logq = (v[6] - v[2]) - s.logsum_r;
      s.kl = v[4] / v[3] + (s.logsum_z - s.logsum_r);
      s.bad = v[7] != 0;
      if (std::isnan(s.kl)) s.kl = INFINITY;
      s.entropy = s.logsum_z - v[8] / v[1];  // >= 0: v[1] >= 1 (the max's term) and v[8] <= 0
    }
  }

  void check_row(int64_t i) const {
    const RowStats& s = stats_[i];
    const char* what = nullptr;
    if (s.bad) what = "NaN or +Infinity";
    else if (s.max_z == -INFINITY || s.max_r == -INFINITY) what = "all -Infinity";
    else if (s.logp == -INFINITY || s.logq == -INFINITY) what = "-Infinity at the label";
    if (!what) return;
    const int64_t row = L_.rows[i];
    std::ostringstream m;
    m << "the logits at batch row " << row / L_.seq << ", position " << row % L_.seq << " are " << what
      << " (policy or reference: non-finite hidden states or output weights; a diverged model?)";
    throw range_error("ERR_TDPO_LOGITS", m.str());
  }

  // Pairs [p, q): sums, the objective, and each row's gradient coefficients.
  void combine(int64_t p, int64_t q) {
    if (res_.losses.empty()) size_pair_fields(res_, L_.pairs, opt_.loss);
    const double scale = opt_.grad_scale / double(L_.pairs);
    for (int64_t pair = p; pair < q; ++pair) {
      double m[2] = {0, 0}, k[2] = {0, 0}, lp[2] = {0, 0}, h[2] = {0, 0};
      for (int side = 0; side < 2; ++side) {
        for (int64_t i = L_.offset[2 * pair + side]; i < L_.offset[2 * pair + side + 1]; ++i) {
          m[side] += stats_[i].logp - stats_[i].logq;
          lp[side] += stats_[i].logp;
          k[side] += stats_[i].kl;
          h[side] += stats_[i].entropy;
        }
      }
      const PairObjective o = record_pair(res_, pair, opt_.loss, m, k, lp, h);
      total_ += o.loss;
      const double d[2][2] = {{o.d_mw, o.d_kw}, {o.d_ml, o.d_kl}};
      for (int side = 0; side < 2; ++side) {
        for (int64_t i = L_.offset[2 * pair + side]; i < L_.offset[2 * pair + side + 1]; ++i) {
          c_[i] = d[side][0] * scale;
          a_[i] = d[side][1] * scale;
        }
      }
    }
  }

  bool needs_reference_grad(const Chunk& ch) const {
    return std::any_of(a_.begin() + ch.begin, a_.begin() + ch.end, [](double a) { return a != 0; });
  }

  // Overwrites ch.z with d loss / d logits and adds its products into the two gradients.
  void backward(Chunk& ch) {
    if (kernel_) {
      backward_kernel(ch);
    } else {
      backward_aten(ch);
    }
    ch.r = at::Tensor();  // not needed by the matmuls below
    const at::Tensor g = ch.z.to(in_.policy_weight.scalar_type());
    grad_hidden_.index_copy_(0, ch.index, at::mm(g, in_.policy_weight).to(grad_hidden_.scalar_type()));
    if (grad_weight_.scalar_type() == g.scalar_type()) {
      grad_weight_.addmm_(g.t(), ch.policy_h.to(g.scalar_type()));
    } else {
      grad_weight_.add_(at::mm(g.t(), ch.policy_h.to(g.scalar_type())));  // a bf16 product, summed in float32
    }
  }

  void backward_kernel(Chunk& ch) {
    float* z = ch.z.data_ptr<float>();
    const float* r = ch.r.defined() ? ch.r.data_ptr<float>() : nullptr;
    const int64_t V = L_.vocab, n = ch.size();
    // Rows strided over threads: rows with a = 0 (TDPO2's chosen, DPO's) cost about half as much,
    // and they come in runs, which contiguous ranges would hand to one thread.
    const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n));
    at::parallel_for(0, threads, 1, [&](int64_t tb, int64_t te) {
      for (int64_t t = tb; t < te; ++t) {
        for (int64_t i = t; i < n; i += threads) {
          const int64_t k = ch.begin + i;
          const RowStats& s = stats_[k];
          const float a = float(a_[k]);
          detail::row_backward(z + i * V, a != 0 ? r + i * V : nullptr, V, L_.labels[k], float(s.max_z),
                               float(s.logsum_z), float(s.max_r), float(s.logsum_r), float(c_[k]), a, z + i * V);
        }
      }
    });
  }

  void backward_aten(Chunk& ch) {
    const int64_t n = ch.size();
    auto column = [&](auto get) {
      std::vector<float> v(n);
      for (int64_t i = 0; i < n; ++i) v[i] = float(get(ch.begin + i));
      return at::tensor(v).to(device_).unsqueeze(1);
    };
    const at::Tensor mz = column([&](int64_t k) { return stats_[k].max_z; });
    const at::Tensor lsz = column([&](int64_t k) { return stats_[k].logsum_z; });
    const at::Tensor c = column([&](int64_t k) { return c_[k]; });
    const at::Tensor a = column([&](int64_t k) { return a_[k]; });
    at::Tensor g = ((ch.z - mz) - lsz).exp_().mul_(a - c);
    if (ch.r.defined()) {
      const at::Tensor mr = column([&](int64_t k) { return stats_[k].max_r; });
      const at::Tensor lsr = column([&](int64_t k) { return stats_[k].logsum_r; });
      g.sub_(((ch.r - mr) - lsr).exp_().mul_(a));
    }
    g.scatter_add_(1, chunk_labels(ch).unsqueeze(1), c);
    ch.z = g;
  }

  // Whole pairs [p, q) in one chunk: logits once.
  void one_pass(int64_t p, int64_t q) {
    Chunk ch = make_chunk(L_.offset[2 * p], L_.offset[2 * q]);
    if (ch.size() > 0) forward(ch);
    combine(p, q);
    if (!needs_reference_grad(ch)) ch.r = at::Tensor();  // freed before the gradient's matmuls
    if (opt_.loss.grad && ch.size() > 0) backward(ch);
  }

  // One pair in row chunks. Each side's rows are cut into even chunks (TDPO2's chosen rows then
  // need no reference logits when recomputed). The statistics pass keeps its last chunk's logits
  // (a rejected chunk, or a chosen one where no rejected row is scored), whose gradient is taken
  // from them once the pair's coefficients are known; the other chunks are recomputed: the
  // policy's logits, the reference's only where a row's KL term has a gradient.
  void two_pass(int64_t p) {
    std::vector<std::pair<int64_t, int64_t>> spans;
    for (int side = 0; side < 2; ++side) {
      const int64_t b = L_.offset[2 * p + side], n = L_.offset[2 * p + side + 1] - b;
      const int64_t k = (n + cap_ - 1) / cap_;
      for (int64_t j = 0; j < k; ++j) spans.emplace_back(b + n * j / k, b + n * (j + 1) / k);
    }
    Chunk last;
    for (const auto& [b, e] : spans) {
      last = make_chunk(b, e);  // drops the previous chunk's logits before forward() makes these
      forward(last);
    }
    combine(p, p + 1);
    if (!opt_.loss.grad) return;
    if (!needs_reference_grad(last)) last.r = at::Tensor();
    backward(last);
    last = Chunk{};  // its gradient is in: freed before the recomputed chunks
    for (size_t j = 0; j + 1 < spans.size(); ++j) {
      Chunk ch = make_chunk(spans[j].first, spans[j].second);
      ++chunks_;
      recomputed_ += ch.size();
      ch.z = logits(ch.policy_h, in_.policy_weight);
      if (needs_reference_grad(ch)) ch.r = reference_logits(ch);
      backward(ch);
    }
  }

  const LinearInputs& in_;
  const LinearOptions& opt_;
  Layout L_;
  std::vector<RowStats> stats_;
  std::vector<double> c_, a_;
  bool kernel_ = true;
  at::Device device_ = at::kCPU;
  int64_t cap_ = 1;
  at::Tensor grad_hidden_, grad_weight_;
  Result res_;
  double total_ = 0;
  int64_t chunks_ = 0, recomputed_ = 0;
};

}  // namespace

const char* cpu_row_math() {
  static const char* const math = [] {
    const char* e = std::getenv("TDPO_FUSED_LINEAR_ROWS");
    return e && std::string(e) == "aten" ? "aten" : "kernel";
  }();
  return math;
}

LinearResult fused_linear(const LinearInputs& in, const LinearOptions& opt) {
  validate_options(opt.loss, "options.");
  if (opt.chunk_bytes <= 0) throw range_error("ERR_TDPO_OPTION", "the chunk budget must be > 0 bytes");
  if (!(std::isfinite(opt.grad_scale))) throw range_error("ERR_TDPO_OPTION", "the gradient scale must be finite");
  check_inputs(in);
  at::NoGradGuard no_grad;
  return Runner(in, opt).run();
}

}  // namespace tdpo::loss
