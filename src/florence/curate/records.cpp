// The pipeline's record table and its exchange between processes; see records.h.
#include "florence/curate/records.h"

#include <algorithm>

namespace florence::curate::detail {

using nlohmann::json;

Table merge_parts(std::vector<Table>& parts, bool with_entries) {
  struct Ref {
    uint32_t shard, pos, part, idx;
  };
  std::vector<Ref> refs;
  size_t n = 0, key_bytes = 0, ent = 0;
  for (const auto& p : parts) {
    n += p.rec.size();
    key_bytes += p.keys.blob.size();
    ent += p.ent_ids.size();
  }
  refs.reserve(n);
  for (uint32_t p = 0; p < parts.size(); ++p)
    for (uint32_t i = 0; i < parts[p].rec.size(); ++i) refs.push_back({parts[p].rec[i].shard, parts[p].rec[i].pos, p, i});
  std::sort(refs.begin(), refs.end(), [](const Ref& a, const Ref& b) {
    return a.shard != b.shard ? a.shard < b.shard : a.pos < b.pos;
  });
  Table t;
  t.rec.reserve(n);
  t.keys.blob.reserve(key_bytes);
  t.keys.end.reserve(n);
  if (with_entries) {
    t.ent_off.reserve(n + 1);
    t.ent_off.push_back(0);
    t.ent_ids.reserve(ent);
  }
  for (const Ref& r : refs) {
    const Table& p = parts[r.part];
    t.rec.push_back(p.rec[r.idx]);
    t.keys.push(p.keys.get(r.idx));
    if (with_entries) {
      t.ent_ids.insert(t.ent_ids.end(), p.ent_ids.begin() + p.ent_off[r.idx], p.ent_ids.begin() + p.ent_off[r.idx + 1]);
      t.ent_off.push_back(uint32_t(t.ent_ids.size()));
    }
  }
  for (auto& p : parts) p = Table{};
  return t;
}

namespace {

std::string to_cbor_string(const json& j) {
  const std::vector<uint8_t> b = json::to_cbor(j);
  return std::string(b.begin(), b.end());
}

json from_cbor_string(const std::string& s) {
  try {
    return json::from_cbor(std::vector<uint8_t>(s.begin(), s.end()));
  } catch (const json::exception& e) {
    throw Error(std::string("curate: a rank sent malformed data: ") + e.what());
  }
}

json table_to_json(const Table& t) {
  json j;
  j["rec"] = to_blob(t.rec);
  j["keys"] = json::binary_t(std::vector<uint8_t>(t.keys.blob.begin(), t.keys.blob.end()));
  j["key_end"] = to_blob(t.keys.end);
  j["ent_off"] = to_blob(t.ent_off);
  j["ent_ids"] = to_blob(t.ent_ids);
  json d = json::array();
  for (const auto& x : t.dropped) d.push_back({x.shard, x.reason, x.key});
  j["dropped"] = d;
  json s = json::array();
  for (size_t i = 0; i < t.shards.size(); ++i) {
    const ShardInfo& x = t.shards[i];
    if (x.scanned)
      s.push_back({i, x.unreadable, x.samples, x.missing_image, x.bad_text, x.corrupt, x.skipped_members, x.members,
                   x.truncated, x.problem});
  }
  j["shards"] = s;
  return j;
}

}  // namespace

std::vector<json> gather_json(const json& mine, const Collective& c) {
  if (c.world_size == 1) return {mine};
  const std::vector<std::string> all = c.all_gather(to_cbor_string(mine));
  if (int(all.size()) != c.world_size)
    throw Error("curate: all_gather returned " + std::to_string(all.size()) + " parts for world size " + std::to_string(c.world_size));
  std::vector<json> out;
  for (const auto& s : all) out.push_back(from_cbor_string(s));
  return out;
}

Table exchange_tables(Table local, const Collective& c, size_t num_shards, bool with_entries) {
  if (c.world_size == 1) return local;
  const std::vector<json> all = gather_json(table_to_json(local), c);
  local = Table{};
  std::vector<Table> parts(all.size());
  std::vector<Dropped> dropped;
  std::vector<ShardInfo> shards(num_shards);
  for (size_t r = 0; r < all.size(); ++r) {
    const json& j = all[r];
    Table& p = parts[r];
    p.rec = from_blob<Record>(j.at("rec"), "rec");
    const auto& kb = j.at("keys").get_binary();
    p.keys.blob.assign(kb.begin(), kb.end());
    p.keys.end = from_blob<uint64_t>(j.at("key_end"), "key_end");
    p.ent_off = from_blob<uint32_t>(j.at("ent_off"), "ent_off");
    p.ent_ids = from_blob<uint32_t>(j.at("ent_ids"), "ent_ids");
    if (p.keys.end.size() != p.rec.size() || (with_entries && p.ent_off.size() != p.rec.size() + 1))
      throw Error("curate: rank " + std::to_string(r) + " sent an inconsistent table");
    for (const auto& d : j.at("dropped")) dropped.push_back({d[0].get<uint32_t>(), d[1].get<uint8_t>(), d[2].get<std::string>()});
    for (const auto& s : j.at("shards")) {
      ShardInfo& x = shards.at(s[0].get<size_t>());
      x.scanned = true;
      x.unreadable = s[1].get<bool>();
      x.samples = s[2].get<int64_t>();
      x.missing_image = s[3].get<int64_t>();
      x.bad_text = s[4].get<int64_t>();
      x.corrupt = s[5].get<int64_t>();
      x.skipped_members = s[6].get<int64_t>();
      x.members = s[7].get<int64_t>();
      x.truncated = s[8].get<bool>();
      x.problem = s[9].get<std::string>();
    }
  }
  Table t = merge_parts(parts, with_entries);
  std::stable_sort(dropped.begin(), dropped.end(), [](const Dropped& a, const Dropped& b) { return a.shard < b.shard; });
  t.dropped = std::move(dropped);
  t.shards = std::move(shards);
  return t;
}

std::vector<std::pair<size_t, size_t>> shard_ranges(const Table& t, size_t num_shards) {
  std::vector<std::pair<size_t, size_t>> r(num_shards, {0, 0});
  size_t i = 0;
  while (i < t.rec.size()) {
    size_t j = i;
    while (j < t.rec.size() && t.rec[j].shard == t.rec[i].shard) ++j;
    r[t.rec[i].shard] = {i, j};
    i = j;
  }
  return r;
}

}  // namespace florence::curate::detail
