// Internals of the checkpoint format (lib/train/checkpoint_*.cpp): slabs and
// pieces, the local-shard decomposition, overlap copies, CRC-32, manifest JSON
// and small file-system helpers.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "pp3d/train/checkpoint.h"

namespace pp3d::detail {

inline constexpr int kCheckpointFormatVersion = 1;
inline constexpr const char* kCheckpointFormatName = "pp3d-checkpoint";

// CRC-32 (IEEE 802.3, zlib's crc32) of n bytes, continuing from `crc`.
uint32_t crc32(const void* data, std::size_t n, uint32_t crc = 0);

// A box of a global tensor: per dim [begin, end). 0-d tensors use one dim of extent 1.
struct Slab {
  std::vector<int64_t> begin, end;
  int64_t numel() const;
  std::string str() const;  // "[0:32, 0:64]"
};

// A run of a LOCAL tensor: the elements of `slab` (global coordinates) in
// slab row-major order occupy local flat indices [local_start, local_start + slab.numel()).
struct LocalRun {
  Slab slab;
  int64_t local_start = 0;
};

// The local tensor described by (global, shard) as runs covering it in order.
std::vector<LocalRun> local_runs(const Shape& global, const ShardSpec& shard);

// One stored piece: elements [flat_begin, flat_end) of `slab` (row-major),
// raw little-endian f32 at byte `offset` of `file` (relative to the checkpoint dir).
struct Piece {
  std::string file;
  Slab slab;
  int64_t flat_begin = 0, flat_end = 0;
  uint64_t offset = 0, bytes = 0;
  uint32_t crc = 0;
  int64_t numel() const { return flat_end - flat_begin; }
};

// A part of a global tensor this rank wants: elements [flat_begin, flat_end)
// of `slab` (row-major), going to dst[0 .. flat_end - flat_begin).
struct Want {
  Slab slab;
  int64_t flat_begin = 0, flat_end = 0;
  float* dst = nullptr;
};

// The (slab, flat range) parts of a CheckpointTensor and where they sit in
// its data: parts[i] covers data elements [data_pos[i], data_pos[i] + numel).
struct Part {
  Slab slab;
  int64_t flat_begin = 0, flat_end = 0;
  int64_t data_pos = 0;
};
std::vector<Part> tensor_parts(const CheckpointTensor& t);

// Copies the elements both `want` and piece `p` hold from `src` (the piece's
// f32 values, p.numel() of them) into want.dst; returns the number copied.
// src == nullptr: only counts.
int64_t copy_overlap(const Want& want, const Piece& p, const float* src);

// Manifest JSON.
nlohmann::json info_to_json(const CheckpointInfo& info);
CheckpointInfo info_from_json(const nlohmann::json& j, const std::string& where);
nlohmann::json piece_to_json(const Piece& p);
Piece piece_from_json(const nlohmann::json& j, const std::string& where);
std::string dtype_of_manifest();
// Parses and checks <dir>/manifest.json (format, version, tensors present).
nlohmann::json read_manifest(const std::string& dir);

// File helpers (throw pp3d::Error naming the path).
void fsync_path(const std::string& path, bool directory);
void write_file_atomic(const std::string& path, const std::string& contents);  // tmp + fsync + rename
std::string read_text_file(const std::string& path);

}  // namespace pp3d::detail
