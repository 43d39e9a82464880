// Reshardable checkpoints (docs/CHECKPOINTS.md): one directory per step,
// `<output>/checkpoint-<step>/` with manifest.json (config, layout, step, RNG /
// data state, loss scaler, an opaque trainer-config object, and for every
// tensor its global shape and the pieces that hold it) plus one raw
// little-endian f32 shard file per writing rank (`rank-00003.bin`).
//
// Tensors are described layout-independently: a CheckpointTensor is a part of
// one GLOBAL tensor — the rank's local shard (Parameter::shard, fused segments
// included) or a flat element range of it (ZeRO-owned optimizer state). Every
// rank writes the parts it is the designated writer of (no duplicates), and a
// loader in ANY layout reads, for each of its parts, exactly the overlapping
// slices of whatever pieces exist (checksums verified).
//
// Atomicity: ranks write into `checkpoint-<step>.tmp-<nonce>/`; rank 0 writes
// the manifest last, fsyncs, renames the directory into place and updates the
// `latest` pointer file (write + rename). A save that fails on any rank throws
// on every rank and leaves earlier checkpoints untouched. All ranks must see
// the same file system (one machine or a shared FS).
//
// save_checkpoint is collective over the given communicator; loading is
// rank-local (no communication). The tensors' storage is owned by the model /
// optimizer; CheckpointTensor only holds views. Not thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "pp3d/comm/communicator.h"
#include "pp3d/model/gpt_config.h"
#include "pp3d/core/parameter.h"
#include "pp3d/train/loss_scaler.h"

namespace pp3d {

class AdamW;
class ZeroOptimizer;

// One part of a global tensor held by this rank.
struct CheckpointTensor {
  std::string name;    // "h.0.mlp.c_fc.weight", "<param>.exp_avg", "<param>.exp_avg_sq", "<param>.master"
  Shape global_shape;  // of the full tensor
  ShardSpec shard;     // how the rank's local tensor is cut from the global one
  // Element range [begin, end) of the LOCAL tensor (row-major) that `data`
  // holds; end < 0 means the whole local tensor.
  int64_t begin = 0, end = -1;
  Tensor data;         // numel == end - begin; any float dtype, any device; a view
  bool save = true;    // this rank writes it (false for TP / DP / tied duplicates)
  bool load = true;    // filled by load_checkpoint
  // Loaded from this tensor when the checkpoint lacks `name` (e.g. an f32
  // master copy from the parameter values of a checkpoint saved without one).
  std::string fallback;
};

// Where the tensors of a training run live. Parameters only (no optimizer):
// `writer` marks the rank that saves DP-replicated values (dp_rank == 0).
// TP-replicated tensors and the tied wte copy of a head stage are never saved
// (Parameter::counted_in_norm == false).
std::vector<CheckpointTensor> parameter_checkpoint_tensors(const std::vector<Parameter*>& params, bool writer = true);
// Parameters + AdamW state ("<p>.exp_avg", "<p>.exp_avg_sq", "<p>.master" for
// 16-bit parameters) of a serial / TP / PP / plain-DP optimizer; writer as above.
std::vector<CheckpointTensor> checkpoint_tensors(AdamW& opt, bool writer = true);
// Parameters + the owned optimizer state of a ZeroOptimizer (stage 0: written
// by dp_rank 0; stages 1-3: every DP rank writes its owned ranges, values
// included; stage 3 loads into the owned parameter shards).
std::vector<CheckpointTensor> checkpoint_tensors(ZeroOptimizer& zero);

struct CheckpointLayout {
  int tp = 1, pp = 1, dp = 1;
  int zero_stage = 0;
  int virtual_stages = 1;
  std::string split;  // PipelineConfig::split ("" = balanced)
};

// Everything in the manifest except the tensor pieces.
struct CheckpointInfo {
  int64_t step = 0;            // optimizer steps completed = the step a resumed run executes next
  uint64_t seed = 0;           // parameter init / data sampling seed
  int64_t optimizer_step = 0;  // AdamW / ZeroOptimizer step_count() (bias correction)
  GptConfig model;
  CheckpointLayout layout;
  std::optional<DynamicLossScaler::State> loss_scaler;
  std::string trainer_config_json = "{}";  // opaque JSON object (e.g. the TrainConfig)
  std::string data_state_json = "{}";      // opaque JSON object (data loader position beyond (seed, step))
  int world_size = 1;                      // of the saving run (filled by save_checkpoint)
};

struct CheckpointSaveOptions {
  int keep_last = 0;  // > 0: delete all but the newest keep_last checkpoint-<step> directories
  bool update_latest = true;
  // Test hook called on every rank at "shard_written" (after the rank's
  // shard file is fsynced) and, on rank 0, "before_manifest" and
  // "before_rename"; throwing from it simulates a failure there.
  std::function<void(const std::string& phase)> fault_hook;
};

// "<output_dir>/checkpoint-<step>"
std::string checkpoint_dir_name(const std::string& output_dir, int64_t step);

// Saves `tensors` (each rank its own) as `<output_dir>/checkpoint-<info.step>`
// and returns that path. Collective over `comm` (normally the world); rank 0
// writes the manifest. Creates output_dir when missing. An existing
// checkpoint of the same step is replaced. On any rank's failure every rank
// throws pp3d::Error (naming the failing rank and reason) and nothing but the
// temporary directory (removed) was written.
std::string save_checkpoint(const std::string& output_dir, const CheckpointInfo& info,
                            const std::vector<CheckpointTensor>& tensors, Communicator& comm,
                            const CheckpointSaveOptions& options = {});

// Resolves a --resume-from value: a checkpoint directory (holding
// manifest.json); "latest" (the `latest` pointer of output_dir); or a
// directory holding a `latest` pointer. Throws when nothing is found.
std::string resolve_checkpoint(const std::string& spec, const std::string& output_dir = "");

// Reads and checks the manifest only.
CheckpointInfo read_checkpoint_info(const std::string& dir);

struct CheckpointLoadOptions {
  // Zero-fill optimizer-state tensors ("*.exp_avg", "*.exp_avg_sq") that the
  // checkpoint does not hold (e.g. a weights-only checkpoint) instead of failing.
  bool allow_missing_optimizer_state = false;
};

// Fills every tensor with load == true from the checkpoint in `dir` (any
// layout), verifying the checksum of every piece it reads. Throws pp3d::Error
// on a missing directory / manifest, a truncated or corrupt shard file (naming
// file and tensor), a global shape that differs from the checkpoint's (naming
// the tensor and both shapes) and a tensor the checkpoint lacks. Rank-local.
// Returns the manifest's info: the caller restores optimizer_step
// (set_step_count), the loss scaler and its step / data position.
CheckpointInfo load_checkpoint(const std::string& dir, const std::vector<CheckpointTensor>& tensors,
                               const CheckpointLoadOptions& options = {});

}  // namespace pp3d
