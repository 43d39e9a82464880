// Shared by planner_alloc_test (GPT) and planner_llama_alloc_test: one rank's
// {predicted, measured} bytes per memory category, gathered to rank 0, checked
// within a tolerance and printed as one table row per rank.
#pragma once

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "pp3d/comm/communicator.h"
#include "pp3d/core/allocator.h"
#include "pp3d/core/tensor.h"
#include "pp3d/plan/planner.h"

namespace pp3d::alloctest {

constexpr int kCats = 6;  // Params .. Workspace
inline const char* const kNames[kCats] = {"params", "grads", "optimizer", "activations", "comm", "workspace"};
constexpr int kChecked = 4;  // params, grads, optimizer, activations must agree
constexpr double kTolerance = 0.05;

// {pred, meas} per category, then the stage: what compare_rows() reads.
inline std::vector<double> row(const MemoryBreakdown& pred, const std::vector<std::size_t>& peak, int stage) {
  std::vector<double> out(2 * kCats + 1, 0.0);
  for (int c = 0; c < kCats; ++c) {
    out[2 * c] = pred.get(static_cast<MemCategory>(c));
    out[2 * c + 1] = static_cast<double>(peak[static_cast<std::size_t>(c)]);
  }
  out[2 * kCats] = stage;
  return out;
}

inline double rel_err(double pred, double meas) {
  return meas == 0 ? (pred == 0 ? 0.0 : 1.0) : (pred - meas) / meas;
}

inline void print_header(const Communicator& world, const char* first) {
  if (world.rank() == 0)
    fmt::print("{:<28} {:>4} {:>5} | {:>22} {:>22} {:>22} {:>22} | {:>9} {:>9}\n", first, "rank", "stage",
               "params pred/meas err", "grads", "optimizer", "activations", "comm meas", "ws meas");
}

// Collective over `world`: gathers every rank's row (`mine`; zeros on ranks
// outside the layout), checks ranks [0, ranks) and prints them on rank 0.
// grads_bound: the grads prediction is an upper bound (must not under-predict).
// Returns the number of categories off by more than kTolerance.
inline int compare_rows(Communicator& world, const std::string& name, int ranks, const std::vector<double>& mine,
                        bool grads_bound = false) {
  const int W = world.size();
  Tensor local = Tensor::from_vector({int64_t(mine.size())}, std::vector<float>(mine.begin(), mine.end()));
  Tensor all = Tensor::zeros({int64_t(mine.size()) * W}, DType::F32, Device::cpu());
  world.all_gather(local, all);
  const std::vector<float> rows = all.to_vector();
  int failed = 0;
  for (int r = 0; r < ranks; ++r) {
    const float* v = rows.data() + r * int64_t(mine.size());
    std::string line = fmt::format("{:<28} {:>4} {:>5} |", name, r, int(v[2 * kCats]));
    for (int cat = 0; cat < kChecked; ++cat) {
      const double e = rel_err(v[2 * cat], v[2 * cat + 1]);
      line += fmt::format(" {:>8.0f}/{:>8.0f} {:>+4.1f}%", v[2 * cat], v[2 * cat + 1], 100 * e);
      const bool bound = cat == 1 && grads_bound;
      if (bound ? e < -kTolerance : std::fabs(e) > kTolerance) {
        ++failed;
        if (world.rank() == 0)
          std::fprintf(stderr, "FAIL %s rank %d: %s predicted %.0f B, allocator %.0f B (%+.1f%%)\n", name.c_str(), r,
                       kNames[cat], v[2 * cat], v[2 * cat + 1], 100 * e);
      }
    }
    line += fmt::format(" | {:>9.0f} {:>9.0f}", v[2 * 4 + 1], v[2 * 5 + 1]);
    if (world.rank() == 0) fmt::print("{}\n", line);
  }
  world.barrier();
  return failed;
}

}  // namespace pp3d::alloctest
