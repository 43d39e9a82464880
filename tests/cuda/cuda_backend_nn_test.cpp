// GPU: CudaBackend against CpuBackend (the reference) on the same random inputs
// for causal attention (forward and backward, head sizes 1..128, T not a
// multiple of the 32-row tiles), embedding (vocab-parallel offsets, repeated
// ids, accumulate), the vocab-sliced cross-entropy and AdamW (f32, and 16-bit
// params with f32 master). Backward ops are also run twice to check that they
// are bitwise deterministic. make_backend(Device::cuda(0)) is checked too.
// (16-bit parameter gradients: cuda_linear16_grad16_test.)
// Exits 77 without a GPU.
#include <cmath>
#include <random>
#include <vector>

#include "cuda_test_util.h"

using namespace pp3d;
using namespace pp3d::cudatest;

namespace {

Tensor rand_ids(int64_t n, int32_t lo, int32_t hi, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int32_t> dist(lo, hi - 1);
  std::vector<int32_t> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = dist(gen);
  return Tensor::from_vector_i32({n}, v);
}

void test_attention(Ctx& c) {
  const int64_t cases[][4] = {{1, 1, 1, 1}, {2, 7, 3, 13}, {1, 33, 2, 64}, {1, 70, 1, 128}, {2, 65, 2, 32},
                              {1, 100, 1, 80}};
  for (auto& s : cases) {
    const int64_t B = s[0], T = s[1], H = s[2], D = s[3];
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));
    Tensor qkv = rand_host({B, T, 3, H, D}, 30, DType::F32, -2.0f, 2.0f);
    Tensor dout = rand_host({B, T, H, D}, 31);
    Tensor out = Tensor::empty({B, T, H, D}), lse = Tensor::empty({B, H, T}), dqkv = Tensor::empty({B, T, 3, H, D});
    Tensor qkvd = to_gpu(qkv), outd = to_gpu(out), lsed = to_gpu(lse);
    c.cpu->attention_forward(qkv, out, lse, scale);
    c.gpu->attention_forward(qkvd, outd, lsed, scale);
    const std::initializer_list<int64_t> dims = {B, T, H, D};
    expect_close(outd, out, {1e-5, 1e-4}, tag("attention_forward out", dims));
    expect_close(lsed, lse, {1e-5, 1e-5}, tag("attention_forward lse", dims));
    // Backward from the CPU's out/lse on both sides, so only the backward kernels are compared.
    Tensor dqkvd = Tensor::empty({B, T, 3, H, D}, DType::F32, Device::cuda(0));
    Tensor dqkvd2 = Tensor::empty({B, T, 3, H, D}, DType::F32, Device::cuda(0));
    Tensor doutd = to_gpu(dout), out_c = to_gpu(out), lse_c = to_gpu(lse);
    c.cpu->attention_backward(dout, qkv, out, lse, dqkv, scale);
    c.gpu->attention_backward(doutd, qkvd, out_c, lse_c, dqkvd, scale);
    c.gpu->attention_backward(doutd, qkvd, out_c, lse_c, dqkvd2, scale);
    // Sums over up to T = 100 keys/queries of O(1) terms.
    expect_close(dqkvd, dqkv, {1e-4, 1e-4}, tag("attention_backward dqkv", dims));
    expect_bitwise(dqkvd2, dqkvd, tag("attention_backward deterministic", dims));
  }
}

void test_embedding(Ctx& c) {
  for (int64_t n : {1, 7, 257})
    for (int64_t ch : {1, 7, 768}) {
      const int64_t v = 13, offset = 5;
      Tensor ids = rand_ids(n, 0, 25, static_cast<uint32_t>(40 + n));  // some ids outside [5, 18)
      Tensor table = rand_host({v, ch}, 41), prev = rand_host({n, ch}, 42), dtab = rand_host({v, ch}, 43);
      Tensor idsd = to_gpu(ids), tabled = to_gpu(table);
      for (bool acc : {false, true}) {
        Tensor out = prev.clone(), outd = to_gpu(prev);
        c.cpu->embedding_forward(ids, table, out, offset, acc);
        c.gpu->embedding_forward(idsd, tabled, outd, offset, acc);
        expect_close(outd, out, {0, 0}, tag("embedding_forward", {n, ch}, acc ? " accumulate" : ""));
      }
      Tensor dout = rand_host({n, ch}, 44), dtabd = to_gpu(dtab), dtabd2 = to_gpu(dtab);
      c.cpu->embedding_backward(ids, dout, dtab, offset);
      c.gpu->embedding_backward(idsd, to_gpu(dout), dtabd, offset);
      c.gpu->embedding_backward(idsd, to_gpu(dout), dtabd2, offset);
      // Same per-row order (index order) on both sides: plain float adds, so equal.
      expect_close(dtabd, dtab, {0, 0}, tag("embedding_backward", {n, ch}));
      expect_bitwise(dtabd2, dtabd, tag("embedding_backward deterministic", {n, ch}));
    }
}

void test_xent(Ctx& c) {
  for (int64_t n : {1, 7, 13})
    for (int64_t vl : {1, 7, 257, 1003}) {
      const int64_t start = 100, valid = vl > 2 ? vl - 2 : vl;
      Tensor logits = rand_host({n, vl}, 50, DType::F32, -8.0f, 8.0f);
      Tensor targets = rand_ids(n, 90, static_cast<int32_t>(start + vl + 10), 51);
      Tensor mx = Tensor::empty({n}), se = Tensor::empty({n}), tl = Tensor::empty({n});
      Tensor mxd = to_gpu(mx), sed = to_gpu(se), tld = to_gpu(tl);
      Tensor ld = to_gpu(logits), td = to_gpu(targets);
      c.cpu->xent_stats(logits, targets, start, valid, mx, se, tl);
      c.gpu->xent_stats(ld, td, start, valid, mxd, sed, tld);
      expect_close(mxd, mx, {0, 0}, tag("xent_stats max", {n, vl}));
      expect_close(sed, se, {1e-6, 1e-5}, tag("xent_stats sumexp", {n, vl}));
      expect_close(tld, tl, {0, 0}, tag("xent_stats target_logit", {n, vl}));
      Tensor dl = Tensor::empty({n, vl}), dld = to_gpu(dl);
      c.cpu->xent_backward(logits, targets, start, valid, mx, se, 0.37f, dl);
      c.gpu->xent_backward(ld, td, start, valid, to_gpu(mx), to_gpu(se), 0.37f, dld);
      expect_close(dld, dl, {1e-6, 1e-5}, tag("xent_backward", {n, vl}));
    }
  // An empty slice (valid = 0): max -inf, sumexp 0, dlogits all 0.
  Tensor logits = rand_host({3, 4}, 52), targets = rand_ids(3, 0, 4, 53);
  Tensor mx = Tensor::empty({3}), se = Tensor::empty({3}), tl = Tensor::empty({3});
  Tensor mxd = to_gpu(mx), sed = to_gpu(se), tld = to_gpu(tl);
  c.cpu->xent_stats(logits, targets, 0, 0, mx, se, tl);
  c.gpu->xent_stats(to_gpu(logits), to_gpu(targets), 0, 0, mxd, sed, tld);
  expect_close(mxd, mx, {0, 0}, "xent_stats valid=0 max");
  expect_close(sed, se, {0, 0}, "xent_stats valid=0 sumexp");
}

void test_adamw(Ctx& c) {
  AdamWParams p;
  p.lr = 1e-2f;
  p.weight_decay = 0.1f;
  p.step = 3;
  p.grad_scale = 0.5f;
  for (int64_t n : {1, 7, 257, 4099})
    for (DType pt : {DType::F32, DType::BF16, DType::F16})
      for (bool use_master : {false, true}) {
        if (pt != DType::F32 && !use_master) continue;  // 16-bit params need a master copy
        Tensor master_h = rand_host({n}, 60), grad = rand_host({n}, 61), m = rand_host({n}, 62);
        Tensor v = rand_host({n}, 63, DType::F32, 0.0f, 1.0f);
        Tensor param = Tensor::empty({n}, pt);
        param.fill_from(master_h.to_vector());
        Tensor master = use_master ? master_h.clone() : Tensor();
        Tensor pd = to_gpu(param), md = to_gpu(m), vd = to_gpu(v), gd = to_gpu(grad);
        Tensor masterd = use_master ? to_gpu(master) : Tensor();
        c.cpu->adamw_step(param, grad, m, v, master, p);
        c.gpu->adamw_step(pd, gd, md, vd, masterd, p);
        const std::string what = tag("adamw", {n}, use_master ? " master " : " ") + std::string(dtype_name(pt));
        const Tol f32{1e-6, 1e-5};
        expect_close(pd, param, tol_for(pt, f32), what + " param");
        expect_close(md, m, f32, what + " m");
        expect_close(vd, v, f32, what + " v");
        if (use_master) expect_close(masterd, master, f32, what + " master");
      }
}

}  // namespace

int main() {
  if (skip_without_gpu()) return 77;
  Ctx c;
  if (c.gpu->name() != "cuda:0" || !c.gpu->device().is_cuda() || c.gpu->native_stream() == nullptr) {
    std::printf("FAIL make_backend(cuda:0) gave %s\n", c.gpu->name().c_str());
    ++failures();
  }
  test_attention(c);
  test_embedding(c);
  test_xent(c);
  test_adamw(c);
  return finish();
}
