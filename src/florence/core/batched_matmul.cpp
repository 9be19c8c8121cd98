// Parallel batched matmul on BLAS; see batched_matmul.h.
#include "florence/core/batched_matmul.h"

#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/torch.h>

#include "florence/core/error.h"

extern "C" {
// Fortran BLAS (every BLAS provides these; Debian's libblas.so.3 is OpenBLAS when installed).
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const float* alpha,
            const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c, const int* ldc);
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const double* alpha,
            const double* a, const int* lda, const double* b, const int* ldb, const double* beta, double* c,
            const int* ldc);
}

namespace florence::core {

namespace {

// OpenBLAS multiplies a product on the calling thread, without its process-wide pool, when
// m * n * k <= SMP_THRESHOLD_MIN (65536) * GEMM_MULTITHREAD_THRESHOLD (4 unless built otherwise):
// OpenBLAS interface/gemm.c. Checked here with Debian's 0.3.21: at 49x49x109 (261,709) one and two
// OpenBLAS threads give bit-equal products, at 49x49x110 (264,110) they differ in the last bits.
constexpr int64_t kCallingThreadWork = 65536 * 4;

/// One matrix operand as BLAS sees it: the last two strides must have a unit stride on one side.
struct Operand {
  torch::Tensor t;
  bool transposed = false;  // stored column-major (stride(1) == 1)
  int64_t ld = 0;
};

Operand operand(torch::Tensor t) {
  const int64_t rows = t.size(1), cols = t.size(2);
  if (t.stride(2) == 1 && t.stride(1) >= std::max<int64_t>(1, cols)) return {t, false, t.stride(1)};
  if (t.stride(1) == 1 && t.stride(2) >= std::max<int64_t>(1, rows)) return {t, true, t.stride(2)};
  t = t.contiguous();
  return {t, false, std::max<int64_t>(1, cols)};
}

template <typename T>
void gemm(char ta, char tb, int m, int n, int k, const T* a, int lda, const T* b, int ldb, T* c, int ldc) {
  const T one = 1, zero = 0;
  if constexpr (std::is_same_v<T, float>) {
    sgemm_(&ta, &tb, &m, &n, &k, &one, a, &lda, b, &ldb, &zero, c, &ldc);
  } else {
    dgemm_(&ta, &tb, &m, &n, &k, &one, a, &lda, b, &ldb, &zero, c, &ldc);
  }
}

template <typename T>
void run(const Operand& A, const Operand& B, torch::Tensor& out) {
  const int64_t N = out.size(0), m = out.size(1), n = out.size(2), k = A.t.size(2);
  const T* pa = A.t.data_ptr<T>();
  const T* pb = B.t.data_ptr<T>();
  T* pc = out.data_ptr<T>();
  const int64_t sa = A.t.stride(0), sb = B.t.stride(0), sc = out.stride(0);
  // Row-major C = A B is column-major C^T = B^T A^T: BLAS gets (B, A) with m and n swapped; a
  // row-major operand is its own transpose in column-major terms ('N'), a transposed one is 'T'.
  const char tb = B.transposed ? 'T' : 'N', ta = A.transposed ? 'T' : 'N';
  const int in = int(n), ik = int(k), lda = int(A.ld), ldb = int(B.ld), ldc = int(std::max<int64_t>(1, n));
  // Row r of A starts r * ld elements in when A is row-major, r elements in when it is stored transposed.
  const int64_t a_row = A.transposed ? 1 : A.ld;
  // Each task is a block of rows of one product, small enough for OpenBLAS to run it on the calling
  // thread: the tasks spread over LibTorch's threads and no process-wide BLAS setting is touched, so
  // a product's bits depend only on the shapes (not on thread counts or on other threads' calls).
  const int64_t rows = (n * k > 0) ? std::min<int64_t>(m, kCallingThreadWork / (n * k)) : m;
  if (rows < 1) {
    // One row alone is above the threshold: products this large use OpenBLAS's own threads, one at a time.
    for (int64_t i = 0; i < N; ++i)
      gemm<T>(tb, ta, in, int(m), ik, pb + i * sb, ldb, pa + i * sa, lda, pc + i * sc, ldc);
    return;
  }
  const int64_t blocks = (m + rows - 1) / rows;
  at::parallel_for(0, N * blocks, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t i = t / blocks, r0 = (t % blocks) * rows, r = std::min(rows, m - r0);
      gemm<T>(tb, ta, in, int(r), ik, pb + i * sb, ldb, pa + i * sa + r0 * a_row, lda, pc + i * sc + r0 * ldc, ldc);
    }
  });
}

torch::Tensor forward_impl(const torch::Tensor& a, const torch::Tensor& b) {
  const int64_t N = a.size(0), m = a.size(1), k = a.size(2), n = b.size(2);
  auto out = torch::empty({N, m, n}, a.options());
  if (N == 0 || m == 0 || n == 0) return out;
  if (k == 0) return out.zero_();
  if (m > INT32_MAX || n > INT32_MAX || k > INT32_MAX) return torch::bmm(a, b);
  const Operand A = operand(a), B = operand(b);
  if (a.scalar_type() == torch::kFloat) run<float>(A, B, out);
  else run<double>(A, B, out);
  return out;
}

struct BatchedMatmul : torch::autograd::Function<BatchedMatmul> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& a, const torch::Tensor& b) {
    ctx->save_for_backward({a, b});
    return forward_impl(a, b);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& a = saved[0];
    const torch::Tensor& b = saved[1];
    torch::Tensor ga, gb;
    if (ctx->needs_input_grad(0)) ga = batched_matmul(grad[0], b.transpose(1, 2));  // [N, m, k]
    if (ctx->needs_input_grad(1)) gb = batched_matmul(a.transpose(1, 2), grad[0]);  // [N, k, n]
    return {ga, gb};
  }
};

}  // namespace

torch::Tensor batched_matmul(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.dim() != 3 || b.dim() != 3 || a.size(0) != b.size(0) || a.size(2) != b.size(1)) {
    throw Error(fmt::format("batched_matmul: expected [N, m, k] and [N, k, n], got [{}] and [{}]",
                            fmt::join(a.sizes(), ", "), fmt::join(b.sizes(), ", ")));
  }
  const bool fast = a.device().is_cpu() && b.device().is_cpu() && a.scalar_type() == b.scalar_type() &&
                    (a.scalar_type() == torch::kFloat || a.scalar_type() == torch::kDouble) && !a.is_sparse() &&
                    !b.is_sparse();
  if (!fast) return torch::bmm(a, b);
  if (torch::GradMode::is_enabled() && (a.requires_grad() || b.requires_grad())) return BatchedMatmul::apply(a, b);
  return forward_impl(a, b);
}

}  // namespace florence::core
