// --json output. Names that reach it come from the repository's directories and from images
// (tags, refs, object file names, fsck messages) and need not be UTF-8, which JSON text must
// be: nlohmann's default is to throw type_error 316. Invalid bytes become U+FFFD instead, so
// the output stays valid JSON and the command still reports.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

namespace cfs::cli {

template <class Json>
std::string json_text(const Json& j) {
  return j.dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
}

}  // namespace cfs::cli
