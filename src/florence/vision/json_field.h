#pragma once
// A typed read of one config field for the vision configs' from_json (swin.cpp, video_swin.cpp).
#include "florence/core/error.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <string>

namespace florence::vision::detail {

/// `j` as a T. Throws florence::Error "<owner>: field '<name>' has the wrong type (...)" when it is not one.
template <typename T>
T json_field(const nlohmann::json& j, const char* owner, const std::string& name) {
  try {
    return j.get<T>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: field '{}' has the wrong type ({}): {}", owner, name, j.type_name(), e.what()));
  }
}

}  // namespace florence::vision::detail
