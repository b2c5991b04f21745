// The one way cfs parses JSON documents (repository metadata, OCI manifests, configs,
// indexes, skopeo replies): bounded nesting, and nlohmann's exceptions turned into cfs::Error.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <string>
#include <string_view>

namespace cfs::store {

// Deeper than any OCI or composefs document nests (about 6 levels); far below the depth at
// which nlohmann's recursive serialiser and comparisons exhaust the stack, and small enough
// that a hostile document cannot make a later re-serialisation blow up.
inline constexpr size_t kMaxJsonDepth = 128;

// The largest metadata document cfs reads (manifest, config, index.json, meta.json); the
// registries' own limit for manifests is 4 MiB.
inline constexpr size_t kMaxJsonDocument = 16u << 20;

// Throws cfs::Error "<what>: ..." unless text is one JSON value nested at most kMaxJsonDepth
// arrays/objects deep and no larger than kMaxJsonDocument bytes.
void check_json_bounds(std::string_view text, const std::string& what);

// check_json_bounds, then the parsed document; malformed JSON is a cfs::Error naming what.
nlohmann::json parse_json_bounded(std::string_view text, const std::string& what);

}  // namespace cfs::store
