#include "json_util.h"

#include "cfs/error.h"
#include "cfs/escape.h"

namespace cfs::store {

void check_json_bounds(std::string_view text, const std::string& what) {
  if (text.size() > kMaxJsonDocument)
    throw Error(what + ": JSON document of " + std::to_string(text.size()) +
                " bytes is larger than the limit of " + std::to_string(kMaxJsonDocument));
  // A scan before parsing: nlohmann's parser would build the whole tree first, and the
  // tree's depth is what later recursion (dump, comparison) pays for.
  size_t depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (in_string) {
      if (c == '\\')
        ++i;  // the escaped character cannot end the string
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth)
        throw Error(what + ": JSON nested deeper than " + std::to_string(kMaxJsonDepth) +
                    " levels");
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;  // unbalanced closers are the parser's to report
    }
  }
}

nlohmann::json parse_json_bounded(std::string_view text, const std::string& what) {
  check_json_bounds(text, what);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    // nlohmann quotes the offending token, which is untrusted input.
    throw Error(what + ": not valid JSON: " + escape_for_log(e.what()));
  }
}

}  // namespace cfs::store
