// Fuzz harness: the BPE tokenizer (text/tokenizer.h) and its trainer (text/bpe_trainer.h).
// First byte % 3 picks what the rest of the input is:
//   0  text for encode / encode_with_specials / decode / clean with a fixed tokenizer (trained at
//      start-up on a fixed multilingual text): ids must be in range and the row 77 long;
//   1  a merges file for Tokenizer::from_file;
//   2  a training document for BpeTrainer (600-token vocabulary), whose merges must then load.
#include <torch/torch.h>

#include "florence/text/bpe_trainer.h"
#include "florence/text/tokenizer.h"
#include "fuzz.h"

namespace fuzz_tokenizer {

using florence::text::BpeTrainer;
using florence::text::BpeTrainerOptions;
using florence::text::Tokenizer;

const Tokenizer& fixed_tokenizer() {
  static const Tokenizer tok = [] {
    BpeTrainer trainer(BpeTrainerOptions{700, 1});
    const char* texts[] = {
        "a photo of a red car parked on the street", "the quick brown fox jumps over the lazy dog",
        "Ein Bild von einem Hund im Schnee", "une photo d'un chat noir, très mignon", "猫の写真 と 犬の写真",
        "emoji 😀 🚗 and numbers 12345 67890", "<|startoftext|>hello<|endoftext|> it's we're they'll",
        "HTML &amp; entities &lt;b&gt; &#x1F600; &nbsp; spaces\ttabs\nnewlines"};
    for (int r = 0; r < 4; ++r)
      for (const char* t : texts) trainer.add_text(t);
    return Tokenizer::from_merges(trainer.train());
  }();
  return tok;
}

}  // namespace fuzz_tokenizer

FLORENCE_FUZZ_TARGET(tokenizer) {
  using namespace florence;
  using fuzz_tokenizer::fixed_tokenizer;
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  switch (data[0] % 3) {
    case 0: {
      const text::Tokenizer& tok = fixed_tokenizer();
      fuzz::refuse_ok([&] {
        const std::vector<int64_t> ids = tok.encode(rest);
        for (int64_t id : ids) fuzz::check(id >= 0 && id < tok.vocab_size(), "tokenizer: id out of range");
        (void)tok.decode(ids);
        const auto row = tok.encode_with_specials(rest);
        fuzz::check(row.size() == size_t(text::kClipContextLength), "tokenizer: row is not 77 tokens");
        (void)text::Tokenizer::clean(rest);
      });
      break;
    }
    case 1: {
      const std::string& path = fuzz::scratch_path("merges");
      fuzz::write_file(path, data + 1, size - 1);
      fuzz::refuse_ok([&] {
        const text::Tokenizer tok = text::Tokenizer::from_file(path);
        const auto ids = tok.encode("a photo of a cat, 2 dogs & ünïcödé");
        for (int64_t id : ids) fuzz::check(id >= 0 && id < tok.vocab_size(), "tokenizer: id out of range");
      });
      break;
    }
    default: {
      fuzz::refuse_ok([&] {
        text::BpeTrainer trainer(text::BpeTrainerOptions{600, 1});
        trainer.add_text(rest);
        const text::Tokenizer tok = text::Tokenizer::from_merges(trainer.train());
        const auto ids = tok.encode(rest);
        for (int64_t id : ids) fuzz::check(id >= 0 && id < tok.vocab_size(), "tokenizer: id out of range");
      });
    }
  }
  return 0;
}
