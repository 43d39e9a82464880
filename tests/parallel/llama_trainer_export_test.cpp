// Run under mpirun -n 4: a Llama Trainer at tp 2 x pp 2 writes its step-0
// weights with Trainer::export_weights (what --export-safetensors runs after
// the last step) and the serial Trainer (LocalCommunicator on rank 0) writes
// its own; model.safetensors and config.json must be equal byte for byte
// (initialisation is a pure function of (seed, name, global index) and the
// gather over TP and PP only moves values). Untied and tied embeddings (the
// head stage holds a copy of embed_tokens, which must be left out); grouped-
// query attention (4 heads, 2 kv heads: k / v split by kv head over TP).
// The export must also load back (load_llama_hf_config) with the run's shape.
// Exits non-zero if any rank failed.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "parallel/tp_test_util.h"
#include "pp3d/comm/bootstrap.h"
#include "pp3d/comm/collectives_util.h"
#include "pp3d/comm/local_communicator.h"
#include "pp3d/model/llama_hf.h"
#include "pp3d/train/trainer.h"

using namespace pp3d;
namespace fs = std::filesystem;

namespace {

std::string bytes_of(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TrainConfig tiny_llama(bool tied) {
  TrainConfig c;
  c.arch = "llama";
  c.num_layers = 4;
  c.hidden_size = 64;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.tied_embeddings = tied;
  c.seq_len = 16;
  c.micro_batch_size = 2;
  c.global_batch_size = 4;
  c.max_steps = 1;
  c.warmup_steps = 0;
  c.quiet = true;
  return c;
}

}  // namespace

int main() {
  auto world = init_world();
  const int rank = world->rank();
  PP3D_CHECK(world->size() == 4, "llama_trainer_export_test needs 4 ranks, got {}", world->size());
  const double pid0 = broadcast_double(*world, static_cast<double>(getpid()), 0);
  const fs::path dir = fs::temp_directory_path() / fmt::format("pp3d_llama_export_{}", pid0);
  for (const bool tied : {false, true}) {
    const std::string what = tied ? "tied" : "untied";
    const fs::path serial = dir / (what + "_serial"), parallel = dir / (what + "_tp2_pp2");
    try {
      if (rank == 0) {
        Trainer t(tiny_llama(tied), std::make_shared<LocalCommunicator>("serial", rank));
        t.export_weights(serial.string());
      }
      TrainConfig c = tiny_llama(tied);
      c.tp = 2;
      c.pp = 2;
      Trainer t(c, world);
      TP_EXPECT(t.layout().tp == 2 && t.layout().pp == 2, "{}: layout {}", what, t.layout().str());
      t.export_weights(parallel.string());
      world->barrier();
      if (rank == 0) {
        for (const char* file : {"model.safetensors", "config.json"}) {
          const std::string a = bytes_of(parallel / file), b = bytes_of(serial / file);
          TP_EXPECT(!b.empty(), "{}: the serial run wrote no {}", what, file);
          TP_EXPECT(a == b, "{}: {} of tp 2 x pp 2 ({} bytes) differs from the serial export ({} bytes)", what, file,
                    a.size(), b.size());
        }
        const LlamaConfig back = load_llama_hf_config(parallel.string());
        TP_EXPECT(back.num_layers == 4 && back.num_kv_heads == 2 && back.tied_embeddings == tied &&
                      back.vocab_size == t.model_config().vocab_size,
                  "{}: the export's config.json reads back as L{} kv {} tied {} vocab {}", what, back.num_layers,
                  back.num_kv_heads, back.tied_embeddings, back.vocab_size);
        std::printf("llama %s: tp 2 x pp 2 export == serial export (%zu bytes of model.safetensors)\n",
                    what.c_str(), static_cast<std::size_t>(fs::file_size(serial / "model.safetensors")));
      }
    } catch (const std::exception& e) {
      TP_EXPECT(false, "{}: {}", what, e.what());
      break;
    }
  }
  world->barrier();
  if (rank == 0) fs::remove_all(dir);
  const int rc = pp3d::tptest::finish(*world, "llama_trainer_export_test");
  finalize_world();
  return rc;
}
