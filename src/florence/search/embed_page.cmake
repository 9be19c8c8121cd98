# Turns page.html into a C++ source defining florence::search::search_page() (server.h), so the
# `florence` binary carries its web page. Run by CMake at build time:
#   cmake -DIN=page.html -DOUT=search_page.cpp -P embed_page.cmake
file(READ "${IN}" page)
string(FIND "${page}" ")florence_page\"" clash)
if(NOT clash EQUAL -1)
  message(FATAL_ERROR "${IN} contains the raw-string delimiter )florence_page\"")
endif()
file(WRITE "${OUT}.tmp" "// Generated from src/florence/search/page.html by embed_page.cmake; do not edit.
#include <string>

namespace florence::search {

const std::string& search_page() {
  static const std::string page = R\"florence_page(${page})florence_page\";
  return page;
}

}  // namespace florence::search
")
file(RENAME "${OUT}.tmp" "${OUT}")
