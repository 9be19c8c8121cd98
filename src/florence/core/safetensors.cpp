// safetensors reader and writer (format: huggingface/safetensors, "format" section of its
// README): an 8-byte little-endian u64 header length N, N bytes of UTF-8 JSON, then the data
// buffer. Every header field is validated before a single tensor byte is read, so a hostile
// or damaged file yields a florence::Error naming the file, the tensor and the problem; it
// never allocates more than the file could hold and never reads outside the file.
#include "florence/core/checkpoint.h"
#include "florence/core/error.h"
#include "florence/core/files.h"

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

// The format stores every number little-endian; we copy bytes straight into tensors.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors I/O copies raw bytes and supports little-endian hosts only");

namespace florence::core {
namespace {

using json = nlohmann::json;

/// Upper bound on the JSON header; the reference implementation refuses headers above
/// 100,000,000 bytes (safetensors `MAX_HEADER_SIZE`), so no valid file is rejected by it.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
/// Upper bound on the length of a `shape` (and any array in an entry); real tensors have a
/// handful of dimensions, and the bound keeps a hostile header from building huge arrays.
constexpr size_t kMaxArrayLength = 64;
constexpr const char* kMetadataKey = "__metadata__";

struct DtypeInfo {
  const char* name;
  torch::ScalarType type;
  int64_t size;  // bytes per element
};

// The dtypes this project reads and writes (safetensors names; all have a LibTorch type).
constexpr DtypeInfo kDtypes[] = {
    {"F64", torch::kFloat64, 8}, {"F32", torch::kFloat32, 4}, {"F16", torch::kFloat16, 2},
    {"BF16", torch::kBFloat16, 2}, {"I64", torch::kInt64, 8}, {"I32", torch::kInt32, 4},
    {"I16", torch::kInt16, 2},   {"I8", torch::kInt8, 1},     {"U8", torch::kUInt8, 1},
    {"BOOL", torch::kBool, 1},
};

const DtypeInfo* dtype_by_name(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

const DtypeInfo* dtype_by_type(torch::ScalarType t) {
  for (const auto& d : kDtypes)
    if (t == d.type) return &d;
  return nullptr;
}

std::string json_quoted(const std::string& s) {
  // Names come from untrusted files: dump() escapes control characters and quotes.
  // Invalid UTF-8 is replaced so that building the message itself cannot throw.
  return json(s).dump(-1, ' ', false, json::error_handler_t::replace);
}

[[noreturn]] void fail_file(const std::string& path, const std::string& what) {
  throw Error("safetensors file '" + path + "': " + what);
}

[[noreturn]] void fail_tensor(const std::string& path, const std::string& name,
                              const std::string& what) {
  throw Error("safetensors file '" + path + "': tensor " + json_quoted(name) + ": " + what);
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

/// a * b into *out, false on int64 overflow (a, b >= 0).
bool mul_ok(int64_t a, int64_t b, int64_t* out) {
  if (a != 0 && b > std::numeric_limits<int64_t>::max() / a) return false;
  *out = a * b;
  return true;
}

/// Structural facts gathered while nlohmann parses the header (the DOM alone cannot tell
/// duplicate keys: it keeps one of them silently).
struct HeaderScan {
  std::vector<std::set<std::string>> keys;  // keys seen per object nesting level 0..2
  std::string entry;                        // current top-level key
  std::string duplicate;                    // first duplicate key found (with its entry)
  bool duplicate_found = false;
  bool too_deep = false;
  bool too_long = false;
  std::string problem_entry;
  size_t array_len = 0;
};

struct Entry {
  std::string name;
  const DtypeInfo* dtype = nullptr;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};

/// Parses and validates the header bytes into entries + metadata. `data_size` is the size of
/// the data buffer that follows the header.
void parse_header(const std::string& path, const std::string& text, uint64_t data_size,
                  std::vector<Entry>* entries, std::map<std::string, std::string>* metadata) {
  HeaderScan scan;
  // Depths as nlohmann reports them: the root object starts at 0, its keys are at 1, an
  // entry object starts at 1 with keys at 2, `shape` starts at 2 with elements at 3.
  json::parser_callback_t cb = [&scan](int depth, json::parse_event_t ev, json& parsed) {
    switch (ev) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (depth > 2) {  // no valid header nests this deep: discard, report after parsing
          if (!scan.too_deep) scan.problem_entry = scan.entry;
          scan.too_deep = true;
          return false;
        }
        if (depth == 2) scan.array_len = 0;
        if (ev == json::parse_event_t::object_start) {
          if (scan.keys.size() < static_cast<size_t>(depth) + 1) scan.keys.resize(depth + 1);
          scan.keys[depth].clear();
        }
        return true;
      case json::parse_event_t::key: {
        if (depth < 1 || static_cast<size_t>(depth) > scan.keys.size()) return true;
        const auto& k = parsed.get_ref<const std::string&>();
        if (depth == 1) scan.entry = k;
        if (!scan.keys[depth - 1].insert(k).second && !scan.duplicate_found) {
          scan.duplicate_found = true;
          scan.duplicate = depth == 1 ? json_quoted(k) : json_quoted(k) + " in entry " + json_quoted(scan.entry);
        }
        return true;
      }
      case json::parse_event_t::value:
        if (depth == 3 && ++scan.array_len > kMaxArrayLength) {
          if (!scan.too_long) scan.problem_entry = scan.entry;
          scan.too_long = true;
          return false;
        }
        return true;
      default:
        return true;
    }
  };

  json header;
  try {
    header = json::parse(text.begin(), text.end(), cb);
  } catch (const json::exception& e) {
    fail_file(path, std::string("header is not valid JSON (") + e.what() + ")");
  }
  if (scan.duplicate_found) fail_file(path, "duplicate key " + scan.duplicate + " in the header");
  if (scan.too_deep)
    fail_tensor(path, scan.problem_entry, "header entry nests deeper than a safetensors entry can");
  if (scan.too_long)
    fail_tensor(path, scan.problem_entry,
                "array longer than " + std::to_string(kMaxArrayLength) + " elements");
  if (!header.is_object()) fail_file(path, "header is not a JSON object");

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == kMetadataKey) {
      if (!v.is_object()) fail_file(path, "\"__metadata__\" is not an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          fail_file(path, "\"__metadata__\" value for " + json_quoted(m.key()) +
                              " is not a string (" + m.value().type_name() + ")");
        (*metadata)[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object()) fail_tensor(path, name, std::string("entry is not an object (") + v.type_name() + ")");
    for (auto f = v.begin(); f != v.end(); ++f)
      if (f.key() != "dtype" && f.key() != "shape" && f.key() != "data_offsets")
        fail_tensor(path, name, "unknown field " + json_quoted(f.key()));
    for (const char* field : {"dtype", "shape", "data_offsets"})
      if (!v.contains(field)) fail_tensor(path, name, std::string("missing field \"") + field + "\"");

    Entry e;
    e.name = name;
    const json& dt = v["dtype"];
    if (!dt.is_string()) fail_tensor(path, name, "\"dtype\" is not a string");
    e.dtype = dtype_by_name(dt.get<std::string>());
    if (!e.dtype)
      fail_tensor(path, name, "unknown dtype " + json_quoted(dt.get<std::string>()) +
                                  " (supported: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)");

    const json& sh = v["shape"];
    if (!sh.is_array()) fail_tensor(path, name, "\"shape\" is not an array");
    int64_t numel = 1, bound = 1;  // bound: product of max(dim, 1), what strides need
    for (const json& d : sh) {
      if (d.is_number_integer() && !d.is_number_unsigned())
        fail_tensor(path, name, "\"shape\" has a negative dimension " + d.dump());
      if (!d.is_number_unsigned())
        fail_tensor(path, name, "\"shape\" element " + d.dump() + " is not a non-negative integer");
      const uint64_t u = d.get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        fail_tensor(path, name, "\"shape\" dimension " + d.dump() + " overflows int64");
      const auto dim = static_cast<int64_t>(u);
      if (!mul_ok(numel, dim, &numel) || !mul_ok(bound, std::max<int64_t>(dim, 1), &bound))
        fail_tensor(path, name, "element count of shape " + sh.dump() + " overflows int64");
      e.shape.push_back(dim);
    }
    int64_t nbytes = 0, bound_bytes = 0;
    if (!mul_ok(numel, e.dtype->size, &nbytes) || !mul_ok(bound, e.dtype->size, &bound_bytes))
      fail_tensor(path, name, "byte size of shape " + sh.dump() + " overflows int64");

    const json& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
        !off[1].is_number_unsigned())
      fail_tensor(path, name, "\"data_offsets\" is not two non-negative integers: " + off.dump());
    e.begin = off[0].get<uint64_t>();
    e.end = off[1].get<uint64_t>();
    if (e.begin > e.end)
      fail_tensor(path, name, "\"data_offsets\" are reversed: begin " + std::to_string(e.begin) +
                                  " > end " + std::to_string(e.end));
    if (e.end > data_size)
      fail_tensor(path, name, "\"data_offsets\" [" + std::to_string(e.begin) + ", " +
                                  std::to_string(e.end) + "] reach beyond the data buffer (" +
                                  std::to_string(data_size) + " bytes): file truncated or offsets corrupt");
    if (e.end - e.begin != static_cast<uint64_t>(nbytes))
      fail_tensor(path, name, "size mismatch: data_offsets span " + std::to_string(e.end - e.begin) +
                                  " bytes but shape " + shape_str(e.shape) + " x " + e.dtype->name +
                                  " needs " + std::to_string(nbytes));
    entries->push_back(std::move(e));
  }

  // No two tensors may share bytes. Empty tensors occupy no bytes and overlap nothing.
  std::vector<const Entry*> order;
  for (const auto& e : *entries)
    if (e.end > e.begin) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  for (size_t i = 1; i < order.size(); ++i)
    if (order[i]->begin < order[i - 1]->end)
      fail_tensor(path, order[i]->name,
                  "\"data_offsets\" [" + std::to_string(order[i]->begin) + ", " +
                      std::to_string(order[i]->end) + "] overlap those of tensor " +
                      json_quoted(order[i - 1]->name) + " [" + std::to_string(order[i - 1]->begin) +
                      ", " + std::to_string(order[i - 1]->end) + "]");
}

std::string errno_str() { return std::strerror(errno); }

}  // namespace

SafetensorsFile load_safetensors(const std::string& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status))
    fail_file(path, "cannot open: " + (ec ? ec.message() : std::string("no such file")));
  if (!std::filesystem::is_regular_file(status)) fail_file(path, "not a regular file");
  const uint64_t file_size = std::filesystem::file_size(path, ec);
  if (ec) fail_file(path, "cannot read its size: " + ec.message());

  std::ifstream in(path, std::ios::binary);
  if (!in) fail_file(path, "cannot open: " + errno_str());
  if (file_size < 8)
    fail_file(path, "too short: " + std::to_string(file_size) +
                        " bytes, shorter than the 8-byte header length");

  unsigned char len_bytes[8];
  if (!in.read(reinterpret_cast<char*>(len_bytes), 8)) fail_file(path, "truncated: cannot read the header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len_bytes[i];  // little-endian u64
  if (n > kMaxHeaderBytes)
    fail_file(path, "header length " + std::to_string(n) + " exceeds the limit of " +
                        std::to_string(kMaxHeaderBytes) + " bytes");
  if (n > file_size - 8)
    fail_file(path, "header length " + std::to_string(n) + " exceeds the file size (" +
                        std::to_string(file_size) + " bytes): file truncated or header corrupt");

  std::string text(static_cast<size_t>(n), '\0');
  if (!in.read(text.data(), static_cast<std::streamsize>(n)))
    fail_file(path, "truncated while reading the " + std::to_string(n) + "-byte header");

  const uint64_t data_start = 8 + n;
  const uint64_t data_size = file_size - data_start;
  std::vector<Entry> entries;
  SafetensorsFile out;
  parse_header(path, text, data_size, &entries, &out.metadata);

  // Read each tensor straight into its own storage, in file order: peak memory is the
  // tensors themselves, not the tensors plus a copy of the whole file. All offsets were
  // checked against the file size above; gcount guards against a file shrinking meanwhile.
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
  for (const Entry& e : entries) {
    torch::Tensor t = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype->type));
    const uint64_t nbytes = e.end - e.begin;
    if (nbytes > 0) {
      in.seekg(static_cast<std::streamoff>(data_start + e.begin));
      in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(nbytes));
      if (!in || static_cast<uint64_t>(in.gcount()) != nbytes)
        fail_tensor(path, e.name, "file truncated while reading its data");
    }
    if (e.dtype->type == torch::kBool) {
      // A bool byte other than 0/1 is not a valid C++ bool; refuse rather than misbehave.
      const auto* p = static_cast<const uint8_t*>(t.data_ptr());
      for (uint64_t i = 0; i < nbytes; ++i)
        if (p[i] > 1)
          fail_tensor(path, e.name, "BOOL byte " + std::to_string(p[i]) + " at element " +
                                        std::to_string(i) + " is neither 0 nor 1");
    }
    out.tensors.emplace(e.name, std::move(t));
  }
  return out;
}

void save_safetensors(const std::string& path, const TensorMap& tensors,
                      const std::map<std::string, std::string>& metadata) {
  auto fail = [&path](const std::string& what) -> void {
    throw Error("save_safetensors '" + path + "': " + what);
  };

  // CPU, contiguous copies in key order; offsets laid out contiguously in that order.
  std::vector<torch::Tensor> data;
  data.reserve(tensors.size());
  json header = json::object();
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name == kMetadataKey) fail("a tensor may not be named \"__metadata__\"");
    if (!tensor.defined()) fail("tensor " + json_quoted(name) + " is undefined");
    if (tensor.layout() != torch::kStrided)
      fail("tensor " + json_quoted(name) + " is not a dense (strided) tensor");
    const DtypeInfo* d = dtype_by_type(tensor.scalar_type());
    if (!d)
      fail("tensor " + json_quoted(name) + " has unsupported dtype " +
           std::string(c10::toString(tensor.scalar_type())));
    torch::Tensor t = tensor.detach().to(torch::kCPU).contiguous();
    const auto nbytes = static_cast<uint64_t>(t.numel()) * static_cast<uint64_t>(d->size);
    header[name] = {{"dtype", d->name},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    data.push_back(std::move(t));
  }
  if (!metadata.empty()) header[kMetadataKey] = metadata;

  std::string text;
  try {
    text = header.dump();  // std::map-backed object: keys come out sorted
  } catch (const json::exception& e) {
    fail(std::string("a tensor name or metadata string is not valid UTF-8 (") + e.what() + ")");
  }
  // Pad with spaces so the data buffer starts 8-byte aligned, as the reference writer does.
  text.append((8 - text.size() % 8) % 8, ' ');
  unsigned char len_bytes[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<unsigned char>(n >> (8 * i));

  // Atomic replace (core/files.h): the old file stays whole if anything fails.
  std::vector<std::string_view> parts = {std::string_view(reinterpret_cast<const char*>(len_bytes), 8), text};
  for (const auto& t : data)
    if (t.numel() > 0) parts.emplace_back(static_cast<const char*>(t.data_ptr()), size_t(t.numel()) * size_t(t.element_size()));
  write_file_atomic(path, parts);
}

}  // namespace florence::core
