// gemm_calibration_bench: measures the backend's GEMM throughput over a sweep
// of square sizes d (m = n = k = d) and writes the planner's calibration file
// (`pp3d-plan --gemm-calibration FILE`, docs/PLANNER.md): efficiency(d) =
// achieved FLOP/s / the preset's peak for the dtype. Prints a table too.
//
// Usage: gemm_calibration_bench [--device cpu|cuda] [--gpu PRESET] [--dtype f32|bf16|f16]
//                               [--sizes 64,128,...] [--iters N] [--out FILE]
// Defaults: cpu, preset "cpu", f32, sizes 64..1024; cuda: preset h100, bf16,
// sizes 256..8192. On CPU set OMP_NUM_THREADS to the cores the preset
// describes (the "cpu" preset is the whole 2-core machine).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "pp3d/backend/backend.h"
#include "pp3d/core/error.h"
#include "pp3d/core/rng.h"
#include "pp3d/plan/hardware.h"

using namespace pp3d;

namespace {

struct Options {
  std::string device = "cpu", gpu, dtype, out;
  std::vector<int64_t> sizes;
  int iters = 5;
};

std::vector<int64_t> parse_sizes(const std::string& s) {
  std::vector<int64_t> v;
  std::size_t pos = 0;
  while (pos < s.size()) {
    const std::size_t comma = s.find(',', pos);
    const std::string item = s.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    PP3D_CHECK(!item.empty() && item.find_first_not_of("0123456789") == std::string::npos && std::stoll(item) > 0,
               "--sizes wants positive integers separated by commas, got '{}'", s);
    v.push_back(std::stoll(item));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  PP3D_CHECK(!v.empty(), "--sizes is empty");
  return v;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      PP3D_CHECK(i + 1 < argc, "{} needs a value", a);
      return argv[++i];
    };
    if (a == "--device") o.device = next();
    else if (a == "--gpu") o.gpu = next();
    else if (a == "--dtype") o.dtype = next();
    else if (a == "--sizes") o.sizes = parse_sizes(next());
    else if (a == "--iters") o.iters = std::max(1, std::atoi(next().c_str()));
    else if (a == "--out") o.out = next();
    else PP3D_FAIL("unknown argument '{}' (usage: gemm_calibration_bench [--device cpu|cuda] [--gpu PRESET] "
                   "[--dtype f32|bf16|f16] [--sizes 64,128] [--iters N] [--out FILE])", a);
  }
  PP3D_CHECK(o.device == "cpu" || o.device == "cuda", "--device must be cpu or cuda, got '{}'", o.device);
  const bool cuda = o.device == "cuda";
  if (o.gpu.empty()) o.gpu = cuda ? "h100" : "cpu";
  if (o.dtype.empty()) o.dtype = cuda ? "bf16" : "f32";
  PP3D_CHECK(o.dtype == "f32" || o.dtype == "bf16" || o.dtype == "f16", "--dtype must be f32, bf16 or f16");
  if (o.sizes.empty())
    o.sizes = cuda ? std::vector<int64_t>{256, 512, 1024, 2048, 4096, 8192}
                   : std::vector<int64_t>{64, 128, 256, 512, 1024};
  return o;
}

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

}  // namespace

int main(int argc, char** argv) {
  try {
    const Options o = parse(argc, argv);
    const Device dev = o.device == "cuda" ? Device::cuda(0) : Device::cpu();
    auto be = make_backend(dev);
    const DType dt = o.dtype == "f32" ? DType::F32 : o.dtype == "bf16" ? DType::BF16 : DType::F16;
    const GpuSpec spec = gpu_preset(o.gpu);
    const double peak = spec.peak(dt != DType::F32);
    std::printf("GEMM calibration: %s backend, %s, preset '%s' (peak %.4g TFLOP/s), median of %d runs\n\n",
                be->name().c_str(), o.dtype.c_str(), o.gpu.c_str(), peak * 1e-12, o.iters);
    std::printf("| d (m = n = k) | ms | TFLOP/s | efficiency |\n|---:|---:|---:|---:|\n");
    std::vector<std::pair<int64_t, double>> table;
    uint64_t key = 7;
    for (const int64_t d : o.sizes) {
      auto make = [&](uint64_t k) {
        Tensor h = Tensor::empty({d, d});
        rng_normal_fill(h, k, 0, 0, d, 0.0f, 0.1f);
        const Tensor src = dev.is_cpu() ? h : h.to(dev);
        Tensor c = Tensor::empty({d, d}, dt, dev);
        be->cast(src, c);  // f32 -> the benchmarked dtype, on the device
        return c;
      };
      const Tensor a = make(key++), b = make(key++);
      Tensor c = Tensor::empty({d, d}, dt, dev);
      // Small sizes repeat inside one sample (about 20 MFLOP each) so that timer
      // resolution and thread wake-up do not dominate.
      const int64_t reps = std::max<int64_t>(1, 10'000'000 / (d * d * d));
      auto run = [&] {
        for (int64_t r = 0; r < reps; ++r) be->gemm(false, false, d, d, d, 1.0f, a, b, 0.0f, c);
        be->synchronize();
      };
      run();  // warm-up (also allocates any workspace)
      run();
      std::vector<double> t;
      for (int i = 0; i < o.iters; ++i) {
        const double t0 = now_s();
        run();
        t.push_back(now_s() - t0);
      }
      std::sort(t.begin(), t.end());
      const double s = t[t.size() / 2] / static_cast<double>(reps), flops = 2.0 * static_cast<double>(d) * d * d / s;
      table.emplace_back(d, flops / peak);
      std::printf("| %lld | %.3f | %.4g | %.3f |\n", static_cast<long long>(d), s * 1e3, flops * 1e-12, flops / peak);
    }
    if (!o.out.empty()) {
      std::ofstream f(o.out, std::ios::trunc);
      PP3D_CHECK(f.good(), "cannot write '{}'", o.out);
      f << "# written by gemm_calibration_bench; use with pp3d-plan --gemm-calibration " << o.out << "\n";
      f << "device: \"" << o.gpu << "\"\ndtype: \"" << o.dtype << "\"\n";
      f << "note: \"" << be->name() << " backend, square GEMMs, median of " << o.iters
        << " runs; efficiency = achieved / preset peak\"\n";
      f << "gemm_efficiency:\n";
      for (const auto& [d, e] : table) f << "  " << d << ": " << e << "\n";
      PP3D_CHECK(f.good(), "writing '{}' failed", o.out);
      std::printf("\nwrote %s\n", o.out.c_str());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gemm_calibration_bench: error: %s\n", e.what());
    return 2;
  }
  return 0;
}
