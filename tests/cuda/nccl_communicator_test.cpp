// GPU: NcclCommunicator on a one-rank group (bootstrapped through a
// LocalCommunicator): every collective is the identity (Avg divides by 1), async
// handles complete and order against a compute stream, split keeps the global
// rank, and bad arguments give errors. Multi-rank runs need several GPUs and a
// launcher (tests/dist). Exits 77 without a GPU.
#include <cuda_runtime.h>

#include <cstdio>
#include <vector>

#include "cuda_test_util.h"
#include "pp3d/comm/local_communicator.h"
#include "pp3d/comm/nccl_communicator.h"

using namespace pp3d;
using namespace pp3d::cudatest;

int main() {
  if (skip_without_gpu()) return 77;
  LocalCommunicator boot("world", 0);
  auto nccl = NcclCommunicator::create(boot, 0, "world");
  if (nccl->rank() != 0 || nccl->size() != 1 || nccl->global_rank(0) != 0) {
    std::printf("FAIL rank/size: %d/%d\n", nccl->rank(), nccl->size());
    ++failures();
  }
  for (DType dt : {DType::F32, DType::BF16, DType::F16, DType::I32}) {
    Tensor h = rand_host({257}, 1, dt == DType::I32 ? DType::F32 : dt, -100.0f, 100.0f);
    if (dt == DType::I32) {
      std::vector<int32_t> v;
      for (float x : h.to_vector()) v.push_back(static_cast<int32_t>(x));
      h = Tensor::from_vector_i32({257}, v);
    }
    const std::string name(dtype_name(dt));
    for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Max}) {
      Tensor d = to_gpu(h);
      nccl->all_reduce(d, op);
      expect_bitwise(d, h, "all_reduce " + std::string(reduce_op_name(op)) + " " + name);
    }
    Tensor d = to_gpu(h), out = Tensor::empty({257}, dt, Device::cuda(0));
    nccl->all_gather(d, out);
    expect_bitwise(out, h, "all_gather " + name);
    nccl->reduce_scatter(d, out);
    expect_bitwise(out, h, "reduce_scatter " + name);
    nccl->broadcast(d, 0);
    expect_bitwise(d, h, "broadcast " + name);
  }
  // Async against a compute stream.
  cudaStream_t s = nullptr;
  cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
  Tensor h = rand_host({1 << 20}, 2), d = to_gpu(h);
  auto handle = nccl->all_reduce_async(d, ReduceOp::Sum, s);
  handle->wait();
  const bool tested = handle->test();
  cudaStreamSynchronize(s);
  expect_bitwise(d, h, "all_reduce_async");
  if (!tested) {
    std::printf("FAIL test() after wait() returned false\n");
    ++failures();
  }
  nccl->barrier();
  auto sub = nccl->split(0, 0, "sub");
  if (!sub || sub->size() != 1 || sub->global_rank(0) != 0 || sub->name() != "sub") {
    std::printf("FAIL split\n");
    ++failures();
  }
  if (nccl->split(-1, 0, "none") != nullptr) {
    std::printf("FAIL split with color -1 should give nullptr\n");
    ++failures();
  }
  bool threw = false;
  try {
    Tensor host = Tensor::zeros({4});
    nccl->all_reduce(host);
  } catch (const Error& e) {
    threw = true;
    std::printf("ok   host tensor rejected: %s\n", e.what());
  }
  if (!threw) {
    std::printf("FAIL all_reduce of a host tensor did not throw\n");
    ++failures();
  }
  cudaStreamDestroy(s);
  return finish();
}
