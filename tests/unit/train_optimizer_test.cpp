// AdamW against a naive double-precision loop, gradient clipping, LR schedule.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "pp3d/backend/backend.h"
#include "pp3d/core/rng.h"
#include "pp3d/optim/lr_schedule.h"
#include "pp3d/optim/optimizer.h"

using namespace pp3d;

namespace {
Parameter make_param(const std::string& name, const Shape& shape, uint64_t seed) {
  Parameter p;
  p.name = name;
  p.global_shape = shape;
  p.weight_decay = shape.size() == 2;
  const int64_t n = shape_numel(shape);
  std::vector<float> v(static_cast<std::size_t>(n)), g(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    v[i] = rng_normal(rng_key(seed, name + "v"), i);
    g[i] = 0.1f * rng_normal(rng_key(seed, name + "g"), i);
  }
  p.value = Tensor::from_vector(shape, v, MemCategory::Params);
  p.grad = Tensor::from_vector(shape, g, MemCategory::Grads);
  return p;
}
}  // namespace

TEST_CASE("adamw: matches the reference formula, weight decay on matrices only", "[train][optimizer]") {
  auto be = make_cpu_backend();
  Parameter w = make_param("w", {5, 3}, 1), b = make_param("b", {7}, 2);
  AdamWConfig cfg;
  cfg.beta1 = 0.8f;
  cfg.beta2 = 0.9f;
  cfg.eps = 1e-6f;
  cfg.weight_decay = 0.3f;
  AdamW opt(*be, {&w, &b}, cfg);
  CHECK(opt.state()[0].m.category() == MemCategory::Optimizer);
  struct Ref { std::vector<double> p, m, v; };
  Ref ref[2];
  Parameter* ps[2] = {&w, &b};
  for (int k = 0; k < 2; ++k) {
    const auto v = ps[k]->value.to_vector();
    ref[k].p.assign(v.begin(), v.end());
    ref[k].m.assign(v.size(), 0.0);
    ref[k].v.assign(v.size(), 0.0);
  }
  const float lrs[3] = {0.1f, 0.05f, 0.02f};
  const float scale = 0.5f;
  for (int t = 1; t <= 3; ++t) {
    opt.step(lrs[t - 1], scale);
    CHECK(opt.step_count() == t);
    for (int k = 0; k < 2; ++k) {
      const auto g = ps[k]->grad.to_vector();
      const double wd = ps[k]->weight_decay ? cfg.weight_decay : 0.0;
      for (std::size_t i = 0; i < g.size(); ++i) {
        const double gi = scale * g[i];
        auto& r = ref[k];
        r.m[i] = cfg.beta1 * r.m[i] + (1 - cfg.beta1) * gi;
        r.v[i] = cfg.beta2 * r.v[i] + (1 - cfg.beta2) * gi * gi;
        const double mh = r.m[i] / (1 - std::pow(cfg.beta1, t)), vh = r.v[i] / (1 - std::pow(cfg.beta2, t));
        r.p[i] -= lrs[t - 1] * (mh / (std::sqrt(vh) + cfg.eps) + wd * r.p[i]);
      }
      const auto got = ps[k]->value.to_vector();
      for (std::size_t i = 0; i < got.size(); ++i) REQUIRE(got[i] == Approx(ref[k].p[i]).margin(1e-6));
    }
  }
  CHECK_THROWS_WITH(AdamW(*be, {&w}, AdamWConfig{1.0f}), Catch::Contains("betas"));
}

TEST_CASE("clip_grad_norm: global norm, scaling, counted-once and reducer", "[train][optimizer]") {
  auto be = make_cpu_backend();
  Parameter a = make_param("a", {4, 4}, 3), b = make_param("b", {9}, 4), dup = make_param("dup", {4, 4}, 5);
  dup.counted_in_norm = false;
  std::vector<Parameter*> ps{&a, &b, &dup};
  double ss = 0;
  for (Parameter* p : {&a, &b})
    for (float g : p->grad.to_vector()) ss += static_cast<double>(g) * g;
  const double norm = std::sqrt(ss);
  CHECK(grad_norm(*be, ps) == Approx(norm).epsilon(1e-6));
  // a reducer that sums over 3 identical "ranks"
  double seen = -1;
  CHECK(grad_norm(*be, ps, [&](double s) { seen = s; return 3 * s; }) == Approx(std::sqrt(3 * ss)).epsilon(1e-6));
  CHECK(seen == Approx(ss).epsilon(1e-9));
  // below the threshold: bitwise unchanged
  const auto before = a.grad.to_vector();
  CHECK(clip_grad_norm(*be, ps, static_cast<float>(norm * 2)) == Approx(norm).epsilon(1e-6));
  CHECK(a.grad.to_vector() == before);
  // above: every gradient (the uncounted duplicate too) scaled to the max norm
  const auto dup_before = dup.grad.to_vector();
  const float max_norm = static_cast<float>(norm / 4);
  CHECK(clip_grad_norm(*be, ps, max_norm) == Approx(norm).epsilon(1e-6));
  CHECK(grad_norm(*be, ps) == Approx(max_norm).epsilon(1e-5));
  const double c = max_norm / (norm + 1e-6);
  CHECK(dup.grad.to_vector()[3] == Approx(dup_before[3] * c).epsilon(1e-6));
  CHECK(clip_coefficient(1.0f, 2.0f) == 1.0f);
  CHECK(clip_coefficient(4.0f, 1.0f) == Approx(0.25).epsilon(1e-6));
}

TEST_CASE("lr schedule: warm-up then cosine / linear / constant", "[train][lr]") {
  LrSchedule s;
  s.max_lr = 1.0f;
  s.min_lr = 0.1f;
  s.warmup_steps = 10;
  s.total_steps = 110;
  s.validate();
  CHECK(s.lr(0) == Approx(0.1));
  CHECK(s.lr(4) == Approx(0.5));
  CHECK(s.lr(9) == Approx(1.0));
  CHECK(s.lr(10) == Approx(1.0));
  CHECK(s.lr(60) == Approx(0.55));                                        // cosine midpoint
  CHECK(s.lr(35) == Approx(0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * 0.25))));
  CHECK(s.lr(110) == Approx(0.1));
  CHECK(s.lr(1000) == Approx(0.1));
  for (int64_t t = 11; t < 110; ++t) REQUIRE(s.lr(t) < s.lr(t - 1));  // monotone decay
  s.decay = LrDecay::Linear;
  CHECK(s.lr(60) == Approx(0.55));
  CHECK(s.lr(35) == Approx(1.0 - 0.9 * 0.25));
  s.decay = LrDecay::Constant;
  CHECK(s.lr(100) == 1.0f);
  CHECK(s.lr(5) == Approx(0.6));
  s.warmup_steps = 0;
  CHECK(s.lr(0) == 1.0f);
  CHECK(parse_lr_decay("linear") == LrDecay::Linear);
  CHECK(lr_decay_name(LrDecay::Cosine) == "cosine");
  CHECK_THROWS_WITH(parse_lr_decay("exp"), Catch::Contains("unknown learning-rate decay 'exp'"));
  s.min_lr = 2.0f;
  CHECK_THROWS_WITH(s.validate(), Catch::Contains("min_lr"));
  CHECK_THROWS_WITH(s.lr(-1), Catch::Contains("negative step"));
}
