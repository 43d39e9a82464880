// Collective helpers for double-precision scalars over any Communicator
// (communicators reduce f32/i32 only). Values travel as their raw 64-bit
// patterns (two i32 words, all-gathered) and are added in rank order, so every
// rank gets the same, correctly rounded-per-addition double: reductions are
// deterministic and as exact as a serial double sum. For small payloads
// (losses, squared norms); collective over `c`; same thread-safety as `c`.
#pragma once

#include <vector>

#include "pp3d/comm/communicator.h"

namespace pp3d {

// Every rank's `x`, indexed by rank in `c`.
std::vector<double> all_gather_double(Communicator& c, double x);
// Element-wise sum over the ranks of `c` (added in rank order); every rank
// must pass a vector of the same length.
std::vector<double> all_reduce_sum_doubles(Communicator& c, const std::vector<double>& x);
// Sum over the ranks of `c` (added in rank order).
double all_reduce_sum_double(Communicator& c, double x);
// `x` of rank `root` on every rank.
double broadcast_double(Communicator& c, double x, int root);

}  // namespace pp3d
