// core::batched_matmul against torch::bmm: values (row-major and transposed operands, float32 and
// float64, 1 and 2 threads), row blocks and large products, bit-equality across thread counts and
// concurrent callers, gradients, empty shapes and shape errors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <dlfcn.h>

#include <atomic>
#include <thread>

#include "florence/core/batched_matmul.h"
#include "florence/core/error.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_batched_matmul {

using florence::core::batched_matmul;

TEST(BatchedMatmul, EqualsBmmForEveryOperandLayout) {
  torch::manual_seed(0);
  for (auto dtype : {torch::kFloat, torch::kDouble}) {
    for (int threads : {1, 2}) {
      at::set_num_threads(threads);
      const int64_t N = 37, m = 49, k = 32, n = 45;
      auto a = torch::randn({N, m, k}, dtype), b = torch::randn({N, k, n}, dtype);
      auto at_ = torch::randn({N, k, m}, dtype).transpose(1, 2);  // transposed in memory
      auto bt = torch::randn({N, n, k}, dtype).transpose(1, 2);
      auto strided = torch::randn({N, m, 2 * k}, dtype).slice(2, 0, 2 * k, 2);  // neither layout: copied
      const double tol = dtype == torch::kFloat ? 1e-5 : 1e-12;
      EXPECT_TRUE(torch::allclose(batched_matmul(a, b), torch::bmm(a, b), tol, tol));
      EXPECT_TRUE(torch::allclose(batched_matmul(at_, b), torch::bmm(at_, b), tol, tol));
      EXPECT_TRUE(torch::allclose(batched_matmul(a, bt), torch::bmm(a, bt), tol, tol));
      EXPECT_TRUE(torch::allclose(batched_matmul(at_, bt), torch::bmm(at_, bt), tol, tol));
      EXPECT_TRUE(torch::allclose(batched_matmul(strided, b), torch::bmm(strided, b), tol, tol));
      // A batch dimension with a gap (a slice of a larger batch).
      auto big = torch::randn({2 * N, m, k}, dtype).slice(0, 0, 2 * N, 2);
      EXPECT_TRUE(torch::allclose(batched_matmul(big, b), torch::bmm(big, b), tol, tol));
    }
  }
  at::set_num_threads(2);
}

// Shapes on each side of OpenBLAS's calling-thread threshold (m * n * k <= 262,144): text attention
// [77 x 64] x [64 x 77] is cut into row blocks of 53 and 24, a 3 x 600 x 600 product is left to
// OpenBLAS's threads.
TEST(BatchedMatmul, RowBlocksAndLargeProductsEqualBmm) {
  torch::manual_seed(2);
  for (int threads : {1, 2}) {
    at::set_num_threads(threads);
    for (auto [N, m, k, n] : std::vector<std::array<int64_t, 4>>{{24, 77, 64, 77}, {24, 77, 77, 64}, {3, 3, 600, 600}}) {
      auto a = torch::randn({N, m, k}), b = torch::randn({N, k, n});
      auto at_ = torch::randn({N, k, m}).transpose(1, 2);
      EXPECT_TRUE(torch::allclose(batched_matmul(a, b), torch::bmm(a, b), 1e-4, 1e-4)) << m << "x" << k << "x" << n;
      EXPECT_TRUE(torch::allclose(batched_matmul(at_, b), torch::bmm(at_, b), 1e-4, 1e-4)) << m << "x" << k << "x" << n;
    }
  }
  at::set_num_threads(2);
}

// The bits of a product depend on nothing but its operands: the same for one and two intra-op
// threads, and a batched_matmul on one thread does not change the matrix products another thread is
// computing at the same time (an earlier version switched OpenBLAS's process-wide thread count, and
// OpenBLAS's one- and two-thread sgemm differ in the last bits; that made two in-process curate
// ranks disagree with one rank in the 9th digit now and then).
TEST(BatchedMatmul, BitsIndependentOfThreadsAndConcurrentCalls) {
  torch::manual_seed(3);
  auto a = torch::randn({64, 77, 64}), b = torch::randn({64, 64, 77});
  at::set_num_threads(1);
  const torch::Tensor one = batched_matmul(a, b);
  at::set_num_threads(2);
  EXPECT_TRUE(torch::equal(batched_matmul(a, b), one));

  using GetThreads = int (*)();
  auto blas_threads = reinterpret_cast<GetThreads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  const int blas_before = blas_threads ? blas_threads() : 0;

  // A product large enough for OpenBLAS to use its threads (when it has more than one).
  auto x = torch::randn({256, 512}), w = torch::randn({512, 512});
  const torch::Tensor ref = torch::mm(x, w);
  std::atomic<bool> stop{false};
  std::atomic<int> calls{0};
  std::thread other([&] {
    at::set_num_threads(2);
    while (!stop) {
      (void)batched_matmul(a, b);
      ++calls;
    }
  });
  int mismatches = 0;
  for (int i = 0; i < 200 || calls < 20; ++i) {
    if (!torch::equal(torch::mm(x, w), ref)) ++mismatches;
    if (i > 20000) break;
  }
  stop = true;
  other.join();
  EXPECT_EQ(mismatches, 0);
  EXPECT_GE(calls.load(), 1);
  if (blas_threads) {
    EXPECT_EQ(blas_threads(), blas_before);
  }
}

TEST(BatchedMatmul, GradientsEqualBmm) {
  torch::manual_seed(1);
  auto a = torch::randn({5, 7, 3}, torch::kDouble).requires_grad_(true);
  auto b = torch::randn({5, 4, 3}, torch::kDouble).requires_grad_(true);  // used as b^T
  auto w = torch::randn({5, 7, 4}, torch::kDouble);
  auto mine = (batched_matmul(a, b.transpose(1, 2)) * w).sum();
  auto ref = (torch::bmm(a, b.transpose(1, 2)) * w).sum();
  auto gm = torch::autograd::grad({mine}, {a, b});
  auto gr = torch::autograd::grad({ref}, {a, b});
  EXPECT_TRUE(torch::allclose(gm[0], gr[0], 1e-12, 1e-12));
  EXPECT_TRUE(torch::allclose(gm[1], gr[1], 1e-12, 1e-12));
}

TEST(BatchedMatmul, EmptyShapesAndErrors) {
  EXPECT_EQ(batched_matmul(torch::zeros({0, 3, 4}), torch::zeros({0, 4, 5})).sizes(), (std::vector<int64_t>{0, 3, 5}));
  auto z = batched_matmul(torch::ones({2, 3, 0}), torch::ones({2, 0, 5}));
  EXPECT_EQ(z.sizes(), (std::vector<int64_t>{2, 3, 5}));
  EXPECT_EQ(z.abs().sum().item<double>(), 0.0);
  // Other dtypes fall back to torch::bmm.
  auto i = batched_matmul(torch::ones({1, 2, 2}, torch::kLong), torch::ones({1, 2, 2}, torch::kLong));
  EXPECT_EQ(i.sum().item<int64_t>(), 8);
  EXPECT_THROW(batched_matmul(torch::zeros({2, 3, 4}), torch::zeros({2, 5, 6})), florence::Error);
  EXPECT_THROW(batched_matmul(torch::zeros({3, 4}), torch::zeros({4, 6})), florence::Error);
  EXPECT_THROW(batched_matmul(torch::zeros({2, 3, 4}), torch::zeros({3, 4, 6})), florence::Error);
}

}  // namespace test_batched_matmul
