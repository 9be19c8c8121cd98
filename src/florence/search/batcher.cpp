// Cross-request batching of model calls (see batcher.h).
#include "florence/search/batcher.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <chrono>
#include <vector>

#include "florence/eval/encode.h"
#include "florence/search/metrics.h"

namespace florence::search {

ModelBatcher::ModelBatcher(eval::EvalModel& model, BatcherOptions options, Metrics* metrics)
    : model_(model), opt_(options), metrics_(metrics) {
  if (opt_.max_batch < 1 || opt_.queue_capacity < 1) throw Error("batcher: max_batch and queue_capacity must be >= 1");
  worker_ = std::thread([this] { run(); });
}

ModelBatcher::~ModelBatcher() { stop(); }

void ModelBatcher::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && !worker_.joinable()) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& j : queue_) j.done.set_exception(std::make_exception_ptr(Error("server is shutting down")));
  queue_.clear();
}

int64_t ModelBatcher::queue_depth() const {
  std::lock_guard<std::mutex> lock(mu_);
  return int64_t(queue_.size());
}

std::future<JobEmbeddings> ModelBatcher::submit(torch::Tensor text_ids, torch::Tensor images) {
  const bool has_t = text_ids.defined() && text_ids.size(0) > 0, has_i = images.defined() && images.size(0) > 0;
  if (!has_t && !has_i) throw Error("batcher: a job needs texts or images");
  Job j;
  if (has_t) j.ids = text_ids;
  if (has_i) j.images = images;
  std::future<JobEmbeddings> f = j.done.get_future();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) throw Error("server is shutting down");
    if (int64_t(queue_.size()) >= opt_.queue_capacity) throw QueueFull("the model queue is full; retry later");
    queue_.push_back(std::move(j));
  }
  cv_.notify_one();
  return f;
}

void ModelBatcher::run() {
  torch::NoGradGuard ng;
  for (;;) {
    std::vector<Job> batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      int64_t items = 0;
      while (!queue_.empty()) {
        const Job& next = queue_.front();
        const int64_t n = (next.ids.defined() ? next.ids.size(0) : 0) + (next.images.defined() ? next.images.size(0) : 0);
        if (!batch.empty() && items + n > opt_.max_batch) break;
        items += n;
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    const auto t0 = std::chrono::steady_clock::now();
    try {
      std::vector<torch::Tensor> ids, imgs;
      for (auto& j : batch) {
        if (j.ids.defined()) ids.push_back(j.ids);
        if (j.images.defined()) imgs.push_back(j.images);
      }
      torch::Tensor te, ie;
      if (!ids.empty()) {
        // encode in the towers' batch size (eval::PreprocessOptions::batch_size) when one job is large
        torch::Tensor all = torch::cat(ids, 0);
        std::vector<torch::Tensor> out;
        for (int64_t i = 0; i < all.size(0); i += model_.preprocess.batch_size)
          out.push_back(model_.model->encode_text(all.slice(0, i, i + model_.preprocess.batch_size).to(model_.device))
                            .to(torch::kCPU, torch::kFloat));
        te = torch::cat(out, 0);
      }
      if (!imgs.empty()) ie = eval::encode_image_tensor(model_, torch::cat(imgs, 0));
      int64_t ti = 0, ii = 0;
      for (auto& j : batch) {
        JobEmbeddings r;
        if (j.ids.defined()) {
          r.texts = te.slice(0, ti, ti + j.ids.size(0)).clone();
          ti += j.ids.size(0);
        }
        if (j.images.defined()) {
          r.images = ie.slice(0, ii, ii + j.images.size(0)).clone();
          ii += j.images.size(0);
        }
        j.done.set_value(std::move(r));
      }
      if (metrics_)
        metrics_->observe_batch(ti + ii, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    } catch (...) {
      std::string why = "unknown exception";
      try {
        throw;
      } catch (const std::exception& e) {
        why = e.what();
      } catch (...) {
      }
      spdlog::error("serve: a batched model call of {} request(s) failed: {}", batch.size(), why.substr(0, why.find('\n')));
      for (auto& j : batch) {
        try {
          j.done.set_exception(std::current_exception());
        } catch (const std::future_error&) {  // already satisfied
        }
      }
    }
  }
}

}  // namespace florence::search
