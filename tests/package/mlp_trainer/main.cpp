// An out-of-tree trainer of a non-transformer model (mlp_model.h) built from
// pp3d's public primitives: ProcessGrid -> chunks of the MLP -> PipelineStage
// -> ZeroOptimizer. It trains with the requested layout, then trains the same
// model on this process alone (tp = pp = dp = 1), and checks that the losses
// of every step and this rank's final weights equal the serial run within
// 1e-5 (relative). Exit 0 on success, 1 on a mismatch.
//
//   mpirun -n 8 pp3d_mlp_trainer --tp 2 --pp 2 --zero-stage 3 --schedule 1f1b
//   mpirun -n 8 pp3d_mlp_trainer --tp 2 --pp 2 --zero-stage 2 --schedule interleaved --virtual-stages 2
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "mlp_model.h"

namespace {

struct Args {
  int tp = 1, pp = 1, zero_stage = 0, virtual_stages = 1, micro_batches = 4, steps = 20;
  int64_t global_batch = 16;
  std::string schedule = "1f1b";
  float lr = 3e-3f;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--tp") a.tp = std::stoi(v);
    else if (k == "--pp") a.pp = std::stoi(v);
    else if (k == "--zero-stage") a.zero_stage = std::stoi(v);
    else if (k == "--virtual-stages") a.virtual_stages = std::stoi(v);
    else if (k == "--micro-batches") a.micro_batches = std::stoi(v);
    else if (k == "--steps") a.steps = std::stoi(v);
    else if (k == "--schedule") a.schedule = v;
    else throw std::runtime_error("unknown flag " + k);
  }
  return a;
}

// Row r of the global batch of step s: features in [-1, 1) from a hash, and a
// fixed nonlinear target, so the batch is a pure function of (step, row).
float feature(int64_t step, int64_t row, int64_t j) {
  uint64_t x = (uint64_t(step) * 1000003u + uint64_t(row)) * 10007u + uint64_t(j) + 12345u;
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  return float(x % 20000) / 10000.0f - 1.0f;
}

void batch_rows(const mlp::Config& c, int64_t step, int64_t row0, int64_t rows, pp3d::Tensor& x, pp3d::Tensor& t) {
  std::vector<float> xs(size_t(rows * c.in)), ts(size_t(rows * c.out));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < c.in; ++j) xs[size_t(r * c.in + j)] = feature(step, row0 + r, j);
    for (int64_t k = 0; k < c.out; ++k)
      ts[size_t(r * c.out + k)] = std::sin(xs[size_t(r * c.in + k)] * 2.0f) * xs[size_t(r * c.in + k + 1)];
  }
  x = pp3d::Tensor::from_vector({rows, c.in}, xs);
  t = pp3d::Tensor::from_vector({rows, c.out}, ts);
}

struct Result {
  std::vector<double> losses;
  std::map<std::string, std::vector<float>> weights;  // this rank's local shards
  std::map<std::string, pp3d::ShardSpec> shards;
  std::map<std::string, pp3d::Shape> global_shapes;
};

Result train(std::shared_ptr<pp3d::Communicator> world, const Args& a, const mlp::Config& c) {
  pp3d::ProcessGrid grid(world, a.tp, a.pp);
  auto be = pp3d::make_cpu_backend();
  pp3d::PipelineConfig pc;
  pc.schedule = pp3d::parse_schedule(a.schedule);
  pc.virtual_stages = a.virtual_stages;
  pc.seq_len = 1;  // one "position" per row: chunks exchange [micro_batch, width]
  pc.micro_batch_size = a.global_batch / grid.dp() / a.micro_batches;
  const mlp::Tp tp{grid.tp() > 1 ? grid.tp_group().get() : nullptr, grid.tp_rank(), grid.tp()};
  const pp3d::PipelineSplit split = pp3d::PipelineSplit::balanced(c.num_layers(), grid.pp(), a.virtual_stages);
  std::vector<std::unique_ptr<pp3d::Module>> chunks;
  for (int ch = 0; ch < a.virtual_stages; ++ch) {
    const int s = split.stage_of(grid.pp_rank(), ch);
    chunks.push_back(std::make_unique<mlp::Chunk>(c, *be, tp, split.first_layer(s), split.end_layer(s)));
  }
  pp3d::PipelineStage stage(std::move(chunks), grid.pp_group(), nullptr, pc, split);
  pp3d::ZeroConfig zc;
  zc.stage = a.zero_stage;
  zc.bucket_mb = 0.004;  // several buckets even for this small model
  zc.adamw.weight_decay = 0.01f;
  pp3d::ZeroOptimizer zero(*be, stage.modules(), grid.dp_group(), zc);
  zero.set_micro_batches_per_step(a.micro_batches);

  Result res;
  const int64_t rows = a.global_batch / grid.dp();
  const float w = 1.0f / float(a.global_batch * c.out);  // mean over the global batch
  for (int step = 0; step < a.steps; ++step) {
    std::vector<pp3d::MicroBatch> mbs(size_t(a.micro_batches));
    for (int m = 0; m < a.micro_batches; ++m) {
      const int64_t row0 = grid.dp_rank() * rows + m * pc.micro_batch_size;
      batch_rows(c, step, row0, pc.micro_batch_size, mbs[size_t(m)].ids, mbs[size_t(m)].targets);
    }
    zero.zero_grad();
    const pp3d::StepResult r = stage.run_step(mbs, w);
    zero.finish_gradient_sync();
    zero.step(a.lr * std::min(1.0f, float(step + 1) / 5.0f));  // linear warm-up
    res.losses.push_back(pp3d::all_reduce_sum_double(*grid.dp_group(), r.loss));
  }
  zero.gather_parameters();  // stage 3: full values of this rank's shards
  for (pp3d::Parameter* p : stage.parameters()) {
    res.weights[p->name] = p->value.to_vector();
    res.shards[p->name] = p->shard;
    res.global_shapes[p->name] = p->global_shape;
  }
  zero.release_parameters();
  return res;
}

// The slice `shard` of a full row-major [rows, cols] (or 1-D) tensor.
std::vector<float> slice_of(const std::vector<float>& full, const pp3d::Shape& g, const pp3d::ShardSpec& s) {
  if (!s.sharded()) return full;
  const int64_t rows = g[0], cols = g.size() > 1 ? g[1] : 1;
  std::vector<float> out;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < cols; ++k) {
      const int64_t idx = s.dim == 0 ? r : k;
      if (idx >= s.offset && idx < s.offset + s.length) out.push_back(full[size_t(r * cols + k)]);
    }
  return out;
}

double rel(double a, double b) { return std::fabs(a - b) / std::max(1e-12, std::max(std::fabs(a), std::fabs(b))); }

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  const mlp::Config c;
  auto world = pp3d::init_world();
  const Result par = train(world, a, c);
  Args serial = a;
  serial.tp = serial.pp = serial.virtual_stages = 1;
  serial.schedule = "1f1b";
  serial.micro_batches = a.micro_batches * (world->size() / (a.tp * a.pp));  // same rows per micro-batch
  const Result ref = train(std::make_shared<pp3d::LocalCommunicator>("serial", world->rank()), serial, c);

  double worst_loss = 0, worst_weight = 0;
  for (std::size_t s = 0; s < par.losses.size(); ++s) worst_loss = std::max(worst_loss, rel(par.losses[s], ref.losses[s]));
  for (const auto& [name, mine] : par.weights) {
    const std::vector<float> want = slice_of(ref.weights.at(name), par.global_shapes.at(name), par.shards.at(name));
    if (want.size() != mine.size()) {
      std::fprintf(stderr, "rank %d: %s has %zu elements, the serial slice %zu\n", world->rank(), name.c_str(),
                   mine.size(), want.size());
      return 1;
    }
    double num = 0, den = 0;
    for (std::size_t i = 0; i < mine.size(); ++i) {
      num += double(mine[i] - want[i]) * double(mine[i] - want[i]);
      den += double(want[i]) * double(want[i]);
    }
    worst_weight = std::max(worst_weight, std::sqrt(num / std::max(den, 1e-30)));
  }
  const double loss_all = pp3d::all_reduce_sum_double(*world, worst_loss), weight_all = pp3d::all_reduce_sum_double(*world, worst_weight);
  const bool ok = worst_loss <= 1e-5 && worst_weight <= 1e-5;
  const double oks = pp3d::all_reduce_sum_double(*world, ok ? 0.0 : 1.0);
  if (world->rank() == 0) {
    std::printf("mlp tp%d pp%d dp%d zero%d %s v%d: loss %.6f -> %.6f (serial %.6f -> %.6f)\n", a.tp, a.pp,
                world->size() / (a.tp * a.pp), a.zero_stage, a.schedule.c_str(), a.virtual_stages, par.losses.front(),
                par.losses.back(), ref.losses.front(), ref.losses.back());
    std::printf("worst relative difference vs serial over %zu steps: losses %.3g, weights %.3g (sum over ranks "
                "%.3g / %.3g); %s\n",
                par.losses.size(), worst_loss, worst_weight, loss_all, weight_all,
                oks == 0 ? "PASS" : "FAIL (bound 1e-5)");
  }
  pp3d::finalize_world();
  return oks == 0 ? 0 : 1;
}
