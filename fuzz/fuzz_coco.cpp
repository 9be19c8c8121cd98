// Fuzz harness: COCO JSON (adapt/detect/coco.h). An object is read as an instances file, which must
// round-trip through coco_to_json; an array is read as a results file against a fixed two-image
// data set.
#include <nlohmann/json.hpp>

#include "florence/adapt/detect/coco.h"
#include "fuzz.h"

namespace fuzz_coco {

const florence::detect::CocoDataset& fixed_gt() {
  static const florence::detect::CocoDataset gt = florence::detect::coco_from_json(
      nlohmann::json::parse(R"({"images": [{"id": 1, "width": 64, "height": 48, "file_name": "a.png"},
                                           {"id": 7, "width": 32, "height": 32, "file_name": "b.png"}],
                                "categories": [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}],
                                "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                                                 "bbox": [1, 2, 10, 20], "area": 200, "iscrowd": 0}]})"),
      "fixed");
  return gt;
}

}  // namespace fuzz_coco

FLORENCE_FUZZ_TARGET(coco) {
  using namespace florence;
  const nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  fuzz::refuse_ok([&] {
    if (j.is_array()) {
      (void)detect::coco_results_from_json(j, fuzz_coco::fixed_gt(), "fuzz input");
      return;
    }
    const detect::CocoDataset d = detect::coco_from_json(j, "fuzz input");
    const nlohmann::json out = detect::coco_to_json(d);
    const nlohmann::json again = detect::coco_to_json(detect::coco_from_json(out, "round trip"));
    fuzz::check(out == again, "coco: coco_to_json/coco_from_json do not round-trip");
  });
  return 0;
}
