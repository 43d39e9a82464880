// Cluster and GEMM-calibration YAML files (format in docs/PLANNER.md).
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "pp3d/core/error.h"
#include "pp3d/plan/hardware.h"

namespace pp3d {
namespace {

YAML::Node load(const std::string& path, const char* what) {
  try {
    return YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    PP3D_FAIL("cannot read {} file '{}': {}", what, path, e.what());
  }
}

double num(const YAML::Node& n, const std::string& path, const std::string& key) {
  try {
    return n.as<double>();
  } catch (const YAML::Exception&) {
    PP3D_FAIL("{}: key '{}' must be a number", path, key);
  }
}

void check_keys(const YAML::Node& map, const std::set<std::string>& known, const std::string& where) {
  PP3D_CHECK(map.IsMap(), "{} must be a YAML map", where);
  for (const auto& kv : map) {
    const auto key = kv.first.as<std::string>();
    if (!known.count(key)) {
      std::string list;
      for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
      PP3D_FAIL("{}: unknown key '{}' (known: {})", where, key, list);
    }
  }
}

std::vector<std::pair<double, double>> parse_table(const YAML::Node& n, const std::string& path) {
  std::vector<std::pair<double, double>> t;
  if (n.IsMap()) {
    for (const auto& kv : n)
      t.emplace_back(num(kv.first, path, "gemm_efficiency size"), num(kv.second, path, "gemm_efficiency value"));
  } else if (n.IsSequence()) {
    for (const auto& e : n) {
      check_keys(e, {"size", "efficiency"}, path + ": gemm_efficiency entry");
      PP3D_CHECK(e["size"] && e["efficiency"], "{}: each gemm_efficiency entry needs size and efficiency", path);
      t.emplace_back(num(e["size"], path, "size"), num(e["efficiency"], path, "efficiency"));
    }
  } else {
    PP3D_FAIL("{}: gemm_efficiency must be a map size: efficiency or a list of {{size, efficiency}}", path);
  }
  PP3D_CHECK(!t.empty(), "{}: gemm_efficiency is empty", path);
  std::sort(t.begin(), t.end());
  return t;
}

void read_link(const YAML::Node& n, LinkSpec& link, const std::string& where) {
  check_keys(n, {"alpha_us", "beta_gb_s"}, where);
  if (n["alpha_us"]) link.alpha = num(n["alpha_us"], where, "alpha_us") * 1e-6;
  if (n["beta_gb_s"]) link.beta = num(n["beta_gb_s"], where, "beta_gb_s") * 1e9;
}

}  // namespace

GemmEfficiency load_gemm_efficiency_yaml(const std::string& path) {
  const YAML::Node root = load(path, "GEMM calibration");
  check_keys(root, {"gemm_efficiency", "device", "dtype", "note"}, path);
  PP3D_CHECK(root["gemm_efficiency"], "{}: missing key 'gemm_efficiency'", path);
  GemmEfficiency g;
  g.table = parse_table(root["gemm_efficiency"], path);
  return g;
}

Cluster load_cluster_yaml(const std::string& path) {
  const YAML::Node root = load(path, "cluster");
  check_keys(root,
             {"name", "gpu", "peak_tflops", "memory_gb", "hbm_bw_tb_s", "nvlink_bw_gb_s", "ib_bw_gb_s",
              "gpus_per_node", "intra", "inter", "gemm_max_efficiency", "gemm_half_size", "gemm_efficiency",
              "gemm_efficiency_file", "launch_overhead_us", "fp32_peak_tflops", "fp8_peak_tflops",
              "flash_attention_efficiency", "hbm_efficiency"},
             path);
  Cluster c;
  c.gpus_per_node = 8;
  if (root["gpu"]) {
    c.gpu = gpu_preset(root["gpu"].as<std::string>());
  } else {
    for (const char* k : {"peak_tflops", "memory_gb", "hbm_bw_tb_s", "nvlink_bw_gb_s", "ib_bw_gb_s"})
      PP3D_CHECK(root[k], "{}: without a 'gpu' preset the key '{}' is required", path, k);
    c.gpu.name = "custom";
  }
  if (root["name"]) c.gpu.name = root["name"].as<std::string>();
  if (root["peak_tflops"]) c.gpu.peak_flops = num(root["peak_tflops"], path, "peak_tflops") * 1e12;
  if (root["memory_gb"]) c.gpu.memory_bytes = num(root["memory_gb"], path, "memory_gb") * 1e9;
  if (root["hbm_bw_tb_s"]) c.gpu.hbm_bw = num(root["hbm_bw_tb_s"], path, "hbm_bw_tb_s") * 1e12;
  if (root["nvlink_bw_gb_s"]) c.gpu.nvlink_bw = num(root["nvlink_bw_gb_s"], path, "nvlink_bw_gb_s") * 1e9;
  if (root["ib_bw_gb_s"]) c.gpu.ib_bw = num(root["ib_bw_gb_s"], path, "ib_bw_gb_s") * 1e9;
  if (root["gpus_per_node"]) c.gpus_per_node = static_cast<int>(num(root["gpus_per_node"], path, "gpus_per_node"));
  if (root["fp32_peak_tflops"]) c.gpu.fp32_peak_flops = num(root["fp32_peak_tflops"], path, "fp32_peak_tflops") * 1e12;
  if (root["fp8_peak_tflops"]) c.gpu.fp8_peak_flops = num(root["fp8_peak_tflops"], path, "fp8_peak_tflops") * 1e12;
  if (root["hbm_efficiency"]) c.gpu.hbm_efficiency = num(root["hbm_efficiency"], path, "hbm_efficiency");
  if (root["flash_attention_efficiency"])
    c.gpu.flash_attention_eff = num(root["flash_attention_efficiency"], path, "flash_attention_efficiency");
  if (root["launch_overhead_us"])
    c.gpu.launch_overhead = num(root["launch_overhead_us"], path, "launch_overhead_us") * 1e-6;
  if (root["gemm_max_efficiency"]) c.gpu.gemm.max_eff = num(root["gemm_max_efficiency"], path, "gemm_max_efficiency");
  if (root["gemm_half_size"]) c.gpu.gemm.half_size = num(root["gemm_half_size"], path, "gemm_half_size");
  c.intra = {5e-6, c.gpu.nvlink_bw};
  c.inter = {10e-6, c.gpu.ib_bw};
  if (root["intra"]) read_link(root["intra"], c.intra, path + ": intra");
  if (root["inter"]) read_link(root["inter"], c.inter, path + ": inter");
  PP3D_CHECK(!(root["gemm_efficiency"] && root["gemm_efficiency_file"]),
             "{}: give gemm_efficiency or gemm_efficiency_file, not both", path);
  if (root["gemm_efficiency"]) c.gpu.gemm.table = parse_table(root["gemm_efficiency"], path);
  if (root["gemm_efficiency_file"]) {
    std::filesystem::path f = root["gemm_efficiency_file"].as<std::string>();
    if (f.is_relative()) f = std::filesystem::path(path).parent_path() / f;
    c.gpu.gemm.table = load_gemm_efficiency_yaml(f.string()).table;
  }
  c.validate();
  return c;
}

}  // namespace pp3d
