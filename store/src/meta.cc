#include "cfs/store/meta.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "cfs/error.h"
#include "json_util.h"

namespace cfs::store {

namespace {

using ordered_json = nlohmann::ordered_json;

// Features this implementation understands, per class.
constexpr std::string_view kKnownReadOnlyCompatible[] = {kFeatureV1Erofs};

template <size_t N>
bool known(const std::string_view (&table)[N], const std::string& feature) {
  return std::find(std::begin(table), std::end(table), feature) != std::end(table);
}
// No incompatible features exist yet; any listed one is from a newer implementation.
bool known_incompatible(const std::string&) {
  return false;
}

std::vector<std::string> string_list(const nlohmann::json& features, const char* key,
                                     const std::string& what) {
  std::vector<std::string> out;
  if (!features.contains(key)) return out;
  const auto& list = features.at(key);
  if (!list.is_array()) throw Error(what + ": features." + key + " is not an array");
  for (const auto& item : list) {
    if (!item.is_string()) throw Error(what + ": features." + key + " holds a non-string");
    out.push_back(item.get<std::string>());
  }
  return out;
}

}  // namespace

std::vector<uint32_t> RepoMeta::erofs_versions() const {
  std::vector<uint32_t> out{erofs_default};
  std::vector<uint32_t> extra = erofs_extra;
  std::sort(extra.begin(), extra.end());
  for (uint32_t v : extra)
    if (std::find(out.begin(), out.end(), v) == out.end()) out.push_back(v);
  return out;
}

RepoMeta RepoMeta::for_erofs_version(HashAlgorithm algorithm, uint32_t version) {
  if (version > kMaxErofsVersion)
    throw Error("EROFS format " + std::to_string(version) + " is not supported (0, 1 or 2)");
  RepoMeta meta;
  meta.algorithm = algorithm;
  meta.erofs_default = version;
  meta.read_only_compatible.clear();
  if (version == 1) meta.read_only_compatible.emplace_back(kFeatureV1Erofs);
  return meta;
}

std::string RepoMeta::algorithm_string() const {
  return "fsverity-" + std::string(algorithm_name(algorithm)) + "-12";
}

std::string RepoMeta::to_json() const {
  ordered_json j;
  j["version"] = version;
  j["algorithm"] = algorithm_string();
  j["features"]["compatible"] = compatible;
  j["features"]["read-only-compatible"] = read_only_compatible;
  j["features"]["incompatible"] = incompatible;
  j["erofs_formats"]["default"] = erofs_default;
  // composefs-rs leaves an empty "extra" out (and writes the set in ascending order).
  if (!erofs_extra.empty()) {
    std::vector<uint32_t> extra = erofs_extra;
    std::sort(extra.begin(), extra.end());
    extra.erase(std::unique(extra.begin(), extra.end()), extra.end());
    j["erofs_formats"]["extra"] = extra;
  }
  return j.dump(2) + "\n";
}

HashAlgorithm parse_algorithm_string(std::string_view s, const std::string& what) {
  constexpr std::string_view prefix = "fsverity-";
  if (s.starts_with(prefix)) {
    std::string_view rest = s.substr(prefix.size());
    auto dash = rest.rfind('-');
    if (dash != std::string_view::npos) {
      auto alg = parse_algorithm_name(rest.substr(0, dash));
      std::string_view block = rest.substr(dash + 1);
      if (alg && block == "12") return *alg;
      if (alg) {
        throw Error(what + ": algorithm '" + std::string(s) +
                    "' uses a block size other than 4096 (lg 12), which is not supported");
      }
    }
  }
  throw Error(what + ": unknown algorithm '" + std::string(s) +
              "' (expected fsverity-sha256-12 or fsverity-sha512-12)");
}

RepoMeta parse_meta(std::string_view text, const std::string& what) {
  nlohmann::json j = parse_json_bounded(text, what);
  if (!j.is_object()) throw Error(what + ": not a JSON object");
  RepoMeta meta;
  try {
    if (!j.contains("version") || !j.at("version").is_number_unsigned())
      throw Error(what + ": missing or non-numeric \"version\"");
    uint64_t version = j.at("version").get<uint64_t>();
    if (version != kRepoFormatVersion) {
      throw Error(what + ": repository format version " + std::to_string(version) +
                  " is not supported (this cfs knows version " +
                  std::to_string(kRepoFormatVersion) + ")");
    }
    meta.version = kRepoFormatVersion;
    if (!j.contains("algorithm") || !j.at("algorithm").is_string())
      throw Error(what + ": missing or non-string \"algorithm\"");
    meta.algorithm = parse_algorithm_string(j.at("algorithm").get<std::string>(), what);

    meta.read_only_compatible.clear();
    if (j.contains("features")) {
      const auto& features = j.at("features");
      if (!features.is_object()) throw Error(what + ": \"features\" is not an object");
      meta.compatible = string_list(features, "compatible", what);
      meta.read_only_compatible = string_list(features, "read-only-compatible", what);
      meta.incompatible = string_list(features, "incompatible", what);
    }
    for (const auto& feature : meta.incompatible) {
      if (!known_incompatible(feature))
        throw Error(what + ": repository uses unknown incompatible feature '" + feature +
                    "'; refusing to open it");
    }

    auto format = [&](const nlohmann::json& v, const char* field) {
      if (!v.is_number_unsigned())
        throw Error(what + ": erofs_formats." + field + " is not a format number");
      uint64_t n = v.get<uint64_t>();
      if (n > kMaxErofsVersion)
        throw Error(what + ": erofs_formats." + field + " names EROFS format " + std::to_string(n) +
                    ", which this cfs does not know (0, 1 or 2)");
      return static_cast<uint32_t>(n);
    };
    bool explicit_formats = false;
    if (j.contains("erofs_formats")) {
      const auto& formats = j.at("erofs_formats");
      if (!formats.is_object() || !formats.contains("default"))
        throw Error(what + ": \"erofs_formats\" lacks a numeric \"default\"");
      meta.erofs_default = format(formats.at("default"), "default");
      meta.erofs_extra.clear();
      if (formats.contains("extra")) {
        if (!formats.at("extra").is_array())
          throw Error(what + ": erofs_formats.extra is not an array");
        for (const auto& v : formats.at("extra")) meta.erofs_extra.push_back(format(v, "extra"));
      }
      // composefs-rs cannot tell {"default": 2} from an absent field (its serde default) and
      // lets the v1_erofs flag decide for both.
      explicit_formats = meta.erofs_default != 2 || !meta.erofs_extra.empty();
    }
    if (!explicit_formats) {
      // Older composefs-rs repositories: V2 images unless the v1_erofs flag says V1.
      bool v1 = std::find(meta.read_only_compatible.begin(), meta.read_only_compatible.end(),
                          kFeatureV1Erofs) != meta.read_only_compatible.end();
      meta.erofs_default = v1 ? 1 : 2;
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(what + ": " + e.what());
  }
  return meta;
}

bool meta_allows_writing(const RepoMeta& meta) {
  return std::all_of(meta.read_only_compatible.begin(), meta.read_only_compatible.end(),
                     [](const std::string& f) { return known(kKnownReadOnlyCompatible, f); });
}

}  // namespace cfs::store
