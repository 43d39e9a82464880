// GPU: the cuBLASLt bias epilogue of the 16-bit Linear forward and 16-bit gradients
// (--grad-dtype param) on the CUDA backend, against the unfused path and the CPU backend:
//  - Backend::linear16_forward: CudaBackend's CUBLASLT_EPILOGUE_BIAS path (y = round(x w^T
//    + bias) in one pass) vs the base-class path on the same GPU (gemm16 -> f32 -> bias_add
//    -> cast) and vs the CPU emulation; bias in the 16-bit dtype, f32 or absent; x f32 or
//    16-bit; odd sizes that may fall back; a bitwise repeat of the fused call;
//  - the ops that accumulate into a 16-bit parameter gradient (bias_grad, LayerNorm and
//    RMSNorm dweight, embedding dtable, scale, axpy, AdamW reading a 16-bit grad) vs the
//    CPU backend's "f32 accumulate, round once" on the same inputs;
//  - a 2-layer GPT with --bf16 --compute-dtype param --grad-dtype param, CUDA vs CPU.
// Exits 77 without a GPU.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "pp3d/model/gpt.h"

using namespace pp3d;
using namespace pp3d::cudatest;

namespace {

std::vector<float> host_f32(const Tensor& t) {
  Tensor h = t.device().is_cpu() ? t : t.to(Device::cpu());
  if (h.dtype() == DType::F32) return h.to_vector();
  auto be = make_cpu_backend();
  Tensor out = Tensor::empty(h.shape(), DType::F32);
  be->cast(h, out);
  return out.to_vector();
}

// One-ulp rounding flips allowed (the f32 sums' order differs between implementations).
Tol ulp_tol(DType dt) { return dt == DType::BF16 ? Tol{1e-3, 1.6e-2} : Tol{1e-4, 2e-3}; }
const char* name(DType dt) { return dt == DType::BF16 ? " bf16" : dt == DType::F16 ? " f16" : " f32"; }

void test_linear16(Ctx& c, DType dt, DType xdt, DType bdt, bool has_bias, int64_t rows, int64_t out, int64_t in,
                   uint32_t seed) {
  const Tensor x = rand_host({rows, in}, seed, xdt), w = rand_host({out, in}, seed + 1, dt);
  const Tensor b = has_bias ? rand_host({out}, seed + 2, bdt) : Tensor();
  Tensor y = Tensor::empty({rows, out}, dt);
  c.cpu->linear16_forward(dt, rows, out, in, x, w, b, y);
  const Tensor gx = to_gpu(x), gw = to_gpu(w), gb = has_bias ? to_gpu(b) : Tensor();
  Tensor fused = to_gpu(Tensor::zeros({rows, out}, dt)), again = to_gpu(Tensor::zeros({rows, out}, dt));
  Tensor unfused = to_gpu(Tensor::zeros({rows, out}, dt));
  c.gpu->linear16_forward(dt, rows, out, in, gx, gw, gb, fused);
  c.gpu->linear16_forward(dt, rows, out, in, gx, gw, gb, again);
  c.gpu->Backend::linear16_forward(dt, rows, out, in, gx, gw, gb, unfused);  // gemm16, bias_add, cast
  c.gpu->synchronize();
  const std::string what = tag("linear16", {rows, out, in}, name(dt)) + " x" + name(xdt) +
                           (has_bias ? std::string(" bias") + name(bdt) : std::string(" no bias"));
  expect_close(host_f32(fused), host_f32(unfused), ulp_tol(dt), what + " fused vs unfused");
  expect_close(host_f32(fused), host_f32(y), ulp_tol(dt), what + " fused vs cpu");
  expect_bitwise(again, fused, what + " repeat");
}

// A 16-bit gradient g (nonzero start) receiving one op's contribution on both backends.
Tensor grad16(int64_t n, DType dt, uint32_t seed) { return rand_host({n}, seed, dt); }

void test_grad16_ops(Ctx& c, DType dt, uint32_t seed) {
  const std::string dn = name(dt);
  const int64_t rows = 45, n = 96;
  {  // bias_grad: dbias = round(dbias + colsum(dy))
    const Tensor dy = rand_host({rows, n}, seed, dt);
    Tensor db = grad16(n, dt, seed + 1), gdb = to_gpu(db);
    c.cpu->bias_grad(dy, db);
    c.gpu->bias_grad(to_gpu(dy), gdb);
    expect_close(host_f32(gdb), host_f32(db), ulp_tol(dt), "bias_grad dbias" + dn);
  }
  {  // LayerNorm backward into 16-bit dweight / dbias
    const Tensor x = rand_host({rows, n}, seed + 2, dt), dy = rand_host({rows, n}, seed + 3, dt);
    const Tensor w = rand_host({n}, seed + 4), b = rand_host({n}, seed + 5);
    Tensor y = Tensor::empty({rows, n}, dt), mean = Tensor::empty({rows}), rstd = Tensor::empty({rows});
    c.cpu->layernorm_forward(x, w, b, y, mean, rstd, 1e-5f);
    Tensor dx = Tensor::empty({rows, n}, dt), dw = grad16(n, dt, seed + 6), dbb = grad16(n, dt, seed + 7);
    Tensor gdx = to_gpu(dx), gdw = to_gpu(dw), gdbb = to_gpu(dbb);
    c.cpu->layernorm_backward(dy, x, w, mean, rstd, dx, dw, dbb);
    c.gpu->layernorm_backward(to_gpu(dy), to_gpu(x), to_gpu(w), to_gpu(mean), to_gpu(rstd), gdx, gdw, gdbb);
    expect_close(host_f32(gdw), host_f32(dw), ulp_tol(dt), "layernorm_backward dweight" + dn);
    expect_close(host_f32(gdbb), host_f32(dbb), ulp_tol(dt), "layernorm_backward dbias" + dn);
  }
  {  // RMSNorm backward (f32 activations) into a 16-bit dweight
    const Tensor x = rand_host({rows, n}, seed + 8), dy = rand_host({rows, n}, seed + 9), w = rand_host({n}, seed + 10);
    Tensor y = Tensor::empty({rows, n}), rstd = Tensor::empty({rows});
    c.cpu->rmsnorm_forward(x, w, y, rstd, 1e-5f);
    Tensor dx = Tensor::empty({rows, n}), dw = grad16(n, dt, seed + 11), gdx = to_gpu(dx), gdw = to_gpu(dw);
    c.cpu->rmsnorm_backward(dy, x, w, rstd, dx, dw);
    c.gpu->rmsnorm_backward(to_gpu(dy), to_gpu(x), to_gpu(w), to_gpu(rstd), gdx, gdw);
    expect_close(host_f32(gdw), host_f32(dw), ulp_tol(dt), "rmsnorm_backward dweight" + dn);
  }
  {  // embedding backward into a 16-bit dtable (ids repeat, some out of range)
    const int64_t v = 13, ch = 40, nid = 57;
    std::vector<int32_t> ids(nid);
    for (int64_t i = 0; i < nid; ++i) ids[i] = static_cast<int32_t>((i * 5 + 2) % (v + 3));
    const Tensor tids = Tensor::from_vector_i32({nid}, ids), dout = rand_host({nid, ch}, seed + 12);
    Tensor dtab = rand_host({v, ch}, seed + 13, dt), gdtab = to_gpu(dtab);
    c.cpu->embedding_backward(tids, dout, dtab, 0);
    c.gpu->embedding_backward(to_gpu(tids), to_gpu(dout), gdtab, 0);
    expect_close(host_f32(gdtab), host_f32(dtab), ulp_tol(dt), "embedding_backward dtable" + dn);
  }
  {  // scale and axpy on 16-bit gradients: one rounding each
    Tensor g = grad16(1001, dt, seed + 14), gg = to_gpu(g);
    const Tensor x = rand_host({1001}, seed + 15, dt);
    c.cpu->scale(g, 0.37f);
    c.gpu->scale(gg, 0.37f);
    c.cpu->axpy(-1.5f, x, g);
    c.gpu->axpy(-1.5f, to_gpu(x), gg);
    expect_close(host_f32(gg), host_f32(g), ulp_tol(dt), "scale + axpy" + dn);
  }
  {  // AdamW reading a 16-bit gradient (f32 master, 16-bit param)
    const int64_t np = 777;
    const Tensor grad = rand_host({np}, seed + 16, dt);
    Tensor master = rand_host({np}, seed + 17), param = Tensor::empty({np}, dt);
    c.cpu->cast(master, param);
    Tensor m = Tensor::zeros({np}), v = Tensor::zeros({np});
    Tensor gparam = to_gpu(param), gmaster = to_gpu(master), gm = to_gpu(m), gv = to_gpu(v);
    AdamWParams p;
    p.lr = 1e-2f;
    p.weight_decay = 0.1f;
    c.cpu->adamw_step(param, grad, m, v, master, p);
    c.gpu->adamw_step(gparam, to_gpu(grad), gm, gv, gmaster, p);
    expect_close(host_f32(gmaster), host_f32(master), Tol{1e-6, 1e-5}, "adamw master, grad" + dn);
  }
}

// A 2-layer GPT, --bf16 --compute-dtype param --grad-dtype param, one step on both backends.
void test_gpt_grad16(Ctx& c) {
  GptConfig cfg;
  cfg.vocab_size = 67;
  cfg.max_seq_len = 64;
  cfg.num_layers = 2;
  cfg.num_heads = 4;
  cfg.hidden_size = 64;
  GptOptions opts;
  opts.param_dtype = opts.compute_dtype = opts.grad_dtype = DType::BF16;
  const int64_t B = 2, T = 33;
  std::vector<int32_t> ids(B * T), tgt(B * T);
  for (int64_t i = 0; i < B * T; ++i) {
    ids[i] = static_cast<int32_t>((i * 7 + 3) % cfg.vocab_size);
    tgt[i] = static_cast<int32_t>((i * 11 + 5) % cfg.vocab_size);
  }
  const Tensor tids = Tensor::from_vector_i32({B, T}, ids), ttgt = Tensor::from_vector_i32({B, T}, tgt);
  Gpt cpu_model(cfg, *c.cpu, {}, opts);
  Gpt gpu_model(cfg, *c.gpu, {}, opts);
  const double l_cpu = cpu_model.train_step_forward_backward(tids, ttgt);
  const double l_gpu = gpu_model.train_step_forward_backward(tids, ttgt);
  const double dl = std::fabs(l_gpu - l_cpu) / l_cpu;
  std::printf("%s gpt bf16 compute16 grad16 loss cuda %.6f cpu %.6f (rel %.2e, bound 2e-3)\n",
              dl <= 2e-3 ? "ok  " : "FAIL", l_gpu, l_cpu, dl);
  if (dl > 2e-3) ++failures();
  const auto pc = cpu_model.parameters(), pg = gpu_model.parameters();
  double worst = 0;
  std::string worst_name;
  for (std::size_t i = 0; i < pc.size(); ++i) {
    const auto g = host_f32(pg[i]->grad), w = host_f32(pc[i]->grad);
    double num = 0, den = 0;
    for (std::size_t j = 0; j < w.size(); ++j) {
      num += (static_cast<double>(g[j]) - w[j]) * (static_cast<double>(g[j]) - w[j]);
      den += static_cast<double>(w[j]) * w[j];
    }
    const double r = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
    if (r > worst) worst = r, worst_name = pc[i]->name;
  }
  const bool ok = worst <= 2e-2;
  std::printf("%s gpt bf16 compute16 grad16 worst gradient rel L2 %.3e (%s, bound 2e-2)\n", ok ? "ok  " : "FAIL",
              worst, worst_name.c_str());
  if (!ok) ++failures();
}

}  // namespace

int main() {
  if (skip_without_gpu()) return 77;
  Ctx c;
  uint32_t seed = 2200;
  for (DType dt : {DType::BF16, DType::F16}) {
    test_linear16(c, dt, dt, dt, true, 64, 768, 256, seed += 5);
    test_linear16(c, dt, DType::F32, dt, true, 37, 96, 64, seed += 5);
    test_linear16(c, dt, dt, DType::F32, true, 128, 256, 64, seed += 5);
    test_linear16(c, dt, dt, dt, false, 64, 128, 64, seed += 5);
    test_linear16(c, dt, dt, dt, true, 33, 30, 17, seed += 5);  // odd: may fall back
    test_grad16_ops(c, dt, seed += 20);
  }
  test_gpt_grad16(c);
  return finish();
}
