// Fuzz harness: the OpenClipArt SVG metadata reader (data/corpus.h read_svg_metadata, libxml2) and
// the caption built from it.
#include "florence/data/corpus.h"
#include "fuzz.h"

FLORENCE_FUZZ_TARGET(svg) {
  using namespace florence;
  const std::string& path = fuzz::scratch_path("svg");
  fuzz::write_file(path, data, size);
  data::SvgMetadata m;
  std::string error;
  if (data::read_svg_metadata(path, m, error)) {
    (void)data::svg_text(m, {"title", "description", "keywords"});
  } else {
    fuzz::check(!error.empty(), "svg: refused without a message");
  }
  return 0;
}
