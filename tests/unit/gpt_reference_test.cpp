// pp3d's GPT against PyTorch: the fixture tests/fixtures/gpt_reference.bin
// holds torch's logits, loss, gradients and 5 AdamW steps for pp3d's initial
// weights (regenerate: tools/README.md). The weights are NOT in the fixture:
// they are re-created here from the seed, so an init change fails this test too.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "pp3d/backend/backend.h"
#include "pp3d/model/gpt.h"
#include "pp3d/optim/optimizer.h"
#include "reference_fixture.h"

using namespace pp3d;
using pp3d::test::Record;
using pp3d::test::read_fixture;
using pp3d::test::ref_rel_l2;
using pp3d::test::report_margin;


TEST_CASE("gpt reference: loss, logits, gradients and 5 AdamW steps match PyTorch", "[model][reference]") {
  const auto fx = read_fixture(std::string(PP3D_SOURCE_DIR) + "/tests/fixtures/gpt_reference.bin");
  const auto& c = fx.at("config").i;
  const int64_t V = c[3], Vp = c[4], T = c[5], B = c[6];
  GptOptions opts;
  opts.seed = static_cast<uint64_t>(c[8]);
  auto be = make_cpu_backend();
  Gpt model(pp3d::test::fixture_gpt_config(fx), *be, {}, opts);
  const auto [tids, ttgt] = pp3d::test::fixture_batch(fx);

  // forward + backward at the initial weights
  ActivationCache cache;
  model.forward(tids, ttgt, 1.0f / static_cast<float>(B * T), cache);
  const double loss = cache.loss();
  const auto logits = cache.logits().to_vector();  // [B, T, Vp]
  std::vector<float> real;
  for (int64_t r = 0; r < B * T; ++r)
    for (int64_t v = 0; v < V; ++v) real.push_back(logits[static_cast<std::size_t>(r * Vp + v)]);
  model.backward(Tensor(), cache);
  const double ref_loss = fx.at("loss").f[0];
  INFO("loss " << loss << " torch " << ref_loss);
  report_margin("loss", std::fabs(loss - ref_loss) / std::fabs(ref_loss));
  CHECK(std::fabs(loss - ref_loss) <= 1e-5 * std::fabs(ref_loss));
  report_margin("logits", ref_rel_l2(real, fx.at("logits").f));
  CHECK(ref_rel_l2(real, fx.at("logits").f) < 1e-5);
  for (Parameter* p : model.parameters()) {
    const Record& g = fx.at("grad/" + p->name);
    CHECK(g.dims == p->global_shape);
    INFO(p->name);
    report_margin("grad/" + p->name, ref_rel_l2(p->grad.to_vector(), g.f));
    CHECK(ref_rel_l2(p->grad.to_vector(), g.f) < 1e-4);
  }

  // 5 AdamW steps with clipping, constant lr, weight decay on matrices only
  const auto& a = fx.at("adamw").f;
  AdamW opt(*be, model.parameters(), pp3d::test::fixture_adamw(a));
  const auto& losses = fx.at("losses").f;
  const auto& norms = fx.at("grad_norms").f;
  REQUIRE(losses.size() == static_cast<std::size_t>(a[6]));
  for (std::size_t s = 0; s < losses.size(); ++s) {
    model.zero_grad();
    const float l = model.train_step_forward_backward(tids, ttgt);
    const float norm = clip_grad_norm(*be, model.parameters(), a[5]);
    opt.step(a[0]);
    INFO("step " << s << " loss " << l << " torch " << losses[s] << " norm " << norm << " torch " << norms[s]);
    report_margin("step " + std::to_string(s) + " loss", std::fabs(l - losses[s]) / losses[s]);
    report_margin("step " + std::to_string(s) + " grad norm", std::fabs(norm - norms[s]) / norms[s]);
    CHECK(std::fabs(l - losses[s]) <= 1e-5 * std::fabs(losses[s]));
    CHECK(std::fabs(norm - norms[s]) <= 1e-4 * norms[s]);
  }
  const double final_loss = model.evaluate(tids, ttgt), ref_final = fx.at("final_loss").f[0];
  INFO("final loss " << final_loss << " torch " << ref_final);
  report_margin("final loss", std::fabs(final_loss - ref_final) / ref_final);
  CHECK(std::fabs(final_loss - ref_final) <= 1e-5 * ref_final);
  for (const auto& [name, rec] : fx) {
    if (name.rfind("final/", 0) != 0) continue;
    Parameter* p = model.find_parameter(name.substr(6));
    REQUIRE(p != nullptr);
    INFO(name);
    // Adam turns rounding noise in near-zero gradients into +-lr steps: looser.
    report_margin(name, ref_rel_l2(p->value.to_vector(), rec.f));
    CHECK(ref_rel_l2(p->value.to_vector(), rec.f) < 1e-4);
  }
}
