// torchvision Swin -> florence Swin key mapping; see swin_import.h for the table.
#include "florence/vision/swin_import.h"

#include "florence/core/error.h"

#include <fmt/format.h>

#include <cctype>
#include <optional>
#include <string>
#include <vector>

namespace florence::vision {

namespace {

std::vector<std::string> split_dots(const std::string& s) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (;;) {
    const size_t dot = s.find('.', start);
    parts.push_back(s.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return parts;
}

std::optional<int> parse_index(const std::string& s) {
  if (s.empty() || s.size() > 6) return std::nullopt;
  for (char c : s)
    if (!std::isdigit(static_cast<unsigned char>(c))) return std::nullopt;
  return std::stoi(s);
}

std::string join_from(const std::vector<std::string>& parts, size_t from) {
  std::string out;
  for (size_t i = from; i < parts.size(); ++i) {
    if (!out.empty()) out += '.';
    out += parts[i];
  }
  return out;
}

bool is_param_leaf(const std::string& s) { return s == "weight" || s == "bias"; }

// Maps the part of a block key after `features.{m}.{j}.`; empty string = drop; nullopt = unknown.
std::optional<std::string> map_block_suffix(const std::vector<std::string>& p) {
  const std::string rest = join_from(p, 0);
  if (p.size() == 2 && (p[0] == "norm1" || p[0] == "norm2") && is_param_leaf(p[1])) return rest;
  if (p.size() == 3 && p[0] == "attn" && (p[1] == "qkv" || p[1] == "proj") && is_param_leaf(p[2])) return rest;
  if (p.size() == 2 && p[0] == "attn" && p[1] == "relative_position_bias_table") return rest;
  if (p.size() == 2 && p[0] == "attn" && p[1] == "relative_position_index") return std::string();
  if (p.size() == 3 && p[0] == "mlp" && is_param_leaf(p[2])) {
    if (p[1] == "0") return "mlp.fc1." + p[2];
    if (p[1] == "3") return "mlp.fc2." + p[2];
  }
  return std::nullopt;
}

}  // namespace

core::TensorMap map_torchvision_swin(const core::TensorMap& tv, bool keep_head) {
  core::TensorMap out;
  for (const auto& item : tv) {
    const std::string& key = item.first;  // a named reference: lambdas cannot capture structured bindings (C++17)
    const torch::Tensor& tensor = item.second;
    auto unknown = [&]() {
      return Error(fmt::format("map_torchvision_swin: cannot place key '{}' (not a torchvision Swin V1 key)", key));
    };
    const auto p = split_dots(key);
    std::string mapped;
    if (p.size() == 2 && (p[0] == "norm" || p[0] == "head") && is_param_leaf(p[1])) {
      if (p[0] == "head" && !keep_head) continue;
      mapped = key;
    } else if (p.size() >= 3 && p[0] == "features") {
      const auto m = parse_index(p[1]);
      if (!m) throw unknown();
      if (*m == 0) {
        if (p.size() != 4 || !is_param_leaf(p[3])) throw unknown();
        if (p[2] == "0") mapped = "patch_embed.proj." + p[3];
        else if (p[2] == "2") mapped = "patch_embed.norm." + p[3];
        else throw unknown();
      } else if (*m % 2 == 1) {  // a stage: features.{2k+1}.{j}.<block key>
        const auto j = parse_index(p[2]);
        if (!j || p.size() < 5) throw unknown();
        const auto suffix = map_block_suffix(std::vector<std::string>(p.begin() + 3, p.end()));
        if (!suffix) throw unknown();
        if (suffix->empty()) continue;  // derived buffer
        mapped = fmt::format("layers.{}.blocks.{}.{}", (*m - 1) / 2, *j, *suffix);
      } else {  // patch merging: features.{2k+2}.{reduction,norm}.<leaf>
        if (p.size() != 4 || (p[2] != "reduction" && p[2] != "norm") || !is_param_leaf(p[3])) throw unknown();
        mapped = fmt::format("layers.{}.downsample.{}.{}", *m / 2 - 1, p[2], p[3]);
      }
    } else {
      throw unknown();
    }
    if (!out.emplace(mapped, tensor).second) {
      throw Error(fmt::format("map_torchvision_swin: two keys map to '{}' (second: '{}')", mapped, key));
    }
  }
  return out;
}

}  // namespace florence::vision
