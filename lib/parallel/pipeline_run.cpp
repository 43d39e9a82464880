// PipelineStage::run_step: executes this rank's plan (compute actions and
// batched p2p transfers), frees activations as soon as they are consumed,
// broadcasts the loss and records timing events / bubble statistics.
#include <algorithm>
#include <cstring>
#include <map>
#include <utility>

#include "pp3d/parallel/pipeline.h"

namespace pp3d {

namespace {

using Key = std::pair<int, int>;  // (chunk, micro-batch)

Tensor take(std::map<Key, Tensor>& m, Key k, const char* what) {
  auto it = m.find(k);
  PP3D_CHECK(it != m.end(), "pipeline executor bug: no {} for chunk {} micro-batch {}", what, k.first, k.second);
  Tensor t = std::move(it->second);
  m.erase(it);
  return t;
}

char action_letter(PipeAction::Kind k) {
  switch (k) {
    case PipeAction::Forward: return 'F';
    case PipeAction::BackwardWeight: return 'W';
    default: return 'B';  // the whole backward, or its input part
  }
}

PipelineEvent::Kind event_kind(PipeAction::Kind k) {
  switch (k) {
    case PipeAction::Forward: return PipelineEvent::Forward;
    case PipeAction::BackwardWeight: return PipelineEvent::Weight;
    default: return PipelineEvent::Backward;
  }
}

std::string action_name(const PipeAction& a, int v) {
  std::string s = fmt::format("{}{}", action_letter(a.kind), a.mb);
  if (v > 1) s += fmt::format(".c{}", a.chunk);
  return s;
}

std::string comm_name(const std::vector<PipeTransfer>& ts) {
  std::string s;
  for (const auto& t : ts) {
    if (!s.empty()) s += ' ';
    s += fmt::format("{} {}{}", t.send ? "send" : "recv", t.kind == PipeTransfer::Activation ? 'A' : 'G', t.mb);
  }
  return s;
}

void check_micro_batch(const Tensor& t, int64_t B, const char* what, std::size_t i) {
  PP3D_CHECK(t.defined(), "pipeline run_step: micro-batch {} has no {} (needed on this stage)", i, what);
  PP3D_CHECK(t.dim() >= 1 && t.size(0) == B,
             "pipeline run_step: micro-batch {} {} must have micro_batch_size {} rows, got {}", i, what, B, t.str());
}

}  // namespace

StepResult PipelineStage::run_step(const std::vector<MicroBatch>& mbs, float loss_weight) {
  const int m = static_cast<int>(mbs.size());
  const int v = num_chunks();
  const int S = split_.num_stages();
  const int64_t B = pipe_.micro_batch_size;
  for (std::size_t i = 0; i < mbs.size(); ++i) {
    if (has_embedding()) check_micro_batch(mbs[i].ids, B, "ids (first-stage input)", i);
    if (has_head()) check_micro_batch(mbs[i].targets, B, "targets", i);
  }
  const std::vector<PipeInstr>& instrs = plan(m);
  Backend& be = chunks_.front()->backend();

  StepResult res;
  const bool timing = pipe_.timing;
  if (timing && pp_size_ > 1) pp_group_->barrier();
  const double t0 = timing ? now_us() : 0.0;

  std::vector<ActivationCache> caches(static_cast<std::size_t>(v * m));
  std::map<Key, Tensor> act_in, act_out, grad_in, grad_out;
  std::vector<double> losses(static_cast<std::size_t>(m), 0.0);

  for (const PipeInstr& in : instrs) {
    const double ts = timing ? now_us() : 0.0;
    PipelineEvent ev;
    if (in.is_compute) {
      const PipeAction& a = in.action;
      const int s = split_.stage_of(pp_rank_, a.chunk);
      const Key k{a.chunk, a.mb};
      Module& g = module(a.chunk);
      ActivationCache& cache = caches[static_cast<std::size_t>(a.chunk * m + a.mb)];
      const MicroBatch& mb = mbs[static_cast<std::size_t>(a.mb)];
      if (a.kind == PipeAction::Forward) {
        const Tensor input = s == 0 ? mb.ids : take(act_in, k, "received activation");
        const Tensor out = module_forward(g, input, s == S - 1 ? mb.targets : Tensor(), loss_weight, cache);
        if (s == S - 1) {
          losses[static_cast<std::size_t>(a.mb)] = cache.loss();
        } else {
          act_out[k] = out;
        }
      } else if (a.kind == PipeAction::BackwardWeight) {
        PP3D_CHECK(cache.weight_pending(), "pipeline executor bug: weight part of chunk {} micro-batch {} without "
                   "its input part", a.chunk, a.mb);
        module_backward_weight(g, cache);  // frees what the input part kept for it
      } else {
        const Tensor dout = s == S - 1 ? Tensor() : take(grad_in, k, "received gradient");
        const BackwardPart part = a.kind == PipeAction::BackwardInput ? BackwardPart::Input : BackwardPart::Full;
        Tensor din = module_backward(g, dout, cache, part);
        if (s > 0) grad_out[k] = std::move(din);
      }
      ev.kind = event_kind(a.kind);
      ev.chunk = a.chunk;
      ev.mb = a.mb;
      if (timing) ev.name = action_name(a, v);
    } else {
      std::vector<P2POp> ops;
      ops.reserve(in.transfers.size());
      for (const PipeTransfer& t : in.transfers) {
        const Key k{t.chunk, t.mb};
        const bool act = t.kind == PipeTransfer::Activation;
        if (t.send) {
          ops.push_back({P2POp::Send, take(act ? act_out : grad_out, k, "tensor to send"), t.peer, t.tag});
        } else {
          // Activations (the input of the receiving chunk) in the module's activation dtype
          // (16-bit with GPT's --activation-dtype param); gradients (of its output) f32.
          Module& rc = module(t.chunk);
          const DType dt = act ? rc.activation_dtype() : DType::F32;
          const Shape shape = act ? rc.input_shape(B, seq_) : rc.output_shape(B, seq_);
          Tensor buf = Tensor::empty(shape, dt, be.device(), MemCategory::Activations);
          auto& dst = act ? act_in : grad_in;
          PP3D_CHECK(dst.find(k) == dst.end(), "pipeline executor bug: duplicate receive");
          dst[k] = buf;
          ops.push_back({P2POp::Recv, buf, t.peer, t.tag});
        }
      }
      be.synchronize();  // the sent tensors must be complete before the communicator reads them
      pp_group_->batch_send_recv(ops);
      ops.clear();  // drops this stage's last reference to the sent tensors
      ev.kind = PipelineEvent::Comm;
      if (timing) ev.name = comm_name(in.transfers);
    }
    if (timing) {
      ev.start_us = ts;
      ev.end_us = now_us();
      if (ev.is_compute()) res.compute_us += ev.end_us - ev.start_us;
      res.events.push_back(std::move(ev));
    }
  }
  PP3D_CHECK(act_in.empty() && act_out.empty() && grad_in.empty() && grad_out.empty(),
             "pipeline executor bug: tensors left over after the step");
  for (auto& c : caches)
    PP3D_CHECK(!c.active() && !c.weight_pending(),
               "pipeline executor bug: a micro-batch was not backwarded (or its weight part not run)");

  // Loss: summed in micro-batch order on the head stage, broadcast as raw bytes (exact double).
  double loss = 0;
  for (double l : losses) loss += l;
  if (pp_size_ > 1) {
    std::vector<int32_t> w(2);
    std::memcpy(w.data(), &loss, sizeof loss);
    Tensor t = Tensor::from_vector_i32({2}, w);
    pp_group_->broadcast(t, pp_size_ - 1);
    std::memcpy(&loss, t.data<int32_t>(), sizeof loss);
  }
  res.loss = loss;

  if (timing) {
    if (pp_size_ > 1) pp_group_->barrier();
    res.step_us = now_us() - t0;
    const double idle = std::max(0.0, res.step_us - res.compute_us);
    res.idle_fraction = res.step_us > 0 ? idle / res.step_us : 0.0;
    res.bubble_ratio = res.compute_us > 0 ? idle / res.compute_us : 0.0;
  }
  res.theoretical_bubble = theoretical_bubble(pipe_.schedule, pp_size_, v, m);

  if (pipe_.reduce_tied_grads) {
    const double ts = timing ? now_us() : 0.0;
    reduce_tied_grads();
    if (timing && !shared_copies().empty() && pp_size_ > 1)
      res.events.push_back({PipelineEvent::Reduce, "tied-allreduce", -1, -1, ts, now_us()});
  }
  return res;
}

}  // namespace pp3d
