// Resident memory per rank vs dataset size with memory-mapped token shards.
//
//   data_rss_bench generate DIR MB      writes DIR/gen_train_*.bin (uint16 ids < 50257,
//                                       100M-token shards) until MB megabytes, plus a
//                                       1M-token val shard; kept if already there
//   mpirun -n R data_rss_bench run SPEC [--steps 3]
//                                       trains a small GPT (L2 C128 T256, global batch
//                                       16, vocab 50257) on SPEC for `steps` steps and
//                                       prints one line per rank: peak RSS (ru_maxrss),
//                                       file-backed RSS at the end, time to first step
// benchmarks/data/run_data_rss.sh runs both for several sizes and the embedded corpus
// (the peer: same model, 2 MB of data) and prints the table with ratios.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "pp3d/comm/bootstrap.h"
#include "pp3d/train/data.h"
#include "pp3d/train/trainer.h"

using namespace pp3d;
namespace fs = std::filesystem;

namespace {

int generate(const std::string& dir, double mb) {
  const auto total = static_cast<int64_t>(mb * 1e6 / 2);
  const int64_t per_shard = 100'000'000;
  fs::create_directories(dir);
  uint64_t state = 0x9E3779B97F4A7C15ull;
  auto next = [&] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<uint32_t>((state >> 33) % 50257);
  };
  std::vector<uint32_t> buf;
  int64_t written = 0;
  for (int shard = 0; written < total; ++shard) {
    const int64_t n = std::min(per_shard, total - written);
    const fs::path p = fs::path(dir) / fmt::format("gen_train_{:06d}.bin", shard);
    if (!fs::exists(p) || fs::file_size(p) != static_cast<uintmax_t>(1024 + 2 * n)) {
      buf.resize(static_cast<std::size_t>(n));
      for (auto& t : buf) t = next();
      write_token_shard(p.string(), buf);
    }
    written += n;
  }
  const fs::path val = fs::path(dir) / "gen_val_000000.bin";
  if (!fs::exists(val)) {
    buf.resize(1'000'000);
    for (auto& t : buf) t = next();
    write_token_shard(val.string(), buf);
  }
  std::printf("generated %s: %.3f GB of train shards\n", dir.c_str(), 2.0 * static_cast<double>(written) * 1e-9);
  return 0;
}

// kB of a /proc/self/status field ("RssFile:", "VmRSS:").
long status_kb(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field, 0) == 0) return std::stol(line.substr(field.size()));
  }
  return -1;
}

int run(const std::string& spec, int steps) {
  const auto t0 = std::chrono::steady_clock::now();
  auto world = init_world();
  TrainConfig c;
  c.num_layers = 2;
  c.hidden_size = 128;
  c.num_heads = 4;
  c.seq_len = 256;
  c.vocab_size = 50257;
  c.global_batch_size = 16;
  c.micro_batch_size = 16 / world->size();
  c.max_steps = steps;
  c.warmup_steps = 0;
  c.quiet = true;
  c.progress = false;
  c.data = spec;
  double first = 0.0;
  {
    Trainer t(c, world);
    for (int s = 0; s < steps; ++s) {
      t.train_step();
      if (s == 0) first = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    std::printf("RESULT rank=%d peak_rss_mb=%.1f rss_file_mb=%.1f first_step_s=%.3f\n", world->rank(),
                static_cast<double>(ru.ru_maxrss) / 1024.0, static_cast<double>(status_kb("RssFile:")) / 1024.0,
                first);
    std::fflush(stdout);
  }
  finalize_world();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> a(argv + 1, argv + argc);
  try {
    if (a.size() == 3 && a[0] == "generate") return generate(a[1], std::stod(a[2]));
    if ((a.size() == 2 || (a.size() == 4 && a[2] == "--steps")) && a[0] == "run")
      return run(a[1], a.size() == 4 ? std::stoi(a[3]) : 3);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "data_rss_bench: error: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "usage: data_rss_bench generate DIR MB | data_rss_bench run SPEC [--steps N]\n");
  return 2;
}
