// Planner inputs: model YAML files, cluster YAML files, GEMM efficiency.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <unistd.h>

#include "pp3d/core/error.h"
#include "pp3d/plan/hardware.h"
#include "pp3d/plan/model_file.h"

using namespace pp3d;
namespace fs = std::filesystem;

namespace {
struct TempFile {
  fs::path path;
  TempFile(const std::string& name, const std::string& text) {
    path = fs::temp_directory_path() / ("pp3d_planner_" + std::to_string(::getpid()) + "_" + name);
    std::ofstream(path) << text;
  }
  ~TempFile() { std::error_code ec; fs::remove(path, ec); }
  std::string str() const { return path.string(); }
};
}  // namespace

TEST_CASE("model YAML files in configs/models", "[planner]") {
  const std::string dir = std::string(PP3D_SOURCE_DIR) + "/configs/models/";
  const GptConfig small = load_gpt_config_yaml(dir + "small.yaml");
  CHECK(small.num_layers == 12);
  CHECK(small.hidden_size == 768);
  CHECK(small.num_heads == 12);
  CHECK(small.vocab_size == 50257);
  CHECK(small.max_seq_len == 1024);
  const GptConfig medium = load_gpt_config_yaml(dir + "medium.yaml");
  CHECK((medium.num_layers == 24 && medium.hidden_size == 1024 && medium.num_heads == 16));
  const GptConfig large = load_gpt_config_yaml(dir + "large.yaml");
  CHECK((large.num_layers == 24 && large.hidden_size == 2048 && large.num_heads == 16 && large.max_seq_len == 2048));
  CHECK(std::abs(large.num_parameters() / 1e9 - 1.3) < 0.05);
  const GptConfig tiny = load_gpt_config_yaml(dir + "tiny.yaml");
  CHECK((tiny.num_layers == 2 && tiny.hidden_size == 64 && tiny.num_heads == 4 && tiny.vocab_size == 256 &&
         tiny.max_seq_len == 64));
}

TEST_CASE("model YAML errors name the key", "[planner]") {
  TempFile unknown("unknown.yaml", "num_layers: 2\nhidden_size: 64\nnum_heads: 4\nvocab_size: 256\nseq_len: 64\n"
                                   "hiden_size: 3\n");
  CHECK_THROWS_WITH(load_gpt_config_yaml(unknown.str()), Catch::Contains("unknown key 'hiden_size'"));
  TempFile missing("missing.yaml", "num_layers: 2\nhidden_size: 64\nnum_heads: 4\nvocab_size: 256\n");
  CHECK_THROWS_WITH(load_gpt_config_yaml(missing.str()), Catch::Contains("missing key 'seq_len'"));
  TempFile bad("bad.yaml", "num_layers: two\nhidden_size: 64\nnum_heads: 4\nvocab_size: 256\nseq_len: 64\n");
  CHECK_THROWS_WITH(load_gpt_config_yaml(bad.str()), Catch::Contains("'num_layers' must be an integer"));
  TempFile heads("heads.yaml", "num_layers: 2\nhidden_size: 64\nnum_heads: 5\nvocab_size: 256\nseq_len: 64\n");
  CHECK_THROWS_WITH(load_gpt_config_yaml(heads.str()), Catch::Contains("num_heads"));
  CHECK_THROWS_AS(load_gpt_config_yaml("/nonexistent/model.yaml"), Error);
}

TEST_CASE("GEMM efficiency: analytic model and calibration table", "[planner]") {
  GemmEfficiency g;  // 0.6 * d / (d + 256)
  CHECK(g.at_size(256) == Approx(0.3));
  CHECK(g(4096, 4096, 4096) == Approx(0.6 * 4096 / (4096 + 256.0)));
  CHECK(g(64, 64, 64) < g(1024, 1024, 1024));
  CHECK(g(1 << 20, 1 << 20, 1 << 20) <= 0.6);
  g.table = {{256, 0.2}, {1024, 0.4}, {4096, 0.7}};
  CHECK(g.at_size(100) == Approx(0.2));   // clamped
  CHECK(g.at_size(9000) == Approx(0.7));  // clamped
  CHECK(g.at_size(512) == Approx(0.3));   // log-linear midpoint
  CHECK(g.at_size(2048) == Approx(0.55));
  TempFile calib("calib.yaml", "device: H100\ngemm_efficiency:\n  256: 0.2\n  1024: 0.4\n  4096: 0.7\n");
  const GemmEfficiency loaded = load_gemm_efficiency_yaml(calib.str());
  REQUIRE(loaded.table.size() == 3);
  CHECK(loaded.at_size(512) == Approx(0.3));
  TempFile list("calib_list.yaml", "gemm_efficiency:\n  - {size: 4096, efficiency: 0.7}\n  - {size: 256, efficiency: 0.2}\n");
  CHECK(load_gemm_efficiency_yaml(list.str()).at_size(1024) == Approx(0.45));
}

TEST_CASE("cluster presets and cluster YAML", "[planner]") {
  const GpuSpec h100 = gpu_preset("h100");
  CHECK(h100.peak_flops == Approx(989e12));
  CHECK(h100.memory_bytes == Approx(80e9));
  CHECK(h100.ib_bw == Approx(50e9));  // 400 Gb/s
  CHECK(gpu_preset("h200").memory_bytes == Approx(141e9));
  CHECK(gpu_preset("a100").peak_flops == Approx(312e12));
  CHECK(gpu_preset("cpu").memory_bytes == Approx(24e9));
  CHECK_THROWS_WITH(gpu_preset("v100"), Catch::Contains("unknown GPU preset 'v100'"));

  TempFile preset("cluster.yaml", "gpu: h200\ngpus_per_node: 4\ninter: {alpha_us: 20, beta_gb_s: 25}\n"
                                  "gemm_efficiency: {512: 0.5, 8192: 0.8}\n");
  const Cluster c = load_cluster_yaml(preset.str());
  CHECK(c.gpus_per_node == 4);
  CHECK(c.gpu.memory_bytes == Approx(141e9));
  CHECK(c.inter.alpha == Approx(20e-6));
  CHECK(c.inter.beta == Approx(25e9));
  CHECK(c.intra.beta == Approx(450e9));
  CHECK(c.gpu.gemm.at_size(8192) == Approx(0.8));

  TempFile custom("custom.yaml", "name: MI300X\npeak_tflops: 1300\nmemory_gb: 192\nhbm_bw_tb_s: 5.3\n"
                                 "nvlink_bw_gb_s: 448\nib_bw_gb_s: 50\ngpus_per_node: 8\n");
  const Cluster m = load_cluster_yaml(custom.str());
  CHECK(m.gpu.name == "MI300X");
  CHECK(m.gpu.peak_flops == Approx(1300e12));
  CHECK(m.gpu.memory_bytes == Approx(192e9));
  TempFile incomplete("incomplete.yaml", "peak_tflops: 100\n");
  CHECK_THROWS_WITH(load_cluster_yaml(incomplete.str()), Catch::Contains("'memory_gb' is required"));
  TempFile unknown("unknown_cluster.yaml", "gpu: h100\ngpus_pernode: 8\n");
  CHECK_THROWS_WITH(load_cluster_yaml(unknown.str()), Catch::Contains("unknown key 'gpus_pernode'"));
  TempFile badlink("badlink.yaml", "gpu: h100\nintra: {alpha_us: 5, bandwidth: 3}\n");
  CHECK_THROWS_WITH(load_cluster_yaml(badlink.str()), Catch::Contains("unknown key 'bandwidth'"));
  TempFile badeff("badeff.yaml", "gpu: h100\ngemm_efficiency: {512: 1.5}\n");
  CHECK_THROWS_WITH(load_cluster_yaml(badeff.str()), Catch::Contains("efficiency"));
}
