// Fuzz harness: the IDX (MNIST container) parser, data/idx.h parse_idx.
#include "florence/data/idx.h"
#include "fuzz.h"

FLORENCE_FUZZ_TARGET(idx) {
  using namespace florence;
  fuzz::refuse_ok([&] {
    const data::IdxArray a = data::parse_idx(std::vector<uint8_t>(data, data + size), "fuzz input");
    fuzz::check(a.count() * a.item_size() == a.data.size(), "idx: dims disagree with the data");
  });
  return 0;
}
