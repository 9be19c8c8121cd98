#pragma once
// Reading JSON values as C++ numbers without undefined behaviour. nlohmann's get<int>() of 1e30 or of
// 3000000000 casts out of range (for a float: undefined behaviour; found by fuzzing model configs,
// fuzz/regressions/model_config); these reads check the kind and the range first.
#include <nlohmann/json.hpp>

#include <array>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "florence/core/error.h"

namespace florence::core {

namespace detail {
template <class T>
struct is_vector : std::false_type {};
template <class U, class A>
struct is_vector<std::vector<U, A>> : std::true_type {};
template <class T>
struct is_std_array : std::false_type {};
template <class U, size_t N>
struct is_std_array<std::array<U, N>> : std::true_type {};
}  // namespace detail

/// `v` as a T: bool from a JSON boolean; an integer type from a JSON integer, or a float with an
/// integral value, inside T's range; a floating type from any finite JSON number inside T's range;
/// std::vector<U> / std::array<U, N> element by element; anything else through nlohmann's get<T>().
/// Throws florence::Error "WHAT: ..." naming the kind found or the range.
template <typename T>
T json_get(const nlohmann::json& v, const std::string& what) {
  if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean()) throw Error(what + ": expected true or false, got " + std::string(v.type_name()));
    return v.get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    if (v.is_number_integer()) {
      if (v.is_number_unsigned()) {
        const auto u = v.get<uint64_t>();
        if (u > static_cast<uint64_t>(std::numeric_limits<T>::max())) throw Error(what + ": " + v.dump() + " is out of range");
        return static_cast<T>(u);
      }
      const auto i = v.get<int64_t>();
      if (i < static_cast<int64_t>(std::numeric_limits<T>::min()) ||
          (i > 0 && static_cast<uint64_t>(i) > static_cast<uint64_t>(std::numeric_limits<T>::max())))
        throw Error(what + ": " + v.dump() + " is out of range");
      return static_cast<T>(i);
    }
    if (v.is_number_float()) {
      const double d = v.get<double>();
      if (!std::isfinite(d) || d != std::floor(d) || d < double(std::numeric_limits<T>::min()) ||
          d >= std::ldexp(1.0, std::numeric_limits<T>::digits))
        throw Error(what + ": " + v.dump() + " is not an integer in range");
      return static_cast<T>(d);
    }
    throw Error(what + ": expected an integer, got " + std::string(v.type_name()));
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!v.is_number()) throw Error(what + ": expected a number, got " + std::string(v.type_name()));
    const double d = v.get<double>();
    if (!std::isfinite(d) || std::fabs(d) > double(std::numeric_limits<T>::max()))
      throw Error(what + ": " + v.dump() + " is not a finite number in range");
    return static_cast<T>(d);
  } else if constexpr (detail::is_vector<T>::value) {
    if (!v.is_array()) throw Error(what + ": expected an array, got " + std::string(v.type_name()));
    T out;
    for (size_t i = 0; i < v.size(); ++i)
      out.push_back(json_get<typename T::value_type>(v[i], what + "[" + std::to_string(i) + "]"));
    return out;
  } else if constexpr (detail::is_std_array<T>::value) {
    if (!v.is_array() || v.size() != std::tuple_size<T>::value)
      throw Error(what + ": expected an array of " + std::to_string(std::tuple_size<T>::value) + ", got " + v.dump());
    T out{};
    for (size_t i = 0; i < out.size(); ++i)
      out[i] = json_get<typename T::value_type>(v[i], what + "[" + std::to_string(i) + "]");
    return out;
  } else {
    try {
      return v.get<T>();
    } catch (const nlohmann::json::exception& e) {
      throw Error(what + ": " + e.what());
    }
  }
}

}  // namespace florence::core
