// DynamicLossScaler: growth after scale_window clean steps, back-off with
// hysteresis (consecutive or not), min-scale clamp / error, bad configs, and
// the local non-finite gradient check. The expected scales follow from the
// rules in loss_scaler.h by hand (see the comments per step).
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "pp3d/comm/local_communicator.h"
#include "pp3d/train/loss_scaler.h"

using namespace pp3d;

namespace {
LossScalerConfig cfg(float init, int64_t window, int hysteresis, bool consecutive = false) {
  LossScalerConfig c;
  c.init_scale = init;
  c.scale_window = window;
  c.hysteresis = hysteresis;
  c.consecutive_hysteresis = consecutive;
  return c;
}
}  // namespace

TEST_CASE("loss scaler: grows by the factor every scale_window clean steps", "[train][loss_scaler]") {
  DynamicLossScaler s(cfg(8.0f, 3, 1));
  CHECK(s.scale() == 8.0f);
  CHECK_FALSE(s.update(false));  // iter 0: (0 + 1) % 3 != 0
  CHECK_FALSE(s.update(false));  // iter 1
  CHECK(s.scale() == 8.0f);
  CHECK_FALSE(s.update(false));  // iter 2: 3 % 3 == 0 -> x2
  CHECK(s.scale() == 16.0f);
  for (int i = 0; i < 3; ++i) s.update(false);
  CHECK(s.scale() == 32.0f);
  CHECK(s.inv_scale() == 1.0f / 32.0f);
}

TEST_CASE("loss scaler: back-off, and growth counted from the last overflow", "[train][loss_scaler]") {
  DynamicLossScaler s(cfg(4.0f, 2, 1));
  CHECK(s.update(true));  // hysteresis 1: halve at once
  CHECK(s.scale() == 2.0f);
  s.update(false);  // iter 1: (1 - 0) % 2 != 0
  CHECK(s.scale() == 2.0f);
  s.update(false);  // iter 2: 2 % 2 == 0 -> grow
  CHECK(s.scale() == 4.0f);
}

TEST_CASE("loss scaler: hysteresis delays the back-off", "[train][loss_scaler]") {
  SECTION("non-consecutive: a clean step does not restore the tolerance") {
    DynamicLossScaler s(cfg(1024.0f, 1000, 2));
    CHECK(s.update(true));  // tolerated (remaining 2 -> 1), step still skipped
    CHECK(s.scale() == 1024.0f);
    CHECK_FALSE(s.update(false));
    CHECK(s.update(true));  // remaining is 1: halve
    CHECK(s.scale() == 512.0f);
    CHECK(s.update(true));  // still 1 (only a growth resets it)
    CHECK(s.scale() == 256.0f);
  }
  SECTION("consecutive: a clean step restores the tolerance") {
    DynamicLossScaler s(cfg(1024.0f, 1000, 2, true));
    s.update(true);
    s.update(false);
    s.update(true);  // tolerated again
    CHECK(s.scale() == 1024.0f);
    s.update(true);
    CHECK(s.scale() == 512.0f);
  }
  SECTION("a growth restores the tolerance") {
    DynamicLossScaler s(cfg(64.0f, 2, 2));
    s.update(true);   // iter 0: remaining 1, last_overflow 0
    s.update(false);  // iter 1
    s.update(false);  // iter 2: grow -> 128, remaining 2
    CHECK(s.scale() == 128.0f);
    s.update(true);  // tolerated
    CHECK(s.scale() == 128.0f);
  }
}

TEST_CASE("loss scaler: min_scale clamp and error", "[train][loss_scaler]") {
  LossScalerConfig c = cfg(2.0f, 1000, 1);
  c.min_scale = 1.0f;
  DynamicLossScaler s(c);
  s.update(true);
  s.update(true);
  CHECK(s.scale() == 1.0f);
  c.raise_at_min_scale = true;
  DynamicLossScaler r(c);
  r.update(true);
  CHECK(r.scale() == 1.0f);
  CHECK_THROWS_WITH(r.update(true), Catch::Contains("minimum loss scale"));
}

TEST_CASE("loss scaler: bad configuration and state are rejected", "[train][loss_scaler]") {
  CHECK_THROWS_WITH(DynamicLossScaler(cfg(0.0f, 10, 1)), Catch::Contains("init_scale"));
  CHECK_THROWS_WITH(DynamicLossScaler(cfg(8.0f, 0, 1)), Catch::Contains("scale_window"));
  CHECK_THROWS_WITH(DynamicLossScaler(cfg(8.0f, 10, 0)), Catch::Contains("hysteresis"));
  LossScalerConfig c = cfg(8.0f, 10, 1);
  c.scale_factor = 1.0f;
  CHECK_THROWS_WITH(DynamicLossScaler(c), Catch::Contains("scale_factor"));
  DynamicLossScaler s(cfg(8.0f, 10, 2));
  DynamicLossScaler::State st = s.state();
  st.remaining_hysteresis = 3;
  CHECK_THROWS_WITH(s.set_state(st), Catch::Contains("remaining hysteresis"));
}

TEST_CASE("loss scaler: non-finite gradient detection", "[train][loss_scaler]") {
  auto be = make_cpu_backend();
  Parameter a, b;
  a.grad = Tensor::from_vector({3}, {1.0f, -2.0f, 3e38f});  // huge but finite
  b.grad = Tensor::from_vector({2}, {0.5f, 0.25f});
  Parameter undefined;  // e.g. a released ZeRO-2 gradient: skipped
  std::vector<Parameter*> ps{&a, &b, &undefined};
  CHECK_FALSE(DynamicLossScaler::grads_nonfinite(*be, ps));
  b.grad.data<float>()[1] = std::numeric_limits<float>::infinity();
  CHECK(DynamicLossScaler::grads_nonfinite(*be, ps));
  b.grad.data<float>()[1] = std::numeric_limits<float>::quiet_NaN();
  CHECK(DynamicLossScaler::grads_nonfinite(*be, ps));
  LocalCommunicator one;
  CHECK(DynamicLossScaler::any_overflow(true, &one));
  CHECK_FALSE(DynamicLossScaler::any_overflow(false, &one));
  CHECK(DynamicLossScaler::any_overflow(true, nullptr));
}
