// TrainConfig::resolve_layout / validate(world): the derived parallel layout
// (dp, micro-batches) and the messages for layouts that cannot work, each
// naming the flags (checked before anything is allocated).
#include <string>

#include <catch2/catch.hpp>

#include "pp3d/core/error.h"
#include "pp3d/train/trainer.h"

using namespace pp3d;

namespace {

std::string error_of(const TrainConfig& c, int world) {
  try {
    c.validate(world);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TrainConfig base() {
  TrainConfig c;
  c.num_layers = 4;
  c.hidden_size = 64;
  c.num_heads = 4;
  c.seq_len = 16;
  c.micro_batch_size = 2;
  c.global_batch_size = 8;
  c.max_steps = 10;
  c.warmup_steps = 0;
  return c;
}

}  // namespace

TEST_CASE("TrainConfig: the parallel layout is derived from the world size", "[trainer][layout]") {
  TrainConfig c = base();
  c.tp = 2;
  c.pp = 2;
  ParallelLayout l = c.resolve_layout(8);
  CHECK(l.dp == 2);
  CHECK(l.global_batch == 8);
  CHECK(l.micro_batch == 2);
  CHECK(l.micro_batches == 2);  // 8 rows = dp 2 x 2 micro-batches x 2 rows
  // --micro-batches with a global batch derives the micro-batch rows.
  c.micro_batches = 4;
  l = c.resolve_layout(4);
  CHECK(l.dp == 1);
  CHECK(l.micro_batch == 2);
  CHECK(l.micro_batches == 4);
  // Without a global batch: rows x dp x micro-batches.
  c.global_batch_size = 0;
  c.micro_batches = 3;
  l = c.resolve_layout(8);
  CHECK(l.global_batch == 2 * 2 * 3);
  // Serial defaults are unchanged: global 0 = one micro-batch.
  TrainConfig s = base();
  s.global_batch_size = 0;
  CHECK(s.resolve_layout(1).global_batch == 2);
  CHECK(s.grad_accum_steps() == 1);
}

TEST_CASE("TrainConfig: impossible layouts are rejected naming the flags", "[trainer][layout]") {
  TrainConfig c = base();
  c.tp = 2;
  c.pp = 2;
  CHECK_THAT(error_of(c, 6), Catch::Contains("world size 6 (ranks launched) is not divisible by --tp 2 x --pp 2"));
  c.num_heads = 6;
  c.hidden_size = 48;
  c.tp = 4;
  c.pp = 1;
  CHECK_THAT(error_of(c, 4), Catch::Contains("--num-heads 6 is not divisible by --tp 4"));
  c = base();
  c.pp = 4;
  c.schedule = "interleaved";
  c.virtual_stages = 2;
  c.micro_batch_size = 1;
  CHECK_THAT(error_of(c, 4), Catch::Contains("--num-layers 4 is smaller than --pp 4 x --virtual-stages 2 = 8"));
  c.num_layers = 8;
  CHECK(error_of(c, 4) == "(no error)");
  c.micro_batch_size = 4;  // 2 micro-batches: not a multiple of pp
  CHECK_THAT(error_of(c, 4), Catch::Contains("micro-batches per step (2) to be a multiple of --pp 4"));
  c = base();
  c.micro_batch_size = 3;
  CHECK_THAT(error_of(c, 2),
             Catch::Contains("--global-batch-size 8 is not a multiple of data-parallel size 2 x --batch-size 3"));
  c = base();
  c.micro_batches = 3;
  CHECK_THAT(error_of(c, 2), Catch::Contains("--global-batch-size 8 is not divisible by data-parallel size 2 x "
                                             "--micro-batches 3"));
  c = base();
  c.tp = 4;
  c.seq_len = 18;
  c.sequence_parallel = true;
  CHECK_THAT(error_of(c, 4), Catch::Contains("--sequence-parallel needs --seq-len 18 divisible by --tp 4"));
  c = base();
  c.pp = 2;
  c.pipeline_split = "1,2";
  CHECK_THAT(error_of(c, 2), Catch::Contains("--pipeline-split '1,2'") && Catch::Contains("sums to 3"));
  c = base();
  c.virtual_stages = 2;
  CHECK_THAT(error_of(c, 1), Catch::Contains("--virtual-stages 2 needs --schedule interleaved"));
  c = base();
  c.zero_stage = 4;
  CHECK_THAT(error_of(c, 1), Catch::Contains("--zero-stage must be 0, 1, 2 or 3, got 4"));
  c = base();
  c.schedule = "zigzag";
  CHECK_THAT(error_of(c, 1), Catch::Contains("--schedule 'zigzag' is not one of gpipe, 1f1b, interleaved"));
}

TEST_CASE("TrainConfig: interleaved derives pp micro-batches per step when the batch is not given",
          "[trainer][layout]") {
  TrainConfig c = base();
  c.global_batch_size = 0;  // neither --global-batch-size nor --micro-batches given
  c.num_layers = 8;
  c.tp = 2;
  c.pp = 4;
  c.schedule = "interleaved";
  c.virtual_stages = 2;
  const ParallelLayout l = c.resolve_layout(8);
  CHECK(l.micro_batches == 4);
  CHECK(l.global_batch == 4 * c.micro_batch_size);
  CHECK(error_of(c, 8) == "(no error)");
  c.micro_batches = 2;  // given by the user: still rejected
  CHECK_THAT(error_of(c, 8), Catch::Contains("micro-batches per step (2) to be a multiple of --pp 4"));
  c.micro_batches = 0;
  c.schedule = "1f1b";
  c.virtual_stages = 1;
  CHECK(c.resolve_layout(8).micro_batches == 1);  // other schedules: one micro-batch, as before
}
