// CudnnSdpa (see cuda_sdpa.h): cuDNN frontend SDPA graphs, built once per shape and cached.
#include "backend/cuda/cuda_sdpa.h"

#include <fmt/format.h>

#include <map>
#include <string>

#include "backend/cuda/cuda_check.h"
#include "pp3d/core/error.h"

#ifdef PP3D_HAVE_CUDNN_FRONTEND
#include <dlfcn.h>

#include <cudnn_frontend.h>

namespace fe = cudnn_frontend;

// Built with NV_CUDNN_FRONTEND_USE_DYNAMIC_LOADING (so NVRTC, used only by the frontend's
// experimental Blackwell engines, is dlopened, not linked): the frontend reads cuDNN's
// symbols through this handle, set to the libcudnn pp3d already links (CudnnSdpa's constructor).
namespace cudnn_frontend {
void* cudnn_dlhandle = nullptr;
}
#endif

namespace pp3d::detail {

#ifdef PP3D_HAVE_CUDNN_FRONTEND

namespace {

enum Uid : int64_t { kQ = 1, kK, kV, kO, kStats, kDO, kDQ, kDK, kDV };

fe::DataType_t fe_type(DType t) {
  PP3D_CHECK(t == DType::BF16 || t == DType::F16, "cuDNN SDPA: q/k/v must be bf16 or f16, got {}", dtype_name(t));
  return t == DType::BF16 ? fe::DataType_t::BFLOAT16 : fe::DataType_t::HALF;
}

void check_fe(fe::error_t e, const char* what) {
  PP3D_CHECK(e.is_good(), "cuDNN SDPA: {} failed: {}", what, e.get_message());
}

// [B, H, T, D] view of a [B, T, H, D]-ordered buffer whose tokens are `tok` elements apart.
fe::graph::Tensor_attributes bhtd(const char* name, int64_t uid, const SdpaShape& s, int64_t H, int64_t tok) {
  return fe::graph::Tensor_attributes()
      .set_name(name)
      .set_uid(uid)
      .set_dim({s.B, H, s.T, s.D})
      .set_stride({s.T * tok, s.D, tok, 1});
}

fe::graph::Tensor_attributes stats(const SdpaShape& s) {
  return fe::graph::Tensor_attributes()
      .set_name("stats")
      .set_uid(kStats)
      .set_dim({s.B, s.Hq, s.T, 1})
      .set_stride({s.Hq * s.T, s.T, 1, 1})
      .set_data_type(fe::DataType_t::FLOAT);
}

std::shared_ptr<fe::graph::Graph> new_graph(DType dt) {
  auto g = std::make_shared<fe::graph::Graph>();
  g->set_io_data_type(fe_type(dt))
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  return g;
}

void build(fe::graph::Graph& g, cudnnHandle_t h) {
  check_fe(g.validate(), "validate");
  check_fe(g.build_operation_graph(h), "build_operation_graph");
  check_fe(g.create_execution_plans({fe::HeurMode_t::A}), "create_execution_plans");
  check_fe(g.check_support(h), "check_support (this GPU / cuDNN has no fused kernel for the shape)");
  check_fe(g.build_plans(h), "build_plans");
}

}  // namespace

struct CudnnSdpa::Impl {
  cudaStream_t stream = nullptr;
  cudnnHandle_t handle = nullptr;
  std::map<std::string, std::shared_ptr<fe::graph::Graph>> graphs;
  void* workspace = nullptr;
  int64_t workspace_bytes = 0;

  std::string key(const char* dir, const SdpaShape& s, float scale) const {
    return fmt::format("{}|{},{},{},{},{}|{},{}|{}|{}", dir, s.B, s.T, s.Hq, s.Hkv, s.D, s.q_tok_stride,
                       s.kv_tok_stride, static_cast<int>(s.dtype), scale);
  }

  void run(fe::graph::Graph& g, std::unordered_map<fe::graph::Tensor_attributes::uid_t, void*>& pack) {
    int64_t need = 0;
    check_fe(g.get_workspace_size(need), "get_workspace_size");
    if (need > workspace_bytes) {
      if (workspace) PP3D_CHECK_CUDA(cudaFreeAsync(workspace, stream));
      PP3D_CHECK_CUDA(cudaMallocAsync(&workspace, static_cast<std::size_t>(need), stream));
      workspace_bytes = need;
    }
    check_fe(g.execute(handle, pack, workspace), "execute");
  }
};

CudnnSdpa::CudnnSdpa(cudaStream_t stream, int device) : impl_(std::make_unique<Impl>()) {
  PP3D_CHECK_CUDA(cudaSetDevice(device));
  if (cudnn_frontend::cudnn_dlhandle == nullptr) {
    void* h = dlopen("libcudnn.so.9", RTLD_NOW | RTLD_NOLOAD);
    if (h == nullptr) h = dlopen("libcudnn.so.9", RTLD_NOW | RTLD_GLOBAL);
    PP3D_CHECK(h != nullptr, "cuDNN SDPA: cannot dlopen libcudnn.so.9: {}", dlerror());
    cudnn_frontend::cudnn_dlhandle = h;
  }
  impl_->stream = stream;
  PP3D_CHECK(cudnnCreate(&impl_->handle) == CUDNN_STATUS_SUCCESS, "cuDNN SDPA: cudnnCreate failed");
  PP3D_CHECK(cudnnSetStream(impl_->handle, stream) == CUDNN_STATUS_SUCCESS, "cuDNN SDPA: cudnnSetStream failed");
}

CudnnSdpa::~CudnnSdpa() {
  if (impl_->workspace) cudaFreeAsync(impl_->workspace, impl_->stream);
  if (impl_->handle) cudnnDestroy(impl_->handle);
}

bool CudnnSdpa::available() { return true; }

void CudnnSdpa::forward(const SdpaShape& s, const void* q, const void* k, const void* v, void* out, float* lse,
                        float scale) {
  PP3D_CHECK(s.Hkv > 0 && s.Hq % s.Hkv == 0, "cuDNN SDPA: Hkv {} must divide Hq {}", s.Hkv, s.Hq);
  auto& g = impl_->graphs[impl_->key("fwd", s, scale)];
  if (!g) {
    auto graph = new_graph(s.dtype);
    auto Q = graph->tensor(bhtd("q", kQ, s, s.Hq, s.q_tok_stride));
    auto K = graph->tensor(bhtd("k", kK, s, s.Hkv, s.kv_tok_stride));
    auto V = graph->tensor(bhtd("v", kV, s, s.Hkv, s.kv_tok_stride));
    auto opts = fe::graph::SDPA_attributes()
                    .set_name("sdpa_fwd")
                    .set_generate_stats(true)
                    .set_causal_mask(true)
                    .set_attn_scale(scale);
    auto [O, Stats] = graph->sdpa(Q, K, V, opts);
    O->set_output(true).set_uid(kO).set_dim({s.B, s.Hq, s.T, s.D}).set_stride({s.T * s.Hq * s.D, s.D, s.Hq * s.D, 1});
    Stats->set_output(true).set_uid(kStats).set_data_type(fe::DataType_t::FLOAT);
    build(*graph, impl_->handle);
    g = graph;
  }
  std::unordered_map<fe::graph::Tensor_attributes::uid_t, void*> pack = {
      {kQ, const_cast<void*>(q)}, {kK, const_cast<void*>(k)}, {kV, const_cast<void*>(v)}, {kO, out}, {kStats, lse}};
  impl_->run(*g, pack);
}

void CudnnSdpa::backward(const SdpaShape& s, const void* q, const void* k, const void* v, const void* out,
                         const void* dout, const float* lse, void* dq, void* dk, void* dv, float scale) {
  PP3D_CHECK(s.Hkv > 0 && s.Hq % s.Hkv == 0, "cuDNN SDPA: Hkv {} must divide Hq {}", s.Hkv, s.Hq);
  auto& g = impl_->graphs[impl_->key("bwd", s, scale)];
  if (!g) {
    auto graph = new_graph(s.dtype);
    const int64_t o_tok = s.Hq * s.D;
    auto Q = graph->tensor(bhtd("q", kQ, s, s.Hq, s.q_tok_stride));
    auto K = graph->tensor(bhtd("k", kK, s, s.Hkv, s.kv_tok_stride));
    auto V = graph->tensor(bhtd("v", kV, s, s.Hkv, s.kv_tok_stride));
    auto O = graph->tensor(bhtd("o", kO, s, s.Hq, o_tok));
    auto dO = graph->tensor(bhtd("do", kDO, s, s.Hq, o_tok));
    auto Stats = graph->tensor(stats(s));
    auto opts = fe::graph::SDPA_backward_attributes().set_name("sdpa_bwd").set_causal_mask(true).set_attn_scale(scale);
    auto [dQ, dK, dV] = graph->sdpa_backward(Q, K, V, O, dO, Stats, opts);
    dQ->set_output(true).set_uid(kDQ).set_dim({s.B, s.Hq, s.T, s.D}).set_stride({s.T * s.q_tok_stride, s.D,
                                                                                   s.q_tok_stride, 1});
    dK->set_output(true).set_uid(kDK).set_dim({s.B, s.Hkv, s.T, s.D}).set_stride({s.T * s.kv_tok_stride, s.D,
                                                                                    s.kv_tok_stride, 1});
    dV->set_output(true).set_uid(kDV).set_dim({s.B, s.Hkv, s.T, s.D}).set_stride({s.T * s.kv_tok_stride, s.D,
                                                                                    s.kv_tok_stride, 1});
    build(*graph, impl_->handle);
    g = graph;
  }
  std::unordered_map<fe::graph::Tensor_attributes::uid_t, void*> pack = {
      {kQ, const_cast<void*>(q)},   {kK, const_cast<void*>(k)},     {kV, const_cast<void*>(v)},
      {kO, const_cast<void*>(out)}, {kDO, const_cast<void*>(dout)}, {kStats, const_cast<float*>(lse)},
      {kDQ, dq},                    {kDK, dk},                      {kDV, dv}};
  impl_->run(*g, pack);
}

#else  // no cuDNN frontend in this build

struct CudnnSdpa::Impl {};
CudnnSdpa::CudnnSdpa(cudaStream_t, int) {
  PP3D_FAIL("cuDNN SDPA: this pp3d was built without the cuDNN frontend headers (run tools/setup_deps.sh, "
            "which unpacks the pinned nvidia-cudnn-frontend wheel into .deps/, and reconfigure)");
}
CudnnSdpa::~CudnnSdpa() = default;
bool CudnnSdpa::available() { return false; }
void CudnnSdpa::forward(const SdpaShape&, const void*, const void*, const void*, void*, float*, float) {}
void CudnnSdpa::backward(const SdpaShape&, const void*, const void*, const void*, const void*, const void*,
                         const float*, void*, void*, void*, float) {}

#endif

}  // namespace pp3d::detail
