// Collective over dist::DistContext; see collective.h.
#include "florence/curate/collective.h"

#include "florence/dist/dist.h"

namespace florence::curate {

Collective collective_from(const dist::DistContext& ctx) {
  Collective c;
  c.rank = ctx.rank();
  c.world_size = ctx.world_size();
  auto shared = std::make_shared<dist::DistContext>(ctx);
  c.all_gather = [shared](const std::string& mine) {
    const std::vector<std::vector<uint8_t>> all = shared->all_gather_bytes(std::vector<uint8_t>(mine.begin(), mine.end()));
    std::vector<std::string> out;
    out.reserve(all.size());
    for (const auto& b : all) out.emplace_back(b.begin(), b.end());
    return out;
  };
  return c;
}

}  // namespace florence::curate
