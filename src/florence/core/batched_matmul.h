#pragma once
// Batched matrix product for many small matrices (window attention, text attention heads).
//
// LibTorch 1.13's CPU bmm without MKL multiplies the batch one matrix at a time on one thread,
// building a tensor view per matrix (profiled on Swin-T: a quarter of the forward in bmm plus
// ~88k select/as_strided calls; OpenBLAS runs a 49x32x49 product single-threaded). Here the batch
// is split over LibTorch's intra-op threads and each thread calls BLAS sgemm/dgemm on raw
// pointers, with OpenBLAS's own threading switched off for the duration (its pool would
// otherwise be shared by the threads calling into it).
#include <torch/types.h>

namespace florence::core {

/// a: [N, m, k], b: [N, k, n], same dtype and device -> [N, m, n] with out[i] = a[i] @ b[i].
/// Float32/float64 CPU tensors take the parallel BLAS path; each matrix may be row-major or
/// transposed in memory (a transposed view such as k.transpose(1, 2) is used without a copy),
/// anything else is made contiguous first. Other dtypes and devices fall back to torch::bmm.
/// Differentiable in both arguments (the backward uses the same routine).
/// Threads: with more than one intra-op thread, a call sets OpenBLAS's (process-wide) thread count
/// to 1 for its duration and holds a global lock meanwhile, so concurrent multi-threaded calls run
/// one after another; calls from threads with one intra-op thread each run concurrently.
/// Throws florence::Error when the shapes do not form a batched product; a dtype or device mismatch
/// goes to torch::bmm, which throws its own c10::Error.
torch::Tensor batched_matmul(const torch::Tensor& a, const torch::Tensor& b);

}  // namespace florence::core
