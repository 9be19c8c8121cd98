#pragma once
// The curation pipeline's exchange (pipeline.h Collective) over a c10d process group
// (dist/dist.h), so `florence curate` under `florence launch` / torchrun runs as many processes
// with one global near-duplicate search.
#include "florence/curate/pipeline.h"

namespace florence::dist {
class DistContext;
}

namespace florence::curate {

/// A Collective whose all_gather is ctx.all_gather_bytes (rank and world size from ctx). The
/// context is copied into the returned object (copies share the process group).
Collective collective_from(const dist::DistContext& ctx);

}  // namespace florence::curate
