// What the registry client reads besides HTTP: image references, registries.conf (v2 TOML),
// auth.json credentials and WWW-Authenticate challenges. Pure functions over text and files,
// so they are tested without a network.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cfs::oci::registry {

// docker://[REGISTRY/]REPOSITORY[:TAG][@DIGEST], the "docker://" already removed.
struct Reference {
  std::string registry;    // "quay.io", "127.0.0.1:5000"; "docker.io" for Docker Hub
  std::string repository;  // "library/debian"
  std::string tag;         // empty when pulled by digest only
  std::string digest;      // "sha256:…" or empty
  // "registry/repository" (what registries.conf prefixes and auth.json keys match).
  std::string name() const { return registry + "/" + repository; }
  // "tag" or "digest", for the manifest URL.
  std::string manifest_ref() const { return digest.empty() ? tag : digest; }
};
// Throws cfs::Error naming spec when it is not a valid reference.
Reference parse_reference(std::string_view spec);

// One place to pull from: a mirror or the registry itself.
struct Endpoint {
  std::string host;        // "host[:port]" as in URLs; Docker Hub is registry-1.docker.io
  std::string repository;  // after registries.conf's prefix rewriting
  bool insecure = false;   // http allowed and TLS not verified
  bool mirror = false;
};

struct RegistryEntry {
  // What it matches: "example.com/ns", "example.com", or "*.example.com" (any subdomain of
  // example.com, not example.com itself); defaults to location.
  std::string prefix;
  // What the matched part of the name is rewritten to; empty for a wildcard prefix without a
  // location (the name is used as it is, the entry's other settings apply).
  std::string location;
  bool insecure = false;
  bool blocked = false;
  bool mirror_by_digest_only = false;  // mirrors only for references with a digest
  bool wildcard() const { return prefix.starts_with("*."); }
  struct Mirror {
    std::string location;
    bool insecure = false;
    std::string pull_from_mirror;  // "", "all", "digest-only", "tag-only"
  };
  std::vector<Mirror> mirrors;
};

class RegistriesConf {
 public:
  // Parses one file's text (what names it in errors); entries of later files with the same
  // prefix replace earlier ones.
  void add(std::string_view toml_text, const std::string& what);
  // The system files: $CONTAINERS_REGISTRIES_CONF alone if set, else
  // ~/.config/containers/registries.conf if it exists, else /etc/containers/registries.conf;
  // then the *.conf drop-ins of /etc/containers/registries.conf.d and
  // ~/.config/containers/registries.conf.d in name order. Missing files are skipped.
  static RegistriesConf load_default();
  // The entry for the reference: the longest match of "registry/repository" (a prefix matches
  // at a path-component boundary; a wildcard prefix matches the host name); on a tie a plain
  // prefix wins over a wildcard, and a longer wildcard over a shorter one. nullptr if none.
  const RegistryEntry* find(const Reference& ref) const;
  // Mirrors first (in file order), then the registry; throws if the entry is blocked.
  std::vector<Endpoint> endpoints(const Reference& ref) const;
  const std::vector<RegistryEntry>& entries() const { return entries_; }

 private:
  std::vector<RegistryEntry> entries_;
};

struct Credentials {
  std::string username;
  std::string password;
  // An identity token (auth.json "identitytoken", or a helper's "<token>" user): exchanged at
  // the registry's token server for access tokens (OAuth2 grant_type=refresh_token).
  std::string identity_token;
  // find_credentials only: the credentials are docker-credential-<helper>'s ("credHelpers"
  // for the registry, else "credsStore"); lookup_credentials runs it.
  std::string helper;
  std::string source;  // the file (and helper) they came from
};

// The auth files consulted, in order: $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
// ~/.config/containers/auth.json, ~/.docker/config.json.
std::vector<std::string> default_auth_files();
// Credentials for "registry/repository" from one auth file's JSON text: a "credHelpers" entry
// for the registry host first; then the most specific key of "auths" ("reg/ns/repo", "reg/ns",
// "reg"; legacy "https://reg/v1/" keys match the registry) with an "auth" (user:password) or an
// "identitytoken"; then the "credsStore" helper. nullopt if the file has none for it.
std::optional<Credentials> find_credentials(std::string_view json_text, const std::string& file,
                                            const Reference& ref);
// The first credentials any of the files holds; unreadable JSON is an error naming the file.
// run_helpers: a credential helper is run (one without credentials for the registry defers to
// the next file; a failing one is an error naming the file and the helper); otherwise the
// credentials name it (helper) for run_credential_helper later.
std::optional<Credentials> lookup_credentials(const std::vector<std::string>& files,
                                              const Reference& ref, bool run_helpers = true);

// A WWW-Authenticate challenge: the scheme ("bearer", lowercase) and its parameters.
struct Challenge {
  std::string scheme;
  std::map<std::string, std::string> params;  // lowercase keys
};
// Parses the first challenge of a header value (RFC 7235: scheme, then key="quoted value" or
// key=token pairs). Throws cfs::Error naming what when it cannot be parsed.
Challenge parse_challenge(std::string_view header, const std::string& what);

// true for 127.0.0.0/8, ::1 and localhost (served over http without registries.conf).
bool is_loopback_host(std::string_view host_port);

}  // namespace cfs::oci::registry
