// Fuzz harness: the WebDataset shard reader (data/webdataset.h ShardReader), libarchive underneath.
// Data errors must never escape next() (they are counted); every returned sample has an image,
// and its key is one a ShardWriter accepts, so nothing downstream sees a path-like key.
#include "florence/data/webdataset.h"
#include "fuzz.h"

FLORENCE_FUZZ_TARGET(tar) {
  using namespace florence;
  const std::string& path = fuzz::scratch_path("tar");
  fuzz::write_file(path, data, size);
  data::ShardReader reader(path, 512);
  data::Sample s;
  int64_t n = 0;
  while (reader.next(s)) {
    ++n;
    fuzz::check(!s.image.empty(), "tar: a sample without image bytes");
    fuzz::check(data::is_safe_sample_key(s.key), "tar: an unsafe key reached a sample");
  }
  fuzz::check(reader.stats().samples == n, "tar: stats().samples differs from the samples returned");
  return 0;
}
