// A downstream program: links pp3d::pp3d and uses the public API only.
#include <cmath>
#include <cstdio>

#include <pp3d/pp3d.h>

int main() {
  auto backend = pp3d::make_cpu_backend();
  auto a = pp3d::Tensor::from_vector({2, 2}, {1, 2, 3, 4});
  auto b = pp3d::Tensor::from_vector({2, 2}, {1, 0, 0, 1});
  auto c = pp3d::Tensor::zeros({2, 2});
  backend->gemm(false, false, 2, 2, 2, 1.0f, a, b, 0.0f, c);
  auto v = c.to_vector();
  if (std::fabs(v[3] - 4.0f) > 1e-6f) {
    std::printf("unexpected gemm result %f\n", v[3]);
    return 1;
  }
  std::printf("pp3d %s consumer ok (cuda compiled: %d)\n", PP3D_VERSION_STRING, pp3d::cuda_compiled() ? 1 : 0);
  return 0;
}
