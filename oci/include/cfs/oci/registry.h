// A native OCI distribution client (registry HTTP API v2 on libcurl): `docker://` sources
// without skopeo. Manifests by tag or digest (image indexes resolved to linux/<host arch>),
// blobs streamed with ranged GETs that resume where a broken transfer stopped, bearer-token
// and basic auth from the usual auth.json files (credential helpers, identity tokens),
// registries.conf mirrors (a blob a mirror lacks comes from the next location) and insecure
// registries (http and unverified TLS; always for 127.0.0.0/8 and localhost); connections
// are kept open between requests. Manifests fetched by digest are verified here; blob
// digests are verified by the pull as it streams.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cfs/oci/source.h"

namespace cfs::oci {

struct RegistryOptions {
  // Further attempts after a transport failure, a 429 or a 5xx answer (per request; a blob
  // transfer that made progress since its last failure gets them afresh).
  unsigned retries = 3;
  unsigned retry_delay_ms = 1000;  // before the first retry; doubled for each next one
  uint64_t max_rate = 0;           // bytes/s per transfer; 0: unlimited
  bool tls_verify = true;          // false: TLS certificates are not checked, http allowed
  // Auth files to consult in order (default: registry::default_auth_files()).
  std::optional<std::vector<std::string>> auth_files;
  // A registries.conf to read instead of the system's files.
  std::optional<std::string> registries_conf;
  // Retries and resumed transfers, for the user (called from any thread).
  std::function<void(const std::string&)> notice;
};

// reference: what follows "docker://" ([REGISTRY/]REPOSITORY[:TAG][@DIGEST]).
std::unique_ptr<ImageSource> open_registry_source(std::string_view reference,
                                                  const RegistryOptions& options = {});

}  // namespace cfs::oci
