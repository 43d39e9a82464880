// Model FLOPs and GPU peaks (see trainer_flops.h).
#include "train/trainer_flops.h"

#include <filesystem>
#include <fstream>

namespace pp3d::detail {

int64_t matmul_parameters(const GptConfig& c) {
  const int64_t C = c.hidden_size, F = c.mlp_hidden();
  // Llama: q and o (C^2 each), k and v (C x Ckv each, grouped-query), gate, up and down (3 C F).
  const int64_t block = c.is_llama() ? 2 * C * C + 2 * C * c.kv_heads() * c.head_dim() + 3 * C * F
                                     : 4 * C * C + 2 * C * F;
  return c.num_layers * block + c.padded_vocab() * C;
}

double model_flops_per_token(const GptConfig& c, int64_t seq_len) {
  return 6.0 * static_cast<double>(matmul_parameters(c)) +
         12.0 * static_cast<double>(c.num_layers) * static_cast<double>(seq_len) * static_cast<double>(c.hidden_size);
}

std::optional<double> known_peak_tflops(const std::string& name, bool mixed) {
  // Dense (no sparsity) datasheet peaks: {name part, bf16/fp16 tensor core, fp32}.
  struct Peak {
    const char* part;
    double mixed, fp32;
  };
  static const Peak table[] = {
      {"H100 PCIe", 756.0, 51.2}, {"H100 NVL", 835.0, 60.0}, {"GH200", 989.0, 67.0}, {"H200", 989.0, 67.0},
      {"H100", 989.0, 67.0},      {"A100", 312.0, 19.5},     {"L40S", 362.0, 91.6}, {"A10G", 70.0, 31.2},
      {"V100", 125.0, 15.7},
  };
  for (const Peak& p : table)
    if (name.find(p.part) != std::string::npos) return mixed ? p.mixed : p.fp32;
  return std::nullopt;
}

std::string local_gpu_model(const std::string& driver_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::string model;
  for (const auto& e : fs::directory_iterator(driver_dir, ec)) {
    std::ifstream in(e.path() / "information");
    std::string line, m;
    while (std::getline(in, line))
      if (line.rfind("Model:", 0) == 0 && line.find_first_not_of(" \t", 6) != std::string::npos)
        m = line.substr(line.find_first_not_of(" \t", 6));
    if (m.empty() || (!model.empty() && m != model)) return "";
    model = m;
  }
  return model;
}

std::optional<double> peak_tflops_for(const Device& device, bool mixed, double flag) {
  if (flag > 0.0) return flag;
  if (!device.is_cuda()) return std::nullopt;
  return known_peak_tflops(local_gpu_model(), mixed);
}

}  // namespace pp3d::detail
