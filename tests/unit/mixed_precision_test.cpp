// Mixed precision (bf16 / fp16 parameters, f32 master weights in the
// optimizer, fp16 dynamic loss scaling): storage and init, the 16-bit model's
// math against the f32 model of its rounded weights, 20 training steps against
// the f32 run, exactness of loss scaling, and the overflow skip.
#include <catch2/catch.hpp>

#include "test_util.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "pp3d/backend/backend.h"
#include "pp3d/core/allocator.h"
#include "pp3d/core/rng.h"
#include "pp3d/model/gpt.h"
#include "pp3d/train/mixed_precision.h"
#include "pp3d/optim/optimizer.h"

using namespace pp3d;

namespace {

using pp3d::test::bits_equal;
using pp3d::test::rel_l2;

GptConfig mp_config() {
  GptConfig c;
  c.vocab_size = 61;
  c.padded_vocab_size = 64;
  c.max_seq_len = 16;
  c.num_layers = 2;
  c.num_heads = 2;
  c.hidden_size = 32;
  return c;
}

constexpr int64_t kB = 4, kT = 16;

Tensor ids_of(uint64_t seed) {
  std::vector<int32_t> v(static_cast<std::size_t>(kB * kT));
  for (std::size_t i = 0; i < v.size(); ++i)
    v[i] = static_cast<int32_t>(rng_uniform(rng_key(seed, "mp-ids"), i) * 61.0f) % 61;
  return Tensor::from_vector_i32({kB, kT}, v);
}

GptOptions opts_of(DType dt, DType gdt = DType::F32) {
  GptOptions o;
  o.seed = 11;
  o.param_dtype = dt;
  o.grad_dtype = gdt;
  return o;
}

int64_t bytes(MemCategory c) { return Allocator::instance().stats(c).current; }

struct Run {
  std::vector<float> losses, norms;
  std::vector<std::vector<float>> weights;  // final values as f32
};

// `steps` AdamW steps on one fixed batch (memorisation: the loss must fall).
// use_mp: through MixedPrecision (with its fp16 scaler when dt is F16);
// otherwise the plain clip_grad_norm + AdamW::step path.
// grad16: gradients stored in dt too (GptOptions::grad_dtype, --grad-dtype param).
Run train(DType dt, int steps, float clip, bool use_mp, float init_scale = 65536.0f, bool grad16 = false) {
  auto be = make_cpu_backend();
  Gpt model(mp_config(), *be, {}, opts_of(dt, grad16 ? dt : DType::F32));
  AdamWConfig ac;
  ac.eps = 1e-6f;
  AdamW opt(*be, model.parameters(), ac);
  LossScalerConfig sc;
  sc.init_scale = init_scale;
  MixedPrecision mp(dt, sc);
  const Tensor ids = ids_of(1), tgt = ids_of(2);
  const float w = 1.0f / static_cast<float>(kB * kT);
  Run r;
  for (int s = 0; s < steps; ++s) {
    model.zero_grad();
    ActivationCache cache;
    const float scale = use_mp ? mp.loss_scale() : 1.0f;
    model.forward(ids, tgt, w * scale, cache);
    r.losses.push_back(static_cast<float>(cache.loss() / scale));
    model.backward(Tensor(), cache);
    if (use_mp) {
      const MixedPrecisionStep st = mp.step(opt, 3e-3f, clip, nullptr);
      REQUIRE_FALSE(st.skipped);
      r.norms.push_back(st.grad_norm);
    } else {
      r.norms.push_back(clip_grad_norm(*be, model.parameters(), clip));
      opt.step(3e-3f);
    }
  }
  for (Parameter* p : model.parameters()) r.weights.push_back(p->value.to_vector());
  return r;
}

bool verbose() { return std::getenv("PP3D_TEST_VERBOSE") != nullptr; }

}  // namespace

TEST_CASE("mixed precision: 16-bit parameters round the f32 init, masters equal it, Params bytes halve",
          "[train][mixed_precision]") {
  auto be = make_cpu_backend();
  const int64_t p0 = bytes(MemCategory::Params), g0 = bytes(MemCategory::Grads);
  Gpt ref(mp_config(), *be, {}, opts_of(DType::F32));
  const int64_t psi = ref.num_local_parameters();
  REQUIRE(bytes(MemCategory::Params) - p0 == 4 * psi);
  REQUIRE(bytes(MemCategory::Grads) - g0 == 4 * psi);
  for (DType dt : {DType::BF16, DType::F16}) {
    CAPTURE(dtype_name(dt));
    const int64_t p1 = bytes(MemCategory::Params), g1 = bytes(MemCategory::Grads), o1 = bytes(MemCategory::Optimizer);
    Gpt m(mp_config(), *be, {}, opts_of(dt));
    CHECK(bytes(MemCategory::Params) - p1 == 2 * psi);  // halved
    CHECK(bytes(MemCategory::Grads) - g1 == 4 * psi);   // gradients stay f32
    AdamW opt(*be, m.parameters());
    CHECK(bytes(MemCategory::Optimizer) - o1 == 12 * psi);  // m, v and the f32 master
    const auto mine = m.parameters(), theirs = ref.parameters();
    REQUIRE(mine.size() == theirs.size());
    for (std::size_t i = 0; i < mine.size(); ++i) {
      CAPTURE(mine[i]->name);
      REQUIRE(mine[i]->value.dtype() == dt);
      REQUIRE(mine[i]->grad.dtype() == DType::F32);
      // The 16-bit value is the round-to-nearest-even of the f32 init ...
      Tensor rounded = Tensor::empty(theirs[i]->value.shape(), dt);
      be->cast(theirs[i]->value, rounded);
      CHECK(bits_equal(mine[i]->value, rounded));
      // ... and the optimizer's master IS the f32 init, bitwise.
      CHECK(bits_equal(opt.state()[i].master, theirs[i]->value));
    }
    // A value changed after init (e.g. loaded): the master follows the value.
    Parameter& ln = *m.find_parameter("ln_f.weight");
    ln.value.fill_from(std::vector<float>(static_cast<std::size_t>(ln.value.numel()), 0.5f));
    const Tensor master = master_initial_values(ln);
    CHECK(master.to_vector() == std::vector<float>(static_cast<std::size_t>(ln.value.numel()), 0.5f));
  }
}

TEST_CASE("mixed precision: a 16-bit model computes the f32 model of its rounded weights",
          "[train][mixed_precision]") {
  auto be = make_cpu_backend();
  for (DType dt : {DType::BF16, DType::F16}) {
    CAPTURE(dtype_name(dt));
    Gpt half(mp_config(), *be, {}, opts_of(dt));
    Gpt full(mp_config(), *be, {}, opts_of(DType::F32));
    // LayerNorm / biases start at 1 / 0: perturb them so every cast path matters.
    for (Parameter* p : half.parameters()) {
      std::vector<float> v = p->value.to_vector();
      if (p->global_shape.size() == 1)
        for (std::size_t i = 0; i < v.size(); ++i) v[i] += 0.1f * rng_normal(rng_key(5, p->name), i);
      p->value.fill_from(v);                                      // rounds to dt
      full.find_parameter(p->name)->value.fill_from(p->value.to_vector());  // exact in f32
    }
    const Tensor ids = ids_of(3), tgt = ids_of(4);
    const float lh = half.train_step_forward_backward(ids, tgt);
    const float lf = full.train_step_forward_backward(ids, tgt);
    CHECK(std::fabs(lh - lf) <= 1e-6 * std::fabs(lf));
    double worst = 0.0;
    for (Parameter* p : half.parameters())
      worst = std::max(worst, rel_l2(p->grad.to_vector(), full.find_parameter(p->name)->grad.to_vector()));
    if (verbose()) std::printf("%s model vs f32 model of its weights: loss diff %.3g, grad rel L2 %.3g\n",
                               std::string(dtype_name(dt)).c_str(), std::fabs(lh - lf), worst);
    CHECK(worst <= 1e-5);
  }
}

TEST_CASE("mixed precision: bf16 / fp16 training follows the f32 run and the loss falls",
          "[train][mixed_precision]") {
  const int steps = 20;
  const Run f32 = train(DType::F32, steps, 1.0f, false);
  const Run f32_mp = train(DType::F32, steps, 1.0f, true);
  // MixedPrecision without a scaler is the plain path, bitwise.
  CHECK(f32_mp.losses == f32.losses);
  CHECK(f32_mp.weights == f32.weights);
  REQUIRE(f32.losses.back() < 0.7f * f32.losses.front());
  for (DType dt : {DType::BF16, DType::F16}) {
    CAPTURE(dtype_name(dt));
    const Run r = train(dt, steps, 1.0f, true);
    double worst = 0.0;
    for (int s = 0; s < steps; ++s)
      worst = std::max(worst, std::fabs(double(r.losses[s]) - f32.losses[s]) / f32.losses[s]);
    double wdiff = 0.0;
    for (std::size_t i = 0; i < r.weights.size(); ++i) wdiff = std::max(wdiff, rel_l2(r.weights[i], f32.weights[i]));
    if (verbose())
      std::printf("%s vs f32, %d steps: max loss rel diff %.3g (loss %.4f -> %.4f, f32 %.4f -> %.4f), max weight "
                  "rel L2 %.3g\n", std::string(dtype_name(dt)).c_str(), steps, worst, r.losses.front(),
                  r.losses.back(), f32.losses.front(), f32.losses.back(), wdiff);
    CHECK(worst < 1e-2);
    CHECK(r.losses.back() < 0.7f * r.losses.front());
  }
}

TEST_CASE("mixed precision: 16-bit gradients follow the f32 run and the loss falls, Grads bytes halve",
          "[train][mixed_precision][grad16]") {
  const int steps = 20;
  const Run f32 = train(DType::F32, steps, 1.0f, false);
  for (DType dt : {DType::BF16, DType::F16}) {
    CAPTURE(dtype_name(dt));
    // fp16 gradients hold the scaled gradient: scale 1024 keeps this run overflow-free.
    const Run r = train(dt, steps, 1.0f, true, 1024.0f, true);
    double worst = 0.0;
    for (int s = 0; s < steps; ++s)
      worst = std::max(worst, std::fabs(double(r.losses[s]) - f32.losses[s]) / f32.losses[s]);
    if (verbose())
      std::printf("%s params + %s grads vs f32, %d steps: max loss rel diff %.3g (loss %.4f -> %.4f)\n",
                  std::string(dtype_name(dt)).c_str(), std::string(dtype_name(dt)).c_str(), steps, worst,
                  r.losses.front(), r.losses.back());
    CHECK(worst < 1e-2);
    CHECK(r.losses.back() < 0.7f * r.losses.front());
  }
  auto be = make_cpu_backend();
  const int64_t g0 = bytes(MemCategory::Grads);
  Gpt m32(mp_config(), *be, {}, opts_of(DType::BF16));
  const int64_t g32 = bytes(MemCategory::Grads) - g0;
  Gpt m16(mp_config(), *be, {}, opts_of(DType::BF16, DType::BF16));
  const int64_t g16 = bytes(MemCategory::Grads) - g0 - g32;
  CHECK(g32 == 4 * m32.num_local_parameters());
  CHECK(g16 == 2 * m16.num_local_parameters());
  for (Parameter* p : m16.parameters()) CHECK(p->grad.dtype() == DType::BF16);
}

TEST_CASE("mixed precision: fp16 loss scaling is exact (scaled run == unscaled run bitwise, with clipping)",
          "[train][mixed_precision]") {
  // Scaling by a power of two commutes with rounding; the step unscales in place.
  const Run plain = train(DType::F16, 6, 0.5f, false);
  const Run scaled = train(DType::F16, 6, 0.5f, true, 4096.0f);
  int clipped = 0;
  for (float n : plain.norms) clipped += n > 0.5f ? 1 : 0;
  CHECK(clipped >= 3);                 // clipping active
  CHECK(scaled.norms == plain.norms);  // the norm reported (and clipped on) is the unscaled one
  CHECK(scaled.losses == plain.losses);
  CHECK(scaled.weights == plain.weights);
}

TEST_CASE("mixed precision: an fp16 overflow skips the step and backs the scale off", "[train][mixed_precision]") {
  auto be = make_cpu_backend();
  Gpt model(mp_config(), *be, {}, opts_of(DType::F16));
  AdamW opt(*be, model.parameters());
  LossScalerConfig sc;
  sc.init_scale = 1024.0f;
  sc.hysteresis = 1;
  MixedPrecision mp(DType::F16, sc);
  const Tensor ids = ids_of(1), tgt = ids_of(2);
  auto forward_backward = [&](bool inject) {
    model.zero_grad();
    ActivationCache cache;
    model.forward(ids, tgt, mp.loss_scale() / static_cast<float>(kB * kT), cache);
    model.backward(Tensor(), cache);
    if (inject) model.find_parameter("h.1.mlp.c_fc.bias")->grad.data<float>()[2] = std::numeric_limits<float>::infinity();
  };
  forward_backward(false);
  REQUIRE_FALSE(mp.step(opt, 1e-3f, 1.0f, nullptr).skipped);
  REQUIRE(opt.step_count() == 1);
  // Snapshot everything a step could touch, then overflow.
  std::vector<Tensor> before;
  for (std::size_t i = 0; i < opt.params().size(); ++i) {
    before.push_back(opt.params()[i]->value.clone());
    before.push_back(opt.state()[i].master.clone());
    before.push_back(opt.state()[i].m.clone());
    before.push_back(opt.state()[i].v.clone());
  }
  forward_backward(true);
  const MixedPrecisionStep st = mp.step(opt, 1e-3f, 1.0f, nullptr);
  CHECK(st.skipped);
  CHECK(std::isnan(st.grad_norm));
  CHECK(st.loss_scale == 1024.0f);
  CHECK(mp.loss_scale() == 512.0f);  // backed off
  CHECK(mp.skipped_steps() == 1);
  CHECK(opt.step_count() == 1);
  for (std::size_t i = 0; i < opt.params().size(); ++i) {
    CAPTURE(opt.params()[i]->name);
    CHECK(bits_equal(opt.params()[i]->value, before[4 * i]));
    CHECK(bits_equal(opt.state()[i].master, before[4 * i + 1]));
    CHECK(bits_equal(opt.state()[i].m, before[4 * i + 2]));
    CHECK(bits_equal(opt.state()[i].v, before[4 * i + 3]));
  }
  // The next step proceeds with the new scale.
  forward_backward(false);
  const MixedPrecisionStep next = mp.step(opt, 1e-3f, 1.0f, nullptr);
  CHECK_FALSE(next.skipped);
  CHECK(next.loss_scale == 512.0f);
  CHECK(opt.step_count() == 2);
  CHECK_FALSE(bits_equal(opt.params()[0]->value, before[0]));
}

TEST_CASE("mixed precision: bad dtypes and flags are rejected", "[train][mixed_precision]") {
  auto be = make_cpu_backend();
  CHECK_THROWS_WITH(MixedPrecision::dtype_from_flags(true, true), Catch::Contains("mutually exclusive"));
  CHECK(MixedPrecision::dtype_from_flags(true, false) == DType::BF16);
  CHECK(MixedPrecision::dtype_from_flags(false, true) == DType::F16);
  CHECK(MixedPrecision::dtype_from_flags(false, false) == DType::F32);
  CHECK_THROWS_WITH(MixedPrecision(DType::I32), Catch::Contains("f32, bf16 or f16"));
  CHECK_FALSE(MixedPrecision(DType::BF16).scaler().has_value());  // bf16: no loss scaling
  CHECK(MixedPrecision(DType::F16).loss_scale() == 65536.0f);
  CHECK_THROWS_WITH(Gpt(mp_config(), *be, {}, opts_of(DType::I32)), Catch::Contains("param_dtype"));
  // 16-bit gradients need 16-bit parameters of the same dtype.
  CHECK_THROWS_WITH(Gpt(mp_config(), *be, {}, opts_of(DType::F32, DType::BF16)), Catch::Contains("grad_dtype"));
  CHECK_THROWS_WITH(Gpt(mp_config(), *be, {}, opts_of(DType::BF16, DType::F16)), Catch::Contains("grad_dtype"));
}
