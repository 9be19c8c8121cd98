// Cross-request batching: concurrent jobs get exactly their own rows (equal to encoding them
// alone), they share model calls, and the bounded queue refuses work instead of growing.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <thread>

#include "florence/core/error.h"
#include "florence/eval/encode.h"
#include "florence/search/batcher.h"
#include "florence/search/metrics.h"
#include "florence/text/tokenizer.h"
#include "support/paths.h"
#include "support/vocab.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_batcher {

using namespace florence;
using namespace florence::search;

namespace {

eval::EvalModel& nano() {
  static eval::EvalModel m = [] {
    torch::manual_seed(11);
    eval::LoadOptions o;
    o.model = "florence-nano";
    o.vocab = ::test::clip_vocab();
    return eval::load_eval_model(o);
  }();
  return m;
}

}  // namespace

TEST(ModelBatcher, ConcurrentJobsGetTheirOwnRowsAndShareModelCalls) {
  eval::EvalModel& m = nano();
  std::vector<std::string> texts;
  for (int i = 0; i < 64; ++i) texts.push_back("a photo of thing number " + std::to_string(i));
  torch::manual_seed(2);
  const torch::Tensor images = torch::randn({16, 3, m.preprocess.image_size, m.preprocess.image_size});
  // References, one call each, before the worker exists.
  const torch::Tensor ref_t = eval::encode_texts(m, texts);
  const torch::Tensor ref_i = eval::encode_image_tensor(m, images);
  const torch::Tensor ids = m.tokenizer->tokenize(texts, m.context_length);

  Metrics metrics;
  ModelBatcher b(m, {64, 256}, &metrics);
  std::atomic<int> ready{0};
  std::vector<JobEmbeddings> got(16);
  std::vector<std::thread> th;
  for (int j = 0; j < 16; ++j)
    th.emplace_back([&, j] {
      ready++;
      while (ready.load() < 16) std::this_thread::yield();
      // Job j: texts 4j..4j+3 and image j; jobs 0..3 texts only, 12..15 image only.
      torch::Tensor t = j >= 12 ? torch::Tensor() : ids.slice(0, 4 * j, 4 * j + 4);
      torch::Tensor im = j < 4 ? torch::Tensor() : images.slice(0, j, j + 1);
      got[size_t(j)] = b.submit(t, im).get();
    });
  for (auto& t : th) t.join();
  for (int j = 0; j < 16; ++j) {
    if (j < 12) {
      ASSERT_TRUE(got[size_t(j)].texts.defined()) << j;
      EXPECT_LT((got[size_t(j)].texts - ref_t.slice(0, 4 * j, 4 * j + 4)).abs().max().item<double>(), 1e-5) << j;
    } else {
      EXPECT_FALSE(got[size_t(j)].texts.defined());
    }
    if (j >= 4) {
      ASSERT_TRUE(got[size_t(j)].images.defined()) << j;
      EXPECT_LT((got[size_t(j)].images - ref_i.slice(0, j, j + 1)).abs().max().item<double>(), 1e-5) << j;
    } else {
      EXPECT_FALSE(got[size_t(j)].images.defined());
    }
  }
  // 16 jobs released at once: while the first batch runs the others queue up and share calls.
  const std::string text = metrics.render({});
  const auto at = text.find("florence_model_batch_items_count ");
  ASSERT_NE(at, std::string::npos);
  const int64_t calls = std::stoll(text.substr(at + 33));
  EXPECT_GE(calls, 1);
  EXPECT_LT(calls, 16) << text;
}

TEST(ModelBatcher, FullQueueIsRefusedAndEmptyJobsAreErrors) {
  eval::EvalModel& m = nano();
  std::vector<std::string> many(256, "a long queue of texts to keep the worker busy for a while");
  const torch::Tensor heavy = m.tokenizer->tokenize(many, m.context_length);
  const torch::Tensor one = heavy.slice(0, 0, 1);
  ModelBatcher b(m, {1, 1}, nullptr);
  EXPECT_THROW(b.submit({}, {}), Error);
  std::vector<std::future<JobEmbeddings>> ok;
  ok.push_back(b.submit(heavy, {}));
  int refused = 0;
  for (int i = 0; i < 50; ++i) {
    try {
      ok.push_back(b.submit(one, {}));
    } catch (const QueueFull&) {
      refused++;
    }
  }
  EXPECT_GT(refused, 0);
  for (auto& f : ok) EXPECT_EQ(f.get().texts.size(1), m.embed_dim());
  EXPECT_EQ(b.queue_depth(), 0);
}

}  // namespace test_batcher
