// GPT model: finite-difference gradients, recompute, stage split, padding, errors.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <map>
#include <vector>

#include "pp3d/backend/backend.h"
#include "pp3d/core/allocator.h"
#include "pp3d/core/rng.h"
#include "pp3d/model/gpt.h"

using namespace pp3d;

namespace {

GptConfig tiny_config() {
  GptConfig c;
  c.vocab_size = 13;
  c.padded_vocab_size = 16;
  c.max_seq_len = 6;
  c.num_layers = 2;
  c.num_heads = 2;
  c.hidden_size = 8;
  return c;
}

Tensor random_ids(int64_t B, int64_t T, int64_t vocab, uint64_t seed) {
  std::vector<int32_t> v(static_cast<std::size_t>(B * T));
  for (std::size_t i = 0; i < v.size(); ++i)
    v[i] = static_cast<int32_t>(rng_uniform(rng_key(seed, "ids"), i) * static_cast<float>(vocab));
  return Tensor::from_vector_i32({B, T}, v);
}

double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    den += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

}  // namespace

TEST_CASE("gpt: gradients match central finite differences", "[model][gpt]") {
  auto be = make_cpu_backend();
  GptConfig cfg = tiny_config();
  cfg.init_std = 0.3f;  // large weights: a nonlinear regime where mistakes show
  cfg.wpe_init_std = 0.3f;
  GptOptions opts;
  opts.seed = 7;
  Gpt model(cfg, *be, {}, opts);
  // LayerNorm/bias params start at 1/0: perturb them so their gradients are generic.
  for (Parameter* p : model.parameters()) {
    if (p->global_shape.size() != 1) continue;
    std::vector<float> v = p->value.to_vector();
    for (std::size_t i = 0; i < v.size(); ++i) v[i] += 0.2f * rng_normal(rng_key(3, p->name), i);
    p->value.fill_from(v);
  }
  const Tensor ids = random_ids(2, 5, cfg.vocab_size, 1);
  const Tensor tgt = random_ids(2, 5, cfg.vocab_size, 2);
  model.zero_grad();
  model.train_step_forward_backward(ids, tgt);

  int checked = 0;
  for (Parameter* p : model.parameters()) {
    const std::vector<float> g = p->grad.to_vector();
    // the entry with the largest |grad| and two pseudo-random ones
    std::vector<std::size_t> idx{0};
    for (std::size_t i = 1; i < g.size(); ++i)
      if (std::fabs(g[i]) > std::fabs(g[idx[0]])) idx[0] = i;
    idx.push_back(static_cast<std::size_t>(rng_uniform(rng_key(11, p->name), 0) * g.size()));
    idx.push_back(static_cast<std::size_t>(rng_uniform(rng_key(11, p->name), 1) * g.size()));
    float* w = p->value.data<float>();
    for (std::size_t i : idx) {
      const float orig = w[i];
      const float h = 1e-2f;
      w[i] = orig + h;
      const double lp = model.evaluate(ids, tgt);
      w[i] = orig - h;
      const double lm = model.evaluate(ids, tgt);
      w[i] = orig;
      const double fd = (lp - lm) / (2.0 * h);
      INFO(p->name << "[" << i << "] analytic " << g[i] << " fd " << fd);
      CHECK(std::fabs(fd - g[i]) <= 2e-4 + 2e-2 * std::fabs(g[i]));
      ++checked;
    }
  }
  CHECK(checked == 3 * static_cast<int>(model.parameters().size()));
}

TEST_CASE("gpt: activation recompute gives bitwise identical gradients", "[model][gpt]") {
  auto be = make_cpu_backend();
  const GptConfig cfg = tiny_config();
  GptOptions plain, rec;
  rec.recompute = true;
  Gpt a(cfg, *be, {}, plain), b(cfg, *be, {}, rec);
  const Tensor ids = random_ids(3, 6, cfg.vocab_size, 5), tgt = random_ids(3, 6, cfg.vocab_size, 6);
  const float la = a.train_step_forward_backward(ids, tgt);
  const float lb = b.train_step_forward_backward(ids, tgt);
  CHECK(std::memcmp(&la, &lb, sizeof(float)) == 0);
  const auto pa = a.parameters(), pb = b.parameters();
  REQUIRE(pa.size() == pb.size());
  for (std::size_t i = 0; i < pa.size(); ++i) {
    INFO(pa[i]->name);
    CHECK(std::memcmp(pa[i]->grad.raw(), pb[i]->grad.raw(), pa[i]->grad.nbytes()) == 0);
  }
  // recompute keeps only each block's input between forward and backward;
  // backward frees the whole cache
  auto& alloc = Allocator::instance();
  const std::size_t base = alloc.stats(MemCategory::Activations).current;
  std::size_t kept[2];
  Gpt* models[2] = {&a, &b};
  for (int k = 0; k < 2; ++k) {
    ActivationCache cache;
    models[k]->forward(ids, tgt, 1.0f, cache);
    kept[k] = alloc.stats(MemCategory::Activations).current - base;
    models[k]->backward(Tensor(), cache);
    CHECK(alloc.stats(MemCategory::Activations).current == base);
  }
  CHECK(kept[1] < kept[0] / 2);
}

TEST_CASE("gpt: two pipeline stages with two micro-batches in flight equal the whole model", "[model][gpt]") {
  auto be = make_cpu_backend();
  GptConfig cfg = tiny_config();
  cfg.num_layers = 3;
  Gpt whole(cfg, *be);
  GptLayout la, lb;
  la.first_layer = 0;
  la.last_layer = 1;
  la.has_head = false;
  lb.first_layer = 1;
  lb.last_layer = 3;
  lb.has_embedding = false;
  Gpt s0(cfg, *be, la), s1(cfg, *be, lb);
  const int64_t B = 2, T = 6;
  const Tensor ids = random_ids(2 * B, T, cfg.vocab_size, 8), tgt = random_ids(2 * B, T, cfg.vocab_size, 9);
  const float full_loss = whole.train_step_forward_backward(ids, tgt);

  const float w = 1.0f / static_cast<float>(2 * B * T);
  ActivationCache c0[2], c1[2];
  double loss = 0;
  for (int mb = 0; mb < 2; ++mb) {  // forward both micro-batches, then backward in reverse (GPipe-like)
    const Tensor mid = s0.forward(ids.slice(mb * B, (mb + 1) * B), Tensor(), w, c0[mb]);
    REQUIRE(mid.shape() == Shape{B, T, cfg.hidden_size});
    const Tensor none = s1.forward(mid.clone(), tgt.slice(mb * B, (mb + 1) * B), w, c1[mb]);
    CHECK_FALSE(none.defined());
    loss += c1[mb].loss();
  }
  for (int mb = 1; mb >= 0; --mb) {
    const Tensor dmid = s1.backward(Tensor(), c1[mb]);
    REQUIRE(dmid.shape() == Shape{B, T, cfg.hidden_size});
    CHECK_FALSE(s0.backward(dmid, c0[mb]).defined());
    CHECK_FALSE(c0[mb].active());
  }
  CHECK(loss == Approx(full_loss).epsilon(1e-6));
  // Every parameter of the whole model lives on exactly one stage, except the
  // tied wte whose two copies' gradients add up (the embedding-group all-reduce).
  for (Parameter* p : whole.parameters()) {
    Parameter* q0 = s0.find_parameter(p->name);
    Parameter* q1 = s1.find_parameter(p->name);
    REQUIRE((q0 != nullptr || q1 != nullptr));
    std::vector<float> g(static_cast<std::size_t>(p->grad.numel()), 0.0f);
    for (Parameter* q : {q0, q1}) {
      if (q == nullptr) continue;
      CHECK(q->value.to_vector() == p->value.to_vector());  // same init on every stage
      const auto gq = q->grad.to_vector();
      for (std::size_t i = 0; i < g.size(); ++i) g[i] += gq[i];
    }
    INFO(p->name);
    CHECK(rel_diff(g, p->grad.to_vector()) < 1e-5);
  }
  CHECK_FALSE(s1.find_parameter("wte")->counted_in_norm);
  CHECK(s0.find_parameter("wte")->counted_in_norm);
}

TEST_CASE("gpt: padded vocabulary rows never affect the loss", "[model][gpt]") {
  auto be = make_cpu_backend();
  const GptConfig cfg = tiny_config();
  Gpt model(cfg, *be);
  const Tensor ids = random_ids(2, 4, cfg.vocab_size, 3), tgt = random_ids(2, 4, cfg.vocab_size, 4);
  const float before = model.train_step_forward_backward(ids, tgt);
  Parameter* wte = model.find_parameter("wte");
  REQUIRE(wte->value.shape() == Shape{16, 8});
  const auto g = wte->grad.to_vector();
  for (int64_t i = cfg.vocab_size * 8; i < 16 * 8; ++i) CHECK(g[i] == 0.0f);
  float* w = wte->value.data<float>();
  for (int64_t i = cfg.vocab_size * 8; i < 16 * 8; ++i) w[i] = 50.0f;  // huge padded logits
  CHECK(model.evaluate(ids, tgt) == before);
}

TEST_CASE("gpt: loss at init is close to log(vocab) and eval equals train loss", "[model][gpt]") {
  auto be = make_cpu_backend();
  const GptConfig cfg = tiny_config();
  Gpt model(cfg, *be);
  const Tensor ids = random_ids(2, 6, cfg.vocab_size, 3), tgt = random_ids(2, 6, cfg.vocab_size, 4);
  const float ev = model.evaluate(ids, tgt);
  CHECK(ev == Approx(std::log(13.0)).epsilon(0.02));
  CHECK(model.train_step_forward_backward(ids, tgt) == ev);
}

TEST_CASE("gpt: config and layout errors are clear", "[model][gpt]") {
  auto be = make_cpu_backend();
  GptConfig c = tiny_config();
  c.num_heads = 3;
  CHECK_THROWS_WITH(c.validate(), Catch::Contains("not divisible by num_heads"));
  c = tiny_config();
  c.padded_vocab_size = 8;
  CHECK_THROWS_WITH(c.validate(), Catch::Contains("smaller than vocab_size"));
  c = GptConfig{};
  CHECK(c.padded_vocab() == 50304);
  CHECK(c.mlp_hidden() == 3072);
  CHECK(c.num_parameters() == 124475904);  // GPT-2 124M with the vocab padded to 50304
  GptLayout l;
  l.first_layer = 1;
  CHECK_THROWS_WITH(Gpt(tiny_config(), *be, l), Catch::Contains("embedding stage must start at layer 0"));
  l = GptLayout{};
  l.last_layer = 1;
  CHECK_THROWS_WITH(Gpt(tiny_config(), *be, l), Catch::Contains("head stage must end"));
  l = GptLayout{};
  l.tp_size = 2;
  l.tp_rank = 1;
  Gpt sharded(tiny_config(), *be, l);  // parameters can be built per shard already
  const Tensor ids = random_ids(1, 4, 13, 1);
  ActivationCache cache;
  CHECK_THROWS_WITH(sharded.forward(ids, ids, 1.0f, cache), Catch::Contains("tp_group is null"));
  Gpt model(tiny_config(), *be);
  CHECK_THROWS_WITH(model.forward(random_ids(1, 7, 13, 1), ids, 1.0f, cache), Catch::Contains("max_seq_len"));
  CHECK_THROWS_WITH(model.backward(Tensor(), cache), Catch::Contains("without a pending"));
}
