// MpiCommunicator point-to-point: send, recv and batched send/recv, each with
// the deadline of mpi_wait_all and a check that the received size matches.
#include <climits>

#include "comm/comm_util.h"
#include "comm/mpi_detail.h"

namespace pp3d {

using detail::check_mpi;
using detail::MpiOpInfo;

namespace {

struct Posted {
  Tensor user;
  Tensor host;
  bool is_recv;
  int peer;
  int tag;
};

void post(MpiCommunicator::Impl& im, const Communicator& c, const Tensor& t, bool is_recv, int peer, int tag,
          std::vector<MPI_Request>& reqs, std::vector<Posted>& posted, std::vector<Tensor>& keep) {
  const char* op = is_recv ? "recv" : "send";
  detail::check_comm_tensor(t, op, c);
  detail::check_peer(peer, op, c);
  PP3D_CHECK(tag >= 0 && tag <= im.tag_ub, "{} on group '{}': tag {} out of range [0, {}]", op, im.name, tag,
             im.tag_ub);
  PP3D_CHECK(t.numel() <= INT_MAX, "{} on group '{}': {} has more than INT_MAX elements", op, im.name, t.str());
  Tensor h = detail::stage_bytes(t, !is_recv);
  MPI_Request r = MPI_REQUEST_NULL;
  const int n = static_cast<int>(t.numel());
  if (is_recv) {
    check_mpi(MPI_Irecv(h.raw(), n, detail::mpi_dtype(t.dtype()), peer, tag, im.comm, &r), "MPI_Irecv", im, op);
  } else {
    check_mpi(MPI_Isend(h.raw(), n, detail::mpi_dtype(t.dtype()), peer, tag, im.comm, &r), "MPI_Isend", im, op);
  }
  reqs.push_back(r);
  posted.push_back({t, h, is_recv, peer, tag});
  keep.push_back(t);
  keep.push_back(h);
}

void finish(MpiCommunicator::Impl& im, std::vector<Posted>& posted, std::vector<MPI_Status>& st) {
  for (std::size_t i = 0; i < posted.size(); ++i) {
    Posted& p = posted[i];
    if (!p.is_recv) continue;
    int got = 0;
    MPI_Get_count(&st[i], detail::mpi_dtype(p.user.dtype()), &got);
    PP3D_CHECK(got == p.user.numel(),
               "recv on group '{}' from global rank {} (tag {}): received {} elements, expected {} ({}); sender "
               "and receiver disagree on the shape",
               im.name, im.global[static_cast<std::size_t>(p.peer)], p.tag, got, p.user.numel(), p.user.str());
    detail::unstage_bytes(p.host, p.user);
  }
}

std::string describe(const std::vector<Posted>& posted) {
  std::string s;
  for (const auto& p : posted) {
    if (!s.empty()) s += ", ";
    s += fmt::format("{} {} peer {} tag {}", p.is_recv ? "recv" : "send", p.user.str(), p.peer, p.tag);
  }
  return s;
}

void run(MpiCommunicator::Impl& im, const char* op, std::vector<MPI_Request>& reqs, std::vector<Posted>& posted,
         const std::vector<Tensor>& keep) {
  std::vector<int> peers;
  for (const auto& p : posted) peers.push_back(p.peer);
  std::vector<MPI_Status> st;
  detail::mpi_wait_all(reqs, &st, im, MpiOpInfo{op, describe(posted), peers, false}, keep);
  finish(im, posted, st);
}

}  // namespace

void MpiCommunicator::send(const Tensor& t, int peer, int tag) {
  impl_->check_usable("send");
  std::vector<MPI_Request> reqs;
  std::vector<Posted> posted;
  std::vector<Tensor> keep;
  post(*impl_, *this, t, false, peer, tag, reqs, posted, keep);
  run(*impl_, "send", reqs, posted, keep);
}

void MpiCommunicator::recv(Tensor& t, int peer, int tag) {
  impl_->check_usable("recv");
  std::vector<MPI_Request> reqs;
  std::vector<Posted> posted;
  std::vector<Tensor> keep;
  post(*impl_, *this, t, true, peer, tag, reqs, posted, keep);
  run(*impl_, "recv", reqs, posted, keep);
}

void MpiCommunicator::batch_send_recv(std::vector<P2POp>& ops) {
  impl_->check_usable("batch_send_recv");
  std::vector<MPI_Request> reqs;
  std::vector<Posted> posted;
  std::vector<Tensor> keep;
  // Validate everything before posting anything (no half-posted batch).
  for (auto& o : ops) {
    const char* op = o.kind == P2POp::Recv ? "recv" : "send";
    detail::check_comm_tensor(o.tensor, op, *this);
    detail::check_peer(o.peer, op, *this);
    PP3D_CHECK(o.tag >= 0 && o.tag <= impl_->tag_ub, "batch_send_recv on group '{}': tag {} out of range [0, {}]",
               impl_->name, o.tag, impl_->tag_ub);
  }
  // Receives first, so every send finds its receive already posted.
  for (auto& o : ops)
    if (o.kind == P2POp::Recv) post(*impl_, *this, o.tensor, true, o.peer, o.tag, reqs, posted, keep);
  for (auto& o : ops)
    if (o.kind == P2POp::Send) post(*impl_, *this, o.tensor, false, o.peer, o.tag, reqs, posted, keep);
  run(*impl_, "batch_send_recv", reqs, posted, keep);
}

}  // namespace pp3d
