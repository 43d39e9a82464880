// The planner against published large-scale GPT training runs
// (docs/data/published_runs.yaml: Narayanan et al. 2021 Table 1, Smith et al.
// 2022 MT-NLG, Korthikanti et al. 2022): the mean absolute error of the
// predicted TFLOP/s per GPU must stay under 10% (docs/PLANNER.md, "Validation").
// Fails when a change to the time model or a preset makes the predictions worse.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>

#include "pp3d/plan/published.h"

using namespace pp3d;

TEST_CASE("planner vs published GPT training runs: mean absolute error < 10%", "[planner][published]") {
  const std::string path = std::string(PP3D_SOURCE_DIR) + "/docs/data/published_runs.yaml";
  const std::vector<PublishedRun> runs = load_published_runs(path);
  REQUIRE(runs.size() >= 15);
  const std::vector<PublishedComparison> rows = compare_published(runs);
  REQUIRE(rows.size() == runs.size());
  for (const PublishedComparison& r : rows) {
    INFO(r.run.name << ": published " << r.run.published << ", predicted " << r.predicted_tflops);
    CHECK(std::isfinite(r.error));
    CHECK(r.predicted.layout.gpus() == r.run.gpus);
    CHECK(r.predicted.layout.micro_batch >= 1);
  }
  const double mae = mean_abs_error(rows);
  INFO(published_table(rows));
  CHECK(mae < 0.10);
}

TEST_CASE("published-runs file errors name the run and the key", "[planner][published]") {
  CHECK_THROWS_WITH(load_published_runs("/nonexistent/runs.yaml"), Catch::Contains("cannot read published-runs file"));
  const std::string path = "planner_published_test_bad.yaml";
  {
    std::ofstream f(path);
    f << "runs:\n  - {name: x, layers: 2, hidden: 64, heads: 4, gpus: 8, tp: 2, pp: 1, global_batch: 8, "
         "metric: hardware_tflops, published: 1, tensor_parallel: 2}\n";
  }
  CHECK_THROWS_WITH(load_published_runs(path), Catch::Contains("run 'x': unknown key 'tensor_parallel'"));
  {
    std::ofstream f(path);
    f << "runs:\n  - {name: y, layers: 2, hidden: 64, heads: 4, gpus: 6, tp: 4, pp: 1, global_batch: 8, "
         "metric: hardware_tflops, published: 1}\n";
  }
  CHECK_THROWS_WITH(load_published_runs(path), Catch::Contains("run 'y': gpus 6 not divisible by tp 4"));
  std::remove(path.c_str());
}
