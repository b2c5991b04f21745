#include "registry_config.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <toml++/toml.h>
#include <algorithm>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "cfs/error.h"
#include "cfs/escape.h"
#include "cfs/fd.h"
#include "credential_helper.h"
#include "http.h"
#include "util.h"

namespace cfs::oci::registry {

namespace {

constexpr size_t kMaxConfigFile = 4u << 20;

bool is_lower_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

// Repository path components: lowercase alphanumerics joined by '.', '_', '__' or '-'s.
bool valid_repository(std::string_view repo) {
  if (repo.empty() || repo.size() > 255) return false;
  size_t start = 0;
  while (start <= repo.size()) {
    size_t slash = repo.find('/', start);
    std::string_view comp =
        repo.substr(start, slash == std::string_view::npos ? repo.npos : slash - start);
    if (comp.empty() || !is_lower_alnum(comp.front()) || !is_lower_alnum(comp.back())) return false;
    for (char c : comp)
      if (!is_lower_alnum(c) && c != '.' && c != '_' && c != '-') return false;
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return true;
}

bool valid_tag(std::string_view tag) {
  if (tag.empty() || tag.size() > 128) return false;
  for (size_t i = 0; i < tag.size(); ++i) {
    char c = tag[i];
    bool word = is_lower_alnum(c) || (c >= 'A' && c <= 'Z') || c == '_';
    if (!word && (i == 0 || (c != '.' && c != '-'))) return false;
  }
  return true;
}

bool valid_host(std::string_view host) {
  if (host.empty() || host.size() > 255) return false;
  for (char c : host) {
    bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == ':' ||
              c == '[' || c == ']';
    if (!ok) return false;
  }
  return true;
}

std::string home_dir() {
  const char* home = std::getenv("HOME");
  return home && *home ? home : "";
}

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// The file's text, or nullopt if it does not exist; other errors name the file.
std::optional<std::string> read_optional(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT || errno == ENOTDIR) return std::nullopt;
    throw_errno(path);
  }
  UniqueFd owned(fd);
  return read_fd(fd, path, kMaxConfigFile);
}

std::vector<std::string> conf_dropins(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.size() > 5 && name.ends_with(".conf")) out.push_back(dir + "/" + name);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

// A TOML member of the expected type, or fallback when absent; another type is an error.
template <typename T>
T toml_get(const toml::table& t, std::string_view key, T fallback, const std::string& what) {
  const toml::node* n = t.get(key);
  if (!n) return fallback;
  std::optional<T> v = n->value_exact<T>();
  if (!v) throw Error(what + ": '" + std::string(key) + "' has the wrong type");
  return *v;
}

// "host[/path]" with any "http(s)://" scheme and trailing slashes removed.
std::string strip_location(std::string loc) {
  for (std::string_view scheme : {"https://", "http://"})
    if (loc.starts_with(scheme)) loc.erase(0, scheme.size());
  while (loc.ends_with('/')) loc.pop_back();
  return loc;
}

// How many leading characters of name ("registry/repository") the prefix matches, 0 for none.
// A plain prefix matches the name itself or the name below it at a path-component boundary;
// "*.example.com" matches a registry host name that ends in ".example.com" with at least one
// more label before it (a port after it is not part of the match).
size_t prefix_match(const RegistryEntry& e, std::string_view name) {
  if (e.wildcard()) {
    std::string_view suffix = std::string_view(e.prefix).substr(1);  // ".example.com"
    std::string_view host = name.substr(0, name.find('/'));
    host = host.substr(0, host.find(':'));
    return host.size() > suffix.size() && host.ends_with(suffix) ? host.size() : 0;
  }
  std::string_view prefix = e.prefix;
  if (!name.starts_with(prefix)) return 0;
  if (name.size() == prefix.size() || name[prefix.size()] == '/' || prefix.ends_with('/'))
    return prefix.size();
  return 0;
}

// "*.host" with a host name after it and nothing else; a '*' anywhere else is an error.
void validate_prefix(const std::string& prefix, const std::string& what) {
  std::string_view rest = prefix;
  if (rest.starts_with("*.")) rest.remove_prefix(2);
  bool ok = !rest.empty() && rest.find('*') == std::string_view::npos;
  if (ok && prefix.starts_with("*."))
    ok = rest.find_first_of("/:@") == std::string_view::npos && rest.front() != '.' &&
         valid_host(rest);
  if (!ok)
    throw Error(what + ": prefix '" + escape_for_log(prefix) +
                "' is not valid (a wildcard is allowed only as a leading '*.' before a host "
                "name, as in '*.example.com')");
}

Endpoint make_endpoint(const std::string& rewritten, bool insecure, bool mirror,
                       const std::string& what) {
  auto slash = rewritten.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == rewritten.size())
    throw Error(what + ": '" + escape_for_log(rewritten) + "' is not REGISTRY/REPOSITORY");
  Endpoint e;
  e.host = rewritten.substr(0, slash);
  e.repository = rewritten.substr(slash + 1);
  if (e.host == "docker.io") e.host = "registry-1.docker.io";
  e.insecure = insecure || is_loopback_host(e.host);
  e.mirror = mirror;
  return e;
}

}  // namespace

Reference parse_reference(std::string_view spec) {
  std::string what = "docker://" + escape_for_log(spec);
  Reference ref;
  std::string_view rest = spec;
  if (auto at = rest.find('@'); at != std::string_view::npos) {
    ref.digest = std::string(rest.substr(at + 1));
    rest = rest.substr(0, at);
    validate_oci_digest(ref.digest, what);
  }
  auto last_slash = rest.rfind('/');
  auto colon = rest.rfind(':');
  if (colon != std::string_view::npos &&
      (last_slash == std::string_view::npos || colon > last_slash)) {
    ref.tag = std::string(rest.substr(colon + 1));
    rest = rest.substr(0, colon);
    if (!valid_tag(ref.tag))
      throw Error(what + ": '" + escape_for_log(ref.tag) + "' is not a valid tag");
  }
  auto first_slash = rest.find('/');
  std::string_view first = rest.substr(0, first_slash);
  if (first_slash != std::string_view::npos &&
      (first.find('.') != std::string_view::npos || first.find(':') != std::string_view::npos ||
       first == "localhost")) {
    ref.registry = std::string(first);
    ref.repository = std::string(rest.substr(first_slash + 1));
  } else {
    ref.registry = "docker.io";
    ref.repository = std::string(rest);
  }
  if (ref.registry == "index.docker.io") ref.registry = "docker.io";
  if (ref.registry == "docker.io" && ref.repository.find('/') == std::string::npos)
    ref.repository = "library/" + ref.repository;
  if (!valid_host(ref.registry))
    throw Error(what + ": '" + escape_for_log(ref.registry) + "' is not a registry host");
  if (!valid_repository(ref.repository))
    throw Error(what + ": '" + escape_for_log(ref.repository) +
                "' is not a repository name (lowercase components separated by '/')");
  if (ref.tag.empty() && ref.digest.empty()) ref.tag = "latest";
  return ref;
}

void RegistriesConf::add(std::string_view text, const std::string& what) {
  toml::table root;
  try {
    root = toml::parse(text, what);
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    throw Error(what + ":" + std::to_string(where.line) + ":" + std::to_string(where.column) +
                ": " + std::string(e.description()));
  }
  const toml::node* regs = root.get("registry");
  if (!regs) return;
  const toml::array* list = regs->as_array();
  if (!list) throw Error(what + ": 'registry' must be an array of tables ([[registry]])");
  for (const toml::node& node : *list) {
    const toml::table* t = node.as_table();
    if (!t) throw Error(what + ": 'registry' must be an array of tables ([[registry]])");
    RegistryEntry e;
    e.location = strip_location(toml_get<std::string>(*t, "location", "", what));
    e.prefix = strip_location(toml_get<std::string>(*t, "prefix", "", what));
    if (e.prefix.empty()) e.prefix = e.location;
    if (e.prefix.empty()) throw Error(what + ": a [[registry]] has neither location nor prefix");
    validate_prefix(e.prefix, what);
    if (e.location.find('*') != std::string::npos)
      throw Error(what + ": location '" + escape_for_log(e.location) +
                  "' is not valid (only a prefix can have a wildcard)");
    if (e.location.empty() && !e.wildcard()) e.location = e.prefix;
    e.insecure = toml_get<bool>(*t, "insecure", false, what);
    e.blocked = toml_get<bool>(*t, "blocked", false, what);
    e.mirror_by_digest_only = toml_get<bool>(*t, "mirror-by-digest-only", false, what);
    if (const toml::node* mirrors = t->get("mirror")) {
      const toml::array* ml = mirrors->as_array();
      if (!ml) throw Error(what + ": 'mirror' of " + e.prefix + " must be [[registry.mirror]]");
      for (const toml::node& mn : *ml) {
        const toml::table* mt = mn.as_table();
        if (!mt) throw Error(what + ": 'mirror' of " + e.prefix + " must be [[registry.mirror]]");
        RegistryEntry::Mirror m;
        m.location = strip_location(toml_get<std::string>(*mt, "location", "", what));
        if (m.location.empty())
          throw Error(what + ": a mirror of " + e.prefix + " has no location");
        m.insecure = toml_get<bool>(*mt, "insecure", false, what);
        m.pull_from_mirror = toml_get<std::string>(*mt, "pull-from-mirror", "", what);
        if (m.pull_from_mirror != "" && m.pull_from_mirror != "all" &&
            m.pull_from_mirror != "digest-only" && m.pull_from_mirror != "tag-only")
          throw Error(what + ": pull-from-mirror '" + escape_for_log(m.pull_from_mirror) +
                      "' is not all, digest-only or tag-only");
        if (!m.pull_from_mirror.empty() && e.mirror_by_digest_only)
          throw Error(what + ": a mirror of " + e.prefix +
                      " sets pull-from-mirror, which is not allowed with mirror-by-digest-only");
        e.mirrors.push_back(std::move(m));
      }
    }
    auto same = std::find_if(entries_.begin(), entries_.end(),
                             [&](const RegistryEntry& x) { return x.prefix == e.prefix; });
    if (same != entries_.end())
      *same = std::move(e);
    else
      entries_.push_back(std::move(e));
  }
}

RegistriesConf RegistriesConf::load_default() {
  RegistriesConf conf;
  std::vector<std::string> files;
  std::string home = home_dir();
  if (const char* env = std::getenv("CONTAINERS_REGISTRIES_CONF"); env && *env) {
    files.push_back(env);
  } else {
    std::string user = home.empty() ? "" : home + "/.config/containers/registries.conf";
    files.push_back(!user.empty() && file_exists(user) ? user : "/etc/containers/registries.conf");
    for (const std::string& f : conf_dropins("/etc/containers/registries.conf.d"))
      files.push_back(f);
    if (!home.empty())
      for (const std::string& f : conf_dropins(home + "/.config/containers/registries.conf.d"))
        files.push_back(f);
  }
  for (const std::string& f : files)
    if (auto text = read_optional(f)) conf.add(*text, f);
  return conf;
}

const RegistryEntry* RegistriesConf::find(const Reference& ref) const {
  std::string name = ref.name();
  const RegistryEntry* best = nullptr;
  size_t best_len = 0;
  for (const RegistryEntry& e : entries_) {
    size_t len = prefix_match(e, name);
    if (len == 0) continue;
    bool better = !best || len > best_len;
    if (best && len == best_len)
      better =
          best->wildcard() != e.wildcard() ? !e.wildcard() : e.prefix.size() > best->prefix.size();
    if (better) {
      best = &e;
      best_len = len;
    }
  }
  return best;
}

std::vector<Endpoint> RegistriesConf::endpoints(const Reference& ref) const {
  std::string name = ref.name();
  std::string what = "docker://" + name;
  const RegistryEntry* best = find(ref);
  if (!best) return {make_endpoint(name, false, false, what)};
  if (best->blocked)
    throw Error(what + ": the registry is blocked in registries.conf ([[registry]] prefix '" +
                best->prefix + "')");
  size_t matched = prefix_match(*best, name);
  std::string rest = name.substr(matched);
  std::string location = best->location.empty() ? name.substr(0, matched) : best->location;
  bool rewrites = !best->location.empty() || !best->mirrors.empty();
  if (best->wildcard() && rewrites && rest.starts_with(':'))
    throw Error(what + ": the host has a port, so the wildcard prefix '" + best->prefix +
                "' cannot rewrite it to its location or mirrors");
  if (!best->wildcard() && !rest.empty() && rest.front() != '/' && !best->prefix.ends_with('/'))
    rest.insert(0, "/");
  std::vector<Endpoint> out;
  if (!best->mirror_by_digest_only || !ref.digest.empty()) {
    for (const RegistryEntry::Mirror& m : best->mirrors) {
      if (m.pull_from_mirror == "digest-only" && ref.digest.empty()) continue;
      if (m.pull_from_mirror == "tag-only" && !ref.digest.empty()) continue;
      out.push_back(make_endpoint(m.location + rest, m.insecure, true, what));
    }
  }
  out.push_back(make_endpoint(location + rest, best->insecure, false, what));
  return out;
}

std::vector<std::string> default_auth_files() {
  std::vector<std::string> files;
  if (const char* env = std::getenv("REGISTRY_AUTH_FILE"); env && *env) files.push_back(env);
  if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg && *xdg)
    files.push_back(std::string(xdg) + "/containers/auth.json");
  std::string home = home_dir();
  if (!home.empty()) {
    files.push_back(home + "/.config/containers/auth.json");
    files.push_back(home + "/.docker/config.json");
  }
  return files;
}

std::optional<Credentials> find_credentials(std::string_view json_text, const std::string& file,
                                            const Reference& ref) {
  nlohmann::json j = store::parse_json_bounded(json_text, file);
  if (!j.is_object()) throw Error(file + ": not a JSON object");
  auto normal_key = [](std::string key) {
    bool legacy = key.starts_with("http://") || key.starts_with("https://");
    key = strip_location(key);
    if (legacy) key = key.substr(0, key.find('/'));
    if (key == "index.docker.io" || key == "registry-1.docker.io") key = "docker.io";
    return key;
  };
  auto helper = [&](const std::string& name) {
    Credentials c;
    c.helper = name;
    c.source = file;
    return c;
  };
  if (auto helpers = j.find("credHelpers"); helpers != j.end()) {
    if (!helpers->is_object()) throw Error(file + ": 'credHelpers' is not an object");
    for (auto it = helpers->begin(); it != helpers->end(); ++it)
      if (normal_key(it.key()) == ref.registry) {
        if (!it->is_string() || it->get<std::string>().empty())
          throw Error(file + ": credHelpers." + it.key() + " is not a helper name");
        return helper(it->get<std::string>());
      }
  }
  std::string store = json_string(j, "credsStore", "", file);
  auto auths = j.find("auths");
  if (auths == j.end()) return store.empty() ? std::nullopt : std::optional(helper(store));
  if (!auths->is_object()) throw Error(file + ": 'auths' is not an object");
  // Normalised key -> entry; a legacy key ("https://host/v1/") names the whole registry.
  std::map<std::string, const nlohmann::json*> keys;
  for (auto it = auths->begin(); it != auths->end(); ++it) {
    keys.emplace(normal_key(it.key()), &it.value());
  }
  std::string name = ref.name();
  for (;;) {
    if (auto k = keys.find(name); k != keys.end()) {
      const nlohmann::json& entry = *k->second;
      std::string what = file + ": auths." + k->first;
      if (!entry.is_object()) throw Error(what + ": not an object");
      std::string auth = json_string(entry, "auth", "", what);
      Credentials c;
      c.source = file;
      c.identity_token = json_string(entry, "identitytoken", "", what);
      if (!auth.empty()) {
        std::string decoded = http::base64_decode(auth, what + ".auth");
        auto colon = decoded.find(':');
        if (colon == std::string::npos) throw Error(what + ".auth: not base64 of user:password");
        c.username = decoded.substr(0, colon);
        c.password = decoded.substr(colon + 1);
      }
      if (!auth.empty() || !c.identity_token.empty()) return c;
      // An empty entry (docker writes them next to a credsStore): the store's.
    }
    auto slash = name.rfind('/');
    if (slash == std::string::npos)
      return store.empty() ? std::nullopt : std::optional(helper(store));
    name.resize(slash);
  }
}

std::optional<Credentials> lookup_credentials(const std::vector<std::string>& files,
                                              const Reference& ref, bool run_helpers) {
  for (const std::string& f : files) {
    auto text = read_optional(f);
    if (!text) continue;
    auto c = find_credentials(*text, f, ref);
    if (c && !c->helper.empty() && run_helpers)
      c = run_credential_helper(c->helper, ref.registry, f);
    if (c) return c;
  }
  return std::nullopt;
}

Challenge parse_challenge(std::string_view header, const std::string& what) {
  auto bad = [&](const std::string& why) {
    return Error(what + ": WWW-Authenticate '" + escape_for_log(header) + "': " + why);
  };
  Challenge c;
  size_t i = 0;
  auto skip_space = [&] {
    while (i < header.size() && (header[i] == ' ' || header[i] == '\t')) ++i;
  };
  auto token = [&] {
    size_t start = i;
    while (i < header.size() && header[i] != ' ' && header[i] != '\t' && header[i] != '=' &&
           header[i] != ',')
      ++i;
    return std::string(header.substr(start, i - start));
  };
  auto lower = [](std::string s) {
    for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    return s;
  };
  skip_space();
  c.scheme = lower(token());
  if (c.scheme.empty()) throw bad("no scheme");
  for (;;) {
    skip_space();
    while (i < header.size() && header[i] == ',') {
      ++i;
      skip_space();
    }
    if (i >= header.size()) break;
    std::string key = lower(token());
    skip_space();
    if (key.empty() || i >= header.size() || header[i] != '=') throw bad("expected key=value");
    ++i;
    skip_space();
    std::string value;
    if (i < header.size() && header[i] == '"') {
      ++i;
      for (;;) {
        if (i >= header.size()) throw bad("unterminated quoted string");
        char ch = header[i++];
        if (ch == '"') break;
        if (ch == '\\') {
          if (i >= header.size()) throw bad("unterminated quoted string");
          ch = header[i++];
        }
        value += ch;
      }
    } else {
      value = token();
    }
    c.params[key] = value;
  }
  return c;
}

bool is_loopback_host(std::string_view host_port) {
  std::string_view host = host_port;
  if (host.starts_with('[')) {
    host =
        host.substr(1, host.find(']') == std::string_view::npos ? host.npos : host.find(']') - 1);
    return host == "::1";
  }
  host = host.substr(0, host.find(':'));
  return host == "localhost" || host.starts_with("127.");
}

}  // namespace cfs::oci::registry
