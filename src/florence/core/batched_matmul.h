#pragma once
// Batched matrix product for many small matrices (window attention, text attention heads).
//
// LibTorch 1.13's CPU bmm without MKL multiplies the batch one matrix at a time on one thread,
// building a tensor view per matrix (profiled on Swin-T: a quarter of the forward in bmm plus
// ~88k select/as_strided calls; OpenBLAS runs a 49x32x49 product single-threaded). Here the batch
// is split over LibTorch's intra-op threads and each thread calls BLAS sgemm/dgemm on raw
// pointers, on blocks of rows small enough that OpenBLAS runs them on the calling thread.
#include <torch/types.h>

namespace florence::core {

/// a: [N, m, k], b: [N, k, n], same dtype and device -> [N, m, n] with out[i] = a[i] @ b[i].
/// Float32/float64 CPU tensors take the parallel BLAS path; each matrix may be row-major or
/// transposed in memory (a transposed view such as k.transpose(1, 2) is used without a copy),
/// anything else is made contiguous first. Other dtypes and devices fall back to torch::bmm.
/// Differentiable in both arguments (the backward uses the same routine).
/// Threads: each product is cut into blocks of rows with rows * n * k <= 262,144 (below it OpenBLAS
/// multiplies on the calling thread; interface/gemm.c) and the blocks are spread over LibTorch's
/// intra-op threads; a product whose single row is above that (n * k > 262,144) is left to OpenBLAS's
/// own threads, one matrix at a time. No process-wide setting is changed and nothing is locked, so
/// the result's bits depend only on the shapes and layouts, not on thread counts or concurrent calls.
/// Throws florence::Error when the shapes do not form a batched product; a dtype or device mismatch
/// goes to torch::bmm, which throws its own c10::Error.
torch::Tensor batched_matmul(const torch::Tensor& a, const torch::Tensor& b);

}  // namespace florence::core
