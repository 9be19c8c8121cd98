#pragma once
// Batches the model calls of concurrent requests (`florence serve`): request threads tokenize
// texts and preprocess images themselves, then submit them to one worker thread that owns the
// model. The worker takes every job waiting in the queue (up to max_batch texts + images; a
// single larger job is taken alone), runs the text tower once over all their texts and the image
// tower once over all their images, and hands each job its rows. While a batch runs, new
// requests queue up and form the next batch, so under load the model sees large batches and
// when idle a request is served at once (no waiting window).
//
// The queue is bounded: submit() throws QueueFull when `queue_capacity` jobs are waiting, which
// the server answers with 503 - memory stays bounded under overload.
#include <torch/types.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <future>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "florence/core/error.h"

namespace florence::eval {
struct EvalModel;
}

namespace florence::search {

class Metrics;

struct BatcherOptions {
  int64_t max_batch = 64;       ///< texts + images per model call (a larger single job is split by the towers' batch size)
  int64_t queue_capacity = 256; ///< jobs waiting at most
};

/// Embeddings of one job, rows in submission order.
struct JobEmbeddings {
  torch::Tensor texts;   ///< [T, D] float32 CPU, unit rows (undefined when the job had no text)
  torch::Tensor images;  ///< [I, D] float32 CPU, unit rows (undefined when the job had no image)
};

class QueueFull : public Error {
 public:
  using Error::Error;
};

class ModelBatcher {
 public:
  /// `model` must outlive the batcher; only the worker thread calls it. `metrics` may be null.
  ModelBatcher(eval::EvalModel& model, BatcherOptions options, Metrics* metrics);
  /// Stops the worker (jobs still queued fail with florence::Error) and joins it.
  ~ModelBatcher();
  ModelBatcher(const ModelBatcher&) = delete;
  ModelBatcher& operator=(const ModelBatcher&) = delete;

  /// Queues one job: text_ids [T, context] int64 token ids (undefined = none), images
  /// [I, 3, S, S] float32 preprocessed (undefined = none). Throws QueueFull when the queue is
  /// full, florence::Error when both are empty or after stop(). The future throws what the
  /// model threw.
  std::future<JobEmbeddings> submit(torch::Tensor text_ids, torch::Tensor images);
  /// Jobs waiting now.
  int64_t queue_depth() const;
  void stop();

 private:
  struct Job {
    torch::Tensor ids, images;
    std::promise<JobEmbeddings> done;
  };
  void run();
  eval::EvalModel& model_;
  BatcherOptions opt_;
  Metrics* metrics_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace florence::search
