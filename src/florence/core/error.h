#pragma once
// florence::Error is the one exception type the library throws for bad input
// (malformed files, unknown config names, shape mismatches). Its message always
// names the offending thing (file, key, field) so a user can act on it.
#include <stdexcept>
#include <string>

namespace florence {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace florence
