// Fuzz harness: model config JSON (model/registry.h spec_from_json, the format of --model files and
// checkpoint sidecars). An accepted spec must survive spec_to_json -> spec_from_json unchanged.
#include <nlohmann/json.hpp>

#include "florence/model/registry.h"
#include "fuzz.h"

FLORENCE_FUZZ_TARGET(model_config) {
  using namespace florence;
  const nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  fuzz::refuse_ok([&] {
    const model::ModelSpec spec = model::spec_from_json(j, "fuzz input");
    const nlohmann::json out = model::spec_to_json(spec);
    const nlohmann::json again = model::spec_to_json(model::spec_from_json(out, "round trip"));
    fuzz::check(out == again, "model_config: spec_to_json/spec_from_json do not round-trip");
  });
  return 0;
}
