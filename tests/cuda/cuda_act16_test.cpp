// GPU: the 16-bit activation ops of GPT's --compute-dtype param path against the
// CPU backend's emulation on the same inputs (docs/MIXED_PRECISION.md, "16-bit compute"):
//  - LayerNorm forward (x f32 or 16-bit -> y 16-bit) and backward (dy 16-bit, x f32 or
//    16-bit -> dx f32 or 16-bit), GELU forward / backward in 16 bits (kernels/layernorm.cu,
//    gelu.cu typed paths): per-dtype tolerances that admit one-ulp rounding flips;
//  - the wired 16-bit attention (CudaBackend::attention_forward / _backward with bf16 /
//    f16 qkv: cuDNN SDPA when built with the frontend, else the hand-written kernels with
//    16-bit P) against CpuBackend's 16-bit attention (P rounded before P V): relative L2;
//  - a 2-layer GPT with --bf16 --compute-dtype param, loss and gradients, CUDA vs CPU.
// Prints which attention implementation ran. Exits 77 without a GPU.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "pp3d/model/gpt.h"

using namespace pp3d;
using namespace pp3d::cudatest;

namespace {

Tensor cast_to(Backend& be, const Tensor& t, DType dt) {
  Tensor out = Tensor::empty(t.shape(), dt, t.device());
  be.cast(t, out);
  return out;
}

std::vector<float> host_f32(const Tensor& t) {
  Tensor h = t.device().is_cpu() ? t : t.to(Device::cpu());
  if (h.dtype() == DType::F32) return h.to_vector();
  auto be = make_cpu_backend();
  return cast_to(*be, h, DType::F32).to_vector();
}

void expect_rel_l2(const Tensor& got, const Tensor& want, double bound, const std::string& what) {
  cudatest::expect_rel_l2(host_f32(got), host_f32(want), bound, what);
}

// One-ulp rounding flips allowed (f32 reduction order differs between the backends).
Tol ulp_tol(DType dt) {
  if (dt == DType::BF16) return {1e-3, 1.6e-2};
  return dt == DType::F16 ? Tol{1e-4, 2e-3} : Tol{1e-4, 1e-4};
}

const char* name(DType dt) { return dt == DType::BF16 ? " bf16" : dt == DType::F16 ? " f16" : " f32"; }

void test_layernorm(Ctx& c, DType dt, DType xdt, int64_t rows, int64_t n, uint32_t seed) {
  const Tensor x = rand_host({rows, n}, seed, xdt, -2.0f, 2.0f);
  const Tensor w = rand_host({n}, seed + 1), b = rand_host({n}, seed + 2);
  const Tensor dy = rand_host({rows, n}, seed + 3, dt);
  Tensor y = Tensor::empty({rows, n}, dt), mean = Tensor::empty({rows}), rstd = Tensor::empty({rows});
  c.cpu->layernorm_forward(x, w, b, y, mean, rstd, 1e-5f);
  Tensor gy = to_gpu(Tensor::zeros({rows, n}, dt));
  Tensor gm = to_gpu(Tensor::zeros({rows})), gr = to_gpu(Tensor::zeros({rows}));
  c.gpu->layernorm_forward(to_gpu(x), to_gpu(w), to_gpu(b), gy, gm, gr, 1e-5f);
  const std::string what = tag("layernorm", {rows, n}, name(dt)) + " x" + name(xdt);
  expect_close(host_f32(gy), host_f32(y), ulp_tol(dt), what + " y");
  Tensor dx = Tensor::empty({rows, n}, xdt), dw = Tensor::zeros({n}), db = Tensor::zeros({n});
  c.cpu->layernorm_backward(dy, x, w, mean, rstd, dx, dw, db);
  Tensor gdx = to_gpu(Tensor::zeros({rows, n}, xdt));
  Tensor gdw = to_gpu(Tensor::zeros({n})), gdb = to_gpu(Tensor::zeros({n}));
  c.gpu->layernorm_backward(to_gpu(dy), to_gpu(x), to_gpu(w), gm, gr, gdx, gdw, gdb);
  expect_close(host_f32(gdx), host_f32(dx), ulp_tol(xdt), what + " dx");
  expect_close(host_f32(gdw), host_f32(dw), Tol{1e-4, 1e-4}, what + " dweight");
  expect_close(host_f32(gdb), host_f32(db), Tol{1e-4, 1e-4}, what + " dbias");
}

void test_gelu(Ctx& c, DType dt, int64_t n, uint32_t seed) {
  const Tensor x = rand_host({n}, seed, dt, -4.0f, 4.0f), dy = rand_host({n}, seed + 1, dt);
  Tensor y = Tensor::empty({n}, dt), dx = Tensor::empty({n}, dt);
  c.cpu->gelu_forward(x, y);
  c.cpu->gelu_backward(x, dy, dx);
  Tensor gy = to_gpu(Tensor::zeros({n}, dt)), gdx = to_gpu(Tensor::zeros({n}, dt));
  c.gpu->gelu_forward(to_gpu(x), gy);
  c.gpu->gelu_backward(to_gpu(x), to_gpu(dy), gdx);
  expect_close(host_f32(gy), host_f32(y), ulp_tol(dt), tag("gelu", {n}, name(dt)) + " y");
  expect_close(host_f32(gdx), host_f32(dx), ulp_tol(dt), tag("gelu", {n}, name(dt)) + " dx");
}

void test_attention(Ctx& c, DType dt, int64_t B, int64_t T, int64_t H, int64_t D, uint32_t seed) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const Tensor qkv = rand_host({B, T, 3, H, D}, seed, dt), dout = rand_host({B, T, H, D}, seed + 1, dt);
  Tensor out = Tensor::empty({B, T, H, D}, dt), lse = Tensor::empty({B, H, T});
  Tensor dqkv = Tensor::empty(qkv.shape(), dt);
  c.cpu->attention_forward(qkv, out, lse, scale);
  c.cpu->attention_backward(dout, qkv, out, lse, dqkv, scale);
  const Tensor gqkv = to_gpu(qkv);
  Tensor gout = to_gpu(Tensor::zeros({B, T, H, D}, dt)), glse = to_gpu(Tensor::zeros({B, H, T}));
  Tensor gdqkv = to_gpu(Tensor::zeros(qkv.shape(), dt));
  c.gpu->attention_forward(gqkv, gout, glse, scale);
  c.gpu->attention_backward(to_gpu(dout), gqkv, gout, glse, gdqkv, scale);
  c.gpu->synchronize();
  const std::string what = tag("attention", {B, T, H, D}, name(dt)) + " [" + c.gpu->attention_impl(dt) + "]";
  const double bound = dt == DType::BF16 ? 1e-2 : 2e-3;
  expect_rel_l2(gout, out, bound, what + " out");
  expect_close(host_f32(glse), host_f32(lse), Tol{1e-3, 1e-4}, what + " lse");
  expect_rel_l2(gdqkv, dqkv, 2 * bound, what + " dqkv");
}

// A 2-layer GPT, --bf16 --compute-dtype param, one forward/backward on both backends.
void test_gpt(Ctx& c) {
  GptConfig cfg;
  cfg.vocab_size = 67;
  cfg.max_seq_len = 64;
  cfg.num_layers = 2;
  cfg.num_heads = 4;
  cfg.hidden_size = 64;
  GptOptions opts;
  opts.param_dtype = opts.compute_dtype = DType::BF16;
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
  std::printf("%s gpt bf16 compute16 loss cuda %.6f cpu %.6f (rel %.2e, bound 2e-3) [attention %s]\n",
              dl <= 2e-3 ? "ok  " : "FAIL", l_gpu, l_cpu, dl, c.gpu->attention_impl(DType::BF16).c_str());
  if (dl > 2e-3) ++failures();
  const auto pc = cpu_model.parameters(), pg = gpu_model.parameters();
  double worst = 0;
  std::string worst_name;
  for (std::size_t i = 0; i < pc.size(); ++i) {
    const double r = rel_l2(host_f32(pg[i]->grad), host_f32(pc[i]->grad));
    if (r > worst) worst = r, worst_name = pc[i]->name;
  }
  const bool ok = worst <= 2e-2;
  std::printf("%s gpt bf16 compute16 worst gradient rel L2 %.3e (%s, bound 2e-2)\n", ok ? "ok  " : "FAIL", worst,
              worst_name.c_str());
  if (!ok) ++failures();
}

}  // namespace

int main() {
  if (skip_without_gpu()) return 77;
  Ctx c;
  uint32_t seed = 1200;
  for (DType dt : {DType::BF16, DType::F16}) {
    test_layernorm(c, dt, DType::F32, 37, 96, seed += 5);
    test_layernorm(c, dt, dt, 64, 768, seed += 5);
    test_gelu(c, dt, 1001, seed += 5);
    test_attention(c, dt, 2, 128, 4, 64, seed += 5);
    test_attention(c, dt, 1, 67, 2, 64, seed += 5);
  }
  test_gpt(c);
  return finish();
}
