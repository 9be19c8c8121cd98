#pragma once
// A typed read of one config field for the vision configs' from_json (swin.cpp, video_swin.cpp).
#include "florence/core/error.h"
#include "florence/core/json_get.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <string>

namespace florence::vision::detail {

/// `j` as a T. Throws florence::Error "<owner>: field '<name>' has the wrong type (...)" when it is not one.
/// Numbers are range-checked (core/json_get.h): 1e30 for an int field is an error, not a wrapped value.
template <typename T>
T json_field(const nlohmann::json& j, const char* owner, const std::string& name) {
  return core::json_get<T>(j, fmt::format("{}: field '{}'", owner, name));
}

}  // namespace florence::vision::detail
