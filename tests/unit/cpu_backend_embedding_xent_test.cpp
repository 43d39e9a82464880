// CpuBackend embedding and vocab-sliced cross-entropy: against double loops
// and finite differences, and the slice property (2 or 3 vocabulary slices,
// padded, combined give the full-vocabulary loss and dlogits).
#include <cmath>

#include "pp3d/backend/backend.h"
#include "test_util.h"

using namespace pp3d;
using namespace pp3d::test;

TEST_CASE("cpu embedding forward/backward vs double loops", "[cpu_backend][embedding]") {
  auto be = make_cpu_backend();
  const int64_t n = 300, c = 131, v_local = 11, offset = 5;
  std::vector<int32_t> idv(static_cast<std::size_t>(n));
  std::mt19937 gen(3);
  for (auto& id : idv) id = static_cast<int32_t>(gen() % 23);  // ids 0..22: some below, some above the slice
  Tensor ids = Tensor::from_vector_i32({n}, idv);
  Tensor table = random_tensor({v_local, c}, 4), base = random_tensor({n, c}, 5);
  const auto tab = to_double(table);
  for (bool acc : {false, true}) {
    CAPTURE(acc);
    Tensor out = base.clone();
    std::vector<double> want = acc ? to_double(base) : std::vector<double>(static_cast<std::size_t>(n * c), 0.0);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t row = idv[static_cast<std::size_t>(i)] - offset;
      if (row < 0 || row >= v_local) continue;
      for (int64_t j = 0; j < c; ++j)
        want[static_cast<std::size_t>(i * c + j)] += tab[static_cast<std::size_t>(row * c + j)];
    }
    be->embedding_forward(ids, table, out, offset, acc);
    require_close(out, want, 1e-6, 1e-6, "embedding forward");
  }
  // Backward: dtable accumulates dout rows of in-slice ids (repeated ids add up).
  Tensor dout = random_tensor({n, c}, 6), dtable = random_tensor({v_local, c}, 7);
  std::vector<double> gwant = to_double(dtable);
  const auto dd = to_double(dout);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t row = idv[static_cast<std::size_t>(i)] - offset;
    if (row < 0 || row >= v_local) continue;
    for (int64_t j = 0; j < c; ++j)
      gwant[static_cast<std::size_t>(row * c + j)] += dd[static_cast<std::size_t>(i * c + j)];
  }
  Tensor d1 = dtable.clone(), d2 = dtable.clone();
  with_threads(1, [&] { be->embedding_backward(ids, dout, d1, offset); });
  with_threads(2, [&] { be->embedding_backward(ids, dout, d2, offset); });
  require_close(d1, gwant, 1e-5, 1e-5, "embedding backward");
  REQUIRE(bitwise_equal(d1, d2));

  Tensor fids = Tensor::zeros({n});
  Tensor out = Tensor::zeros({n, c}), bad = Tensor::zeros({n, c + 1});
  CHECK_THROWS_WITH(be->embedding_forward(fids, table, out, 0, false), Catch::Contains("ids"));
  CHECK_THROWS_WITH(be->embedding_forward(ids, table, bad, 0, false), Catch::Contains("out"));
  CHECK_THROWS_WITH(be->embedding_backward(ids, bad, dtable, 0), Catch::Contains("dout"));
}

namespace {

// weight * sum_i (logsumexp(l_i) - l_i[t_i]) over the full vocabulary, in double.
double ref_xent(const std::vector<double>& l, const std::vector<int32_t>& t, int64_t n, int64_t v, double weight) {
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double* row = l.data() + i * v;
    double mx = -INFINITY, s = 0.0;
    for (int64_t j = 0; j < v; ++j) mx = std::max(mx, row[j]);
    for (int64_t j = 0; j < v; ++j) s += std::exp(row[j] - mx);
    total += std::log(s) + mx - row[t[static_cast<std::size_t>(i)]];
  }
  return weight * total;
}

}  // namespace

TEST_CASE("cpu xent over vocabulary slices equals the full-vocabulary loss and gradient", "[cpu_backend][xent]") {
  auto be = make_cpu_backend();
  const float weight = 0.37f;
  for (auto [n, v] : {std::pair<int64_t, int64_t>{1, 1}, {7, 13}, {40, 501}}) {
    CAPTURE(n, v);
    Tensor logits = random_tensor({n, v}, 11, -4.0f, 4.0f);
    std::vector<int32_t> tv(static_cast<std::size_t>(n));
    std::mt19937 gen(12);
    for (auto& t : tv) t = static_cast<int32_t>(gen() % static_cast<uint32_t>(v));
    Tensor targets = Tensor::from_vector_i32({n}, tv);
    const auto ld = to_double(logits);
    // The loss is a sum over rows: difference each row on its own.
    std::vector<double> grad_ref;
    for (int64_t i = 0; i < n; ++i) {
      const std::vector<int32_t> ti{tv[static_cast<std::size_t>(i)]};
      const std::vector<double> row(ld.begin() + i * v, ld.begin() + (i + 1) * v);
      const auto g = fd_grad([&](const std::vector<double>& l) { return ref_xent(l, ti, 1, v, weight); }, row);
      grad_ref.insert(grad_ref.end(), g.begin(), g.end());
    }
    const double loss_ref = ref_xent(ld, tv, n, v, weight);

    for (int64_t slices : {int64_t{1}, int64_t{2}, int64_t{3}}) {
      CAPTURE(slices);
      const int64_t width = (v + slices - 1) / slices;  // the last slice is padded
      std::vector<Tensor> parts, maxes, sums, tls;
      for (int64_t s = 0; s < slices; ++s) {
        const int64_t start = s * width, valid = std::max<int64_t>(0, std::min(v, start + width) - start);
        Tensor part = random_tensor({n, width}, 99, 1e4f, 2e4f);  // padding: huge values that must be ignored
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = 0; j < valid; ++j) part.data<float>()[i * width + j] = logits.data<float>()[i * v + start + j];
        Tensor mx = Tensor::empty({n}), se = Tensor::empty({n}), tl = Tensor::empty({n});
        be->xent_stats(part, targets, start, valid, mx, se, tl);
        parts.push_back(part);
        maxes.push_back(mx);
        sums.push_back(se);
        tls.push_back(tl);
      }
      // Combine the local statistics the way a vocab-parallel loss does.
      Tensor gmax = Tensor::empty({n}), gsum = Tensor::empty({n});
      double loss = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        float m = -INFINITY, tl = 0.0f;
        for (int64_t s = 0; s < slices; ++s) m = std::max(m, maxes[s].data<float>()[i]);
        float se = 0.0f;
        for (int64_t s = 0; s < slices; ++s) {
          se += sums[s].data<float>()[i] * std::exp(maxes[s].data<float>()[i] - m);
          tl += tls[s].data<float>()[i];
        }
        gmax.data<float>()[i] = m;
        gsum.data<float>()[i] = se;
        loss += weight * (std::log(static_cast<double>(se)) + m - tl);
      }
      REQUIRE(loss == Approx(loss_ref).epsilon(1e-5));
      for (int64_t s = 0; s < slices; ++s) {
        const int64_t start = s * width, valid = std::max<int64_t>(0, std::min(v, start + width) - start);
        Tensor dl = Tensor::empty({n, width});
        be->xent_backward(parts[s], targets, start, valid, gmax, gsum, weight, dl);
        std::vector<double> want(static_cast<std::size_t>(n * width), 0.0);  // padding gets 0
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = 0; j < valid; ++j)
            want[static_cast<std::size_t>(i * width + j)] = grad_ref[static_cast<std::size_t>(i * v + start + j)];
        require_close(dl, want, 1e-6, 1e-4, "xent dlogits vs finite differences");
        // dlogits may overwrite logits in place.
        be->xent_backward(parts[s], targets, start, valid, gmax, gsum, weight, parts[s]);
        REQUIRE(bitwise_equal(parts[s], dl));
      }
    }
  }
}

TEST_CASE("cpu xent: targets outside the slice and bad arguments", "[cpu_backend][xent]") {
  auto be = make_cpu_backend();
  Tensor logits = random_tensor({3, 6}, 1);
  Tensor targets = Tensor::from_vector_i32({3}, {10, 14, 15});  // slice [10, 14) valid; 14 is padding
  Tensor mx = Tensor::empty({3}), se = Tensor::empty({3}), tl = Tensor::empty({3});
  be->xent_stats(logits, targets, 10, 4, mx, se, tl);
  REQUIRE(tl.data<float>()[0] == logits.data<float>()[0]);
  REQUIRE(tl.data<float>()[1] == 0.0f);
  REQUIRE(tl.data<float>()[2] == 0.0f);
  Tensor bad = Tensor::empty({4});
  CHECK_THROWS_WITH(be->xent_stats(logits, targets, 10, 7, mx, se, tl), Catch::Contains("valid"));
  CHECK_THROWS_WITH(be->xent_stats(logits, targets, 10, 4, bad, se, tl), Catch::Contains("local_max"));
  Tensor dl = Tensor::empty({3, 5});
  CHECK_THROWS_WITH(be->xent_backward(logits, targets, 10, 4, mx, se, 1.0f, dl), Catch::Contains("dlogits"));
}
