// MpiCommunicator: construction, collectives (all_reduce, reduce_scatter,
// all_gather, broadcast, barrier) and split. Point-to-point is in mpi_p2p.cpp.
#include <climits>

#include "comm/comm_util.h"
#include "comm/mpi_detail.h"

namespace pp3d {

using detail::check_mpi;
using detail::MpiHandle;
using detail::MpiOpInfo;

namespace {

int count_of(const Tensor& t, const char* op, const std::string& group) {
  PP3D_CHECK(t.numel() <= INT_MAX, "{} on group '{}': {} has more than INT_MAX elements; split it", op, group,
             t.str());
  return static_cast<int>(t.numel());
}

std::vector<int> others(int rank, int size) {
  std::vector<int> v;
  for (int r = 0; r < size; ++r)
    if (r != rank) v.push_back(r);
  return v;
}

bool overlaps(const Tensor& a, const Tensor& b) {
  if (!a.device().is_cpu() || !b.device().is_cpu()) return false;  // device tensors are staged separately
  const char* pa = static_cast<const char*>(a.raw());
  const char* pb = static_cast<const char*>(b.raw());
  return pa < pb + b.nbytes() && pb < pa + a.nbytes();
}

}  // namespace

std::shared_ptr<MpiCommunicator> MpiCommunicator::world() {
  MPI_Comm c = MPI_COMM_WORLD;
  return from_native(&c, "world");
}

std::shared_ptr<MpiCommunicator> MpiCommunicator::from_native(const void* mpi_comm, const std::string& name) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  PP3D_CHECK(initialized && !finalized,
             "MPI is {} : call pp3d::init_world() (or MPI_Init) before creating an MpiCommunicator",
             finalized ? "already finalised" : "not initialised");
  MPI_Comm dup = MPI_COMM_NULL;
  const int rc = MPI_Comm_dup(*static_cast<const MPI_Comm*>(mpi_comm), &dup);
  PP3D_CHECK(rc == MPI_SUCCESS, "MPI_Comm_dup for group '{}' failed (MPI error {})", name, rc);
  return std::make_shared<MpiCommunicator>(std::make_unique<Impl>(dup, name));
}

MpiCommunicator::MpiCommunicator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MpiCommunicator::~MpiCommunicator() = default;

int MpiCommunicator::rank() const { return impl_->rank; }
int MpiCommunicator::size() const { return impl_->size; }
std::string MpiCommunicator::name() const { return impl_->name; }
const void* MpiCommunicator::native_handle() const { return &impl_->comm; }

int MpiCommunicator::global_rank(int r) const {
  PP3D_CHECK(r >= 0 && r < impl_->size, "group '{}' has {} ranks; rank {} does not exist", impl_->name,
             impl_->size, r);
  return impl_->global[static_cast<std::size_t>(r)];
}

std::unique_ptr<CommHandle> MpiCommunicator::all_reduce_async(Tensor& t, ReduceOp op, StreamHandle) {
  Impl& im = *impl_;
  im.check_usable("all_reduce");
  detail::check_comm_tensor(t, "all_reduce", *this);
  auto st = detail::stage_reduce(t, true);
  const int n = count_of(t, "all_reduce", im.name);
  std::vector<MPI_Request> reqs(1);
  check_mpi(MPI_Iallreduce(MPI_IN_PLACE, st.host.raw(), n, detail::mpi_dtype(st.host.dtype()), detail::mpi_op(op),
                           im.comm, &reqs[0]),
            "MPI_Iallreduce", im, "all_reduce");
  MpiOpInfo info{"all_reduce", fmt::format("{} {}", t.str(), reduce_op_name(op)), others(im.rank, im.size), true};
  const int size = im.size;
  Tensor dst = t;
  auto finish = [st, dst, op, size]() mutable {
    detail::finish_avg(st.host, op, size);
    detail::unstage_reduce(st, dst);
  };
  return std::make_unique<MpiHandle>(im, std::move(info), std::move(reqs), std::vector<Tensor>{t, st.host},
                                     std::move(finish));
}

void MpiCommunicator::all_reduce(Tensor& t, ReduceOp op) { all_reduce_async(t, op)->wait(); }

std::unique_ptr<CommHandle> MpiCommunicator::reduce_scatter_async(const Tensor& in, Tensor& out, ReduceOp op,
                                                                  StreamHandle) {
  Impl& im = *impl_;
  im.check_usable("reduce_scatter");
  detail::check_reduce_scatter_args(in, out, *this);
  auto sin = detail::stage_reduce(in, true);
  detail::ReduceStage sout;
  if (overlaps(in, out) && sin.aliased) {
    sout.aliased = false;
    sout.host = Tensor::empty({out.numel()}, sin.host.dtype(), Device::cpu(), MemCategory::Comm);
  } else {
    sout = detail::stage_reduce(out, false);
  }
  const int n = count_of(out, "reduce_scatter", im.name);
  std::vector<MPI_Request> reqs(1);
  check_mpi(MPI_Ireduce_scatter_block(sin.host.raw(), sout.host.raw(), n, detail::mpi_dtype(sin.host.dtype()),
                                      detail::mpi_op(op), im.comm, &reqs[0]),
            "MPI_Ireduce_scatter_block", im, "reduce_scatter");
  MpiOpInfo info{"reduce_scatter", fmt::format("{} -> {} {}", in.str(), out.str(), reduce_op_name(op)),
                 others(im.rank, im.size), true};
  const int size = im.size;
  Tensor dst = out;
  auto finish = [sout, dst, op, size]() mutable {
    detail::finish_avg(sout.host, op, size);
    detail::unstage_reduce(sout, dst);
  };
  return std::make_unique<MpiHandle>(im, std::move(info), std::move(reqs),
                                     std::vector<Tensor>{in, out, sin.host, sout.host}, std::move(finish));
}

void MpiCommunicator::reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) {
  reduce_scatter_async(in, out, op)->wait();
}

std::unique_ptr<CommHandle> MpiCommunicator::all_gather_async(const Tensor& in, Tensor& out, StreamHandle) {
  Impl& im = *impl_;
  im.check_usable("all_gather");
  detail::check_all_gather_args(in, out, *this);
  Tensor hin = detail::stage_bytes(in, true);
  if (overlaps(in, out) && hin.raw() == in.raw()) hin = in.clone(MemCategory::Comm);
  Tensor hout = detail::stage_bytes(out, false);
  const int n = count_of(in, "all_gather", im.name);
  const MPI_Datatype dt = detail::mpi_dtype(in.dtype());
  std::vector<MPI_Request> reqs(1);
  check_mpi(MPI_Iallgather(hin.raw(), n, dt, hout.raw(), n, dt, im.comm, &reqs[0]), "MPI_Iallgather", im,
            "all_gather");
  MpiOpInfo info{"all_gather", fmt::format("{} -> {}", in.str(), out.str()), others(im.rank, im.size), true};
  Tensor dst = out;
  auto finish = [hout, dst]() mutable { detail::unstage_bytes(hout, dst); };
  return std::make_unique<MpiHandle>(im, std::move(info), std::move(reqs), std::vector<Tensor>{in, out, hin, hout},
                                     std::move(finish));
}

void MpiCommunicator::all_gather(const Tensor& in, Tensor& out) { all_gather_async(in, out)->wait(); }

void MpiCommunicator::broadcast(Tensor& t, int root) {
  Impl& im = *impl_;
  im.check_usable("broadcast");
  detail::check_comm_tensor(t, "broadcast", *this);
  detail::check_root(root, "broadcast", *this);
  Tensor h = detail::stage_bytes(t, im.rank == root);
  std::vector<MPI_Request> reqs(1);
  check_mpi(MPI_Ibcast(h.raw(), count_of(t, "broadcast", im.name), detail::mpi_dtype(t.dtype()), root, im.comm,
                       &reqs[0]),
            "MPI_Ibcast", im, "broadcast");
  MpiOpInfo info{"broadcast", fmt::format("{} from rank {}", t.str(), root),
                 im.rank == root ? others(im.rank, im.size) : std::vector<int>{root}, im.rank == root};
  detail::mpi_wait_all(reqs, nullptr, im, info, {t, h});
  if (im.rank != root) detail::unstage_bytes(h, t);
}

void MpiCommunicator::barrier() {
  Impl& im = *impl_;
  im.check_usable("barrier");
  std::vector<MPI_Request> reqs(1);
  check_mpi(MPI_Ibarrier(im.comm, &reqs[0]), "MPI_Ibarrier", im, "barrier");
  detail::mpi_wait_all(reqs, nullptr, im, {"barrier", "no data", others(im.rank, im.size), true}, {});
}

std::shared_ptr<Communicator> MpiCommunicator::split(int color, int key, const std::string& name) {
  Impl& im = *impl_;
  im.check_usable("split");
  // MPI_Comm_split has no deadline: first make sure every rank has arrived.
  std::vector<MPI_Request> reqs(1);
  check_mpi(MPI_Ibarrier(im.comm, &reqs[0]), "MPI_Ibarrier", im, "split");
  detail::mpi_wait_all(reqs, nullptr, im,
                       {"split", fmt::format("into '{}'", name), others(im.rank, im.size), true}, {});
  MPI_Comm nc = MPI_COMM_NULL;
  check_mpi(MPI_Comm_split(im.comm, color < 0 ? MPI_UNDEFINED : color, key, &nc), "MPI_Comm_split", im, "split");
  if (nc == MPI_COMM_NULL) return nullptr;
  return std::make_shared<MpiCommunicator>(std::make_unique<Impl>(nc, name));
}

}  // namespace pp3d
