// Llama layouts = the serial run (DESIGN.md §1): trains a tiny Llama for 20
// AdamW steps in the requested layout — tensor parallel (± sequence
// parallelism), pipeline (any --schedule: gpipe, 1f1b, interleaved, zb-h1),
// data parallel with ZeRO 0–3,
// tied or untied head — driving PipelineStage and ZeroOptimizer directly, as
// a third-party trainer would; every rank also trains the same model alone
// (tp = pp = dp = 1). Every step's loss and every final weight (the full
// tensor, gathered over TP) must be within --tol (default 1e-5, relative;
// weights as ||w - w_serial|| / ||w_serial|| per tensor) of the serial run.
// Mixed precision: --dtype bf16|f16 (16-bit parameters, f32 masters in
// ZeroOptimizer) with --compute16 / --activation16 / --grad16 (compute,
// activation, gradient dtype = the parameter dtype); the serial run uses the
// same dtypes, and --weight-tol bounds the 16-bit weights (default --tol).
//
//   mpirun -n 8 llama_layout_test --tp 2 --pp 2 --zero-stage 3 --sequence-parallel --tied
//   mpirun -n 2 llama_layout_test --zero-stage 0,1,2,3          (dp 2)
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "parallel/tp_test_util.h"
#include "pp3d/pp3d.h"
#include "pp3d/model/llama.h"

using namespace pp3d;
using pp3d::tptest::failures;

namespace {

struct Args {
  int tp = 1, pp = 1, virtual_stages = 1, micro_batches = 4, steps = 20;
  std::vector<int> zero_stages{0};
  bool sequence_parallel = false, tied = false, recompute = false;
  std::string schedule = "1f1b";
  int64_t global_batch = 16, seq = 8, layers = 4, kv_heads = 2;
  double tol = 1e-5, weight_tol = -1;  // weight_tol < 0: tol
  DType dtype = DType::F32;
  bool compute16 = false, activation16 = false, grad16 = false;
};

DType parse_dtype(const std::string& v) {
  if (v == "f32") return DType::F32;
  if (v == "bf16") return DType::BF16;
  if (v == "f16") return DType::F16;
  PP3D_FAIL("--dtype {}: expected f32, bf16 or f16", v);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto val = [&]() -> std::string {
      PP3D_CHECK(i + 1 < argc, "{} needs a value", k);
      return argv[++i];
    };
    if (k == "--tp") a.tp = std::stoi(val());
    else if (k == "--pp") a.pp = std::stoi(val());
    else if (k == "--virtual-stages") a.virtual_stages = std::stoi(val());
    else if (k == "--schedule") a.schedule = val();
    else if (k == "--num-layers") a.layers = std::stoll(val());
    else if (k == "--kv-heads") a.kv_heads = std::stoll(val());
    else if (k == "--sequence-parallel") a.sequence_parallel = true;
    else if (k == "--tied") a.tied = true;
    else if (k == "--recompute") a.recompute = true;
    else if (k == "--tol") a.tol = std::stod(val());
    else if (k == "--weight-tol") a.weight_tol = std::stod(val());
    else if (k == "--dtype") a.dtype = parse_dtype(val());
    else if (k == "--compute16") a.compute16 = true;
    else if (k == "--activation16") a.activation16 = true;
    else if (k == "--grad16") a.grad16 = true;
    else if (k == "--zero-stage") {
      a.zero_stages.clear();
      std::stringstream ss(val());
      for (std::string s; std::getline(ss, s, ',');) a.zero_stages.push_back(std::stoi(s));
    } else {
      PP3D_FAIL("unknown flag {}", k);
    }
  }
  return a;
}

LlamaConfig model_config(const Args& a) {
  LlamaConfig c;
  c.vocab_size = 61;  // padded to 64
  c.hidden_size = 32;
  c.num_layers = a.layers;
  c.num_heads = 4;
  c.num_kv_heads = a.kv_heads;
  c.mlp_hidden_size = 48;
  c.max_seq_len = a.seq;
  c.rope_theta = 500.0f;  // short sequences: make every frequency turn
  c.tied_embeddings = a.tied;
  c.init_std = 0.1f;
  return c;
}

// Token t of row `row` of step `step`'s global batch, a pure function of them:
// a random first token, then next = (3 * token + 1) mod vocab (learnable).
int32_t token(int64_t step, int64_t row, int64_t t, int64_t vocab) {
  uint64_t x = (uint64_t(step) * 1000003u + uint64_t(row)) * 10007u + 12345u;
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  int64_t tok = static_cast<int64_t>(x % uint64_t(vocab));
  for (int64_t i = 0; i < t; ++i) tok = (3 * tok + 1) % vocab;
  return static_cast<int32_t>(tok);
}

MicroBatch micro_batch(const Args& a, int64_t step, int64_t row0, int64_t rows, int64_t vocab) {
  std::vector<int32_t> ids, tgt;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t t = 0; t < a.seq; ++t) {
      ids.push_back(token(step, row0 + r, t, vocab));
      tgt.push_back(token(step, row0 + r, t + 1, vocab));
    }
  return {Tensor::from_vector_i32({rows, a.seq}, ids), Tensor::from_vector_i32({rows, a.seq}, tgt)};
}

struct Result {
  std::vector<double> losses;
  std::map<std::string, std::vector<float>> weights;  // full tensors (gathered over TP)
};

Result train(std::shared_ptr<Communicator> world, const Args& a, int zero_stage) {
  ProcessGrid grid(world, a.tp, a.pp);
  auto be = make_cpu_backend();
  const LlamaConfig cfg = model_config(a);
  PipelineConfig pc;
  pc.schedule = parse_schedule(a.schedule);
  pc.virtual_stages = a.virtual_stages;
  pc.seq_len = a.seq;
  pc.micro_batch_size = a.global_batch / grid.dp() / a.micro_batches;
  const LlamaLayout base = LlamaLayout::tensor_parallel(grid, a.sequence_parallel);
  LlamaOptions opts;
  opts.recompute = a.recompute;
  opts.param_dtype = a.dtype;
  opts.compute_dtype = a.compute16 ? a.dtype : DType::F32;
  opts.activation_dtype = a.activation16 ? a.dtype : DType::F32;
  opts.grad_dtype = a.grad16 ? a.dtype : DType::F32;
  const PipelineSplit split = PipelineSplit::balanced(cfg.num_layers, grid.pp(), a.virtual_stages);
  PipelineStage stage(make_llama_chunks(cfg, *be, base, opts, split, grid.pp_rank()), grid.pp_group(),
                      grid.embedding_group(), pc, split);
  ZeroConfig zc;
  zc.stage = zero_stage;
  zc.bucket_mb = 0.01;  // several buckets even for this small model
  zc.adamw.weight_decay = 0.1f;
  ZeroOptimizer zero(*be, stage.modules(), grid.dp_group(), zc);
  zero.set_micro_batches_per_step(a.micro_batches);

  Result res;
  const int64_t rows = a.global_batch / grid.dp();
  const float w = 1.0f / float(a.global_batch * a.seq);  // mean over the global batch
  for (int step = 0; step < a.steps; ++step) {
    std::vector<MicroBatch> mbs;
    for (int m = 0; m < a.micro_batches; ++m)
      mbs.push_back(micro_batch(a, step, grid.dp_rank() * rows + m * pc.micro_batch_size, pc.micro_batch_size,
                                cfg.vocab_size));
    zero.zero_grad();
    const StepResult r = stage.run_step(mbs, w);
    zero.finish_gradient_sync();
    zero.step(3e-3f * std::min(1.0f, float(step + 1) / 5.0f));  // linear warm-up
    res.losses.push_back(all_reduce_sum_double(*grid.dp_group(), r.loss));
  }
  zero.gather_parameters();  // stage 3: full values of this rank's shards
  for (Parameter* p : stage.parameters()) {
    const Tensor v32 = Tensor::from_vector(p->value.shape(), p->value.to_vector());  // 16-bit values as f32
    const Tensor full = grid.tp() > 1 ? tptest::gather_full(*p, v32, *grid.tp_group()) : v32;
    res.weights[p->name] = full.to_vector();
  }
  zero.release_parameters();
  return res;
}

double rel(double a, double b) { return std::fabs(a - b) / std::max(1e-12, std::max(std::fabs(a), std::fabs(b))); }

double rel_l2(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    num += double(got[i] - want[i]) * double(got[i] - want[i]);
    den += double(want[i]) * double(want[i]);
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  auto world = init_world();
  Args serial = a;
  serial.tp = serial.pp = serial.virtual_stages = 1;
  serial.schedule = "1f1b";
  serial.micro_batches = a.micro_batches * (world->size() / (a.tp * a.pp));  // same rows per micro-batch
  serial.sequence_parallel = false;
  const Result ref = train(std::make_shared<LocalCommunicator>("serial", world->rank()), serial, 0);
  for (int zs : a.zero_stages) {
    const Result par = train(world, a, zs);
    double worst_loss = 0, worst_weight = 0;
    std::string worst_name;
    for (std::size_t s = 0; s < par.losses.size(); ++s) worst_loss = std::max(worst_loss, rel(par.losses[s], ref.losses[s]));
    for (const auto& [name, mine] : par.weights) {
      const std::vector<float>& want = ref.weights.at(name);
      TP_EXPECT(mine.size() == want.size(), "{}: {} elements, serial {}", name, mine.size(), want.size());
      if (mine.size() != want.size()) continue;
      const double e = rel_l2(mine, want);
      if (e > worst_weight) worst_weight = e, worst_name = name;
    }
    TP_EXPECT(worst_loss <= a.tol, "zero {}: loss differs from serial by {:.3g} (tol {:.3g})", zs, worst_loss, a.tol);
    const double wtol = a.weight_tol < 0 ? a.tol : a.weight_tol;
    TP_EXPECT(worst_weight <= wtol, "zero {}: {} differs from serial by {:.3g} (tol {:.3g})", zs, worst_name,
              worst_weight, wtol);
    // The run must learn: the last loss well below the first.
    TP_EXPECT(par.losses.back() < 0.9 * par.losses.front(), "loss {} -> {} did not drop", par.losses.front(),
              par.losses.back());
    const double wl = tptest::all_reduce_double(*world, worst_loss), ww = tptest::all_reduce_double(*world, worst_weight);
    if (world->rank() == 0)
      std::printf("llama %s%s%s%s tp%d pp%d dp%d zero%d %s v%d%s%s kv%lld: loss %.6f -> %.6f (serial %.6f -> %.6f); worst "
                  "relative difference vs serial over %zu steps: losses %.3g, weights %.3g (sums over ranks %.3g / "
                  "%.3g)\n",
                  std::string(dtype_name(a.dtype)).c_str(), a.compute16 ? " compute16" : "",
                  a.activation16 ? " act16" : "", a.grad16 ? " grad16" : "", a.tp, a.pp, world->size() / (a.tp * a.pp), zs, a.schedule.c_str(), a.virtual_stages,
                  a.sequence_parallel ? " sp" : "", a.tied ? " tied" : " untied", static_cast<long long>(a.kv_heads),
                  par.losses.front(), par.losses.back(), ref.losses.front(), ref.losses.back(), par.losses.size(),
                  worst_loss, worst_weight, wl, ww);
  }
  const int rc = tptest::finish(*world, "llama_layout_test");
  finalize_world();
  return rc;
}
