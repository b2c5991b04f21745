// The registry client's parsers (oci/src/registry_config.h, http.h): references,
// registries.conf, auth.json lookups, WWW-Authenticate challenges, base64. The HTTP flows
// themselves run against a real registry in registry_test.py.
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "cfs/error.h"
#include "cfs/temp_dir.h"
#include "http.h"
#include "registry_config.h"

namespace cfs::oci::registry {
namespace {

TEST(RegistryReference, Parses) {
  Reference r = parse_reference("quay.io/fedora/fedora:40");
  EXPECT_EQ(r.registry, "quay.io");
  EXPECT_EQ(r.repository, "fedora/fedora");
  EXPECT_EQ(r.tag, "40");
  EXPECT_EQ(r.manifest_ref(), "40");

  r = parse_reference("127.0.0.1:5000/a/b");
  EXPECT_EQ(r.registry, "127.0.0.1:5000");
  EXPECT_EQ(r.repository, "a/b");
  EXPECT_EQ(r.tag, "latest");

  r = parse_reference("debian");
  EXPECT_EQ(r.registry, "docker.io");
  EXPECT_EQ(r.repository, "library/debian");
  r = parse_reference("localhost/x:1");
  EXPECT_EQ(r.registry, "localhost");

  std::string d = "sha256:" + std::string(64, 'a');
  r = parse_reference("example.com/x:1@" + d);
  EXPECT_EQ(r.tag, "1");
  EXPECT_EQ(r.digest, d);
  EXPECT_EQ(r.manifest_ref(), d);

  EXPECT_THROW(parse_reference("example.com/UPPER:1"), Error);
  EXPECT_THROW(parse_reference("example.com/x:bad/tag"), Error);
  EXPECT_THROW(parse_reference("example.com/x@sha256:short"), Error);
  EXPECT_THROW(parse_reference("example.com/../x"), Error);
  EXPECT_THROW(parse_reference(""), Error);
}

TEST(RegistriesConf, PrefixesMirrorsAndBlocks) {
  RegistriesConf conf;
  conf.add(R"(
unqualified-search-registries = ["example.com"]
[[registry]]
prefix = "example.com/team"
location = "internal.example:5000/mirror/team"
insecure = true
[[registry.mirror]]
location = "cache.example/team"
[[registry.mirror]]
location = "digests.example/team"
pull-from-mirror = "digest-only"

[[registry]]
location = "example.com"

[[registry]]
location = "evil.example"
blocked = true
)",
           "test.conf");
  ASSERT_EQ(conf.entries().size(), 3u);

  auto eps = conf.endpoints(parse_reference("example.com/team/app:1"));
  ASSERT_EQ(eps.size(), 2u);  // the digest-only mirror is skipped for a tag
  EXPECT_EQ(eps[0].host, "cache.example");
  EXPECT_EQ(eps[0].repository, "team/app");
  EXPECT_TRUE(eps[0].mirror);
  EXPECT_FALSE(eps[0].insecure);
  EXPECT_EQ(eps[1].host, "internal.example:5000");
  EXPECT_EQ(eps[1].repository, "mirror/team/app");
  EXPECT_TRUE(eps[1].insecure);

  eps = conf.endpoints(parse_reference("example.com/team/app@sha256:" + std::string(64, 'b')));
  EXPECT_EQ(eps.size(), 3u);

  // "example.com/teamx" is not below the prefix "example.com/team".
  eps = conf.endpoints(parse_reference("example.com/teamx/app"));
  ASSERT_EQ(eps.size(), 1u);
  EXPECT_EQ(eps[0].host, "example.com");
  EXPECT_EQ(eps[0].repository, "teamx/app");

  EXPECT_THROW(conf.endpoints(parse_reference("evil.example/x")), Error);

  eps = conf.endpoints(parse_reference("debian:12"));
  ASSERT_EQ(eps.size(), 1u);
  EXPECT_EQ(eps[0].host, "registry-1.docker.io");
  EXPECT_EQ(eps[0].repository, "library/debian");
  EXPECT_TRUE(conf.endpoints(parse_reference("127.0.0.1:9/x"))[0].insecure);
  EXPECT_FALSE(conf.endpoints(parse_reference("example.org/x"))[0].insecure);

  // A later file's entry for the same prefix replaces the earlier one.
  conf.add("[[registry]]\nlocation = \"evil.example\"\n", "later.conf");
  EXPECT_NO_THROW(conf.endpoints(parse_reference("evil.example/x")));
}

TEST(RegistriesConf, WildcardPrefixes) {
  RegistriesConf conf;
  conf.add(R"(
[[registry]]
prefix = "*.example.com"
insecure = true
[[registry.mirror]]
location = "cache.local/any"

[[registry]]
prefix = "*.team.example.com"
location = "team-registry.local"

[[registry]]
prefix = "exact.team.example.com"
blocked = true
location = "exact.team.example.com"

[[registry]]
prefix = "*.blocked.test"
blocked = true
)",
           "wild.conf");
  ASSERT_EQ(conf.entries().size(), 4u);

  // A subdomain at any depth; no location: the name is used as it is, the settings apply.
  auto eps = conf.endpoints(parse_reference("a.b.example.com/ns/app:1"));
  ASSERT_EQ(eps.size(), 2u);
  EXPECT_EQ(eps[0].host, "cache.local");
  EXPECT_EQ(eps[0].repository, "any/ns/app");
  EXPECT_TRUE(eps[0].mirror);
  EXPECT_EQ(eps[1].host, "a.b.example.com");
  EXPECT_EQ(eps[1].repository, "ns/app");
  EXPECT_TRUE(eps[1].insecure);

  // Not the domain itself, nor a name that merely ends the same way.
  eps = conf.endpoints(parse_reference("example.com/ns/app"));
  ASSERT_EQ(eps.size(), 1u);
  EXPECT_FALSE(eps[0].insecure);
  EXPECT_EQ(conf.find(parse_reference("notexample.com/app")), nullptr);
  EXPECT_EQ(conf.find(parse_reference("reg.local/x.example.com/app")), nullptr);

  // The longer wildcard wins for its subdomains and rewrites the matched host.
  eps = conf.endpoints(parse_reference("x.team.example.com/app"));
  ASSERT_EQ(eps.size(), 1u);
  EXPECT_EQ(eps[0].host, "team-registry.local");
  EXPECT_EQ(eps[0].repository, "app");
  EXPECT_FALSE(eps[0].insecure);

  // A plain prefix of the same host wins over the wildcards.
  EXPECT_EQ(conf.find(parse_reference("exact.team.example.com/app"))->prefix,
            "exact.team.example.com");
  EXPECT_THROW(conf.endpoints(parse_reference("exact.team.example.com/app")), Error);
  EXPECT_THROW(conf.endpoints(parse_reference("deep.host.blocked.test/app")), Error);

  // A port after the host: matched; used as it is without a location, but a rewrite with a
  // port is refused clearly.
  RegistriesConf plain;
  plain.add("[[registry]]\nprefix = \"*.local.test\"\ninsecure = true\n", "p.conf");
  eps = plain.endpoints(parse_reference("r.local.test:5000/app"));
  ASSERT_EQ(eps.size(), 1u);
  EXPECT_EQ(eps[0].host, "r.local.test:5000");
  EXPECT_TRUE(eps[0].insecure);
  try {
    conf.endpoints(parse_reference("x.team.example.com:5000/app"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("*.team.example.com"), std::string::npos) << e.what();
  }

  // Wildcards anywhere but a leading "*." before a bare host are refused, naming the file.
  for (const char* bad : {"example.*.com", "*.example.com/foo", "*.example.com:5000", "*", "*.",
                          "**.example.com", "example.com/*"}) {
    try {
      RegistriesConf c;
      c.add(std::string("[[registry]]\nprefix = \"") + bad + "\"\nlocation = \"x.test\"\n",
            "bad.conf");
      ADD_FAILURE() << bad << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("bad.conf"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(plain.add("[[registry]]\nprefix = \"a.test\"\nlocation = \"*.b.test\"\n", "t"),
               Error);
}

TEST(RegistriesConf, MirrorByDigestOnly) {
  RegistriesConf conf;
  conf.add(R"(
[[registry]]
location = "example.com"
mirror-by-digest-only = true
[[registry.mirror]]
location = "m1.local"
[[registry.mirror]]
location = "m2.local"
)",
           "d.conf");
  auto eps = conf.endpoints(parse_reference("example.com/app:1"));
  ASSERT_EQ(eps.size(), 1u);
  EXPECT_EQ(eps[0].host, "example.com");
  eps = conf.endpoints(parse_reference("example.com/app@sha256:" + std::string(64, 'c')));
  ASSERT_EQ(eps.size(), 3u);
  EXPECT_EQ(eps[0].host, "m1.local");
  EXPECT_EQ(eps[1].host, "m2.local");
  // pull-from-mirror is not allowed together with mirror-by-digest-only.
  EXPECT_THROW(conf.add("[[registry]]\nlocation = \"x.test\"\nmirror-by-digest-only = true\n"
                        "[[registry.mirror]]\nlocation = \"y.test\"\n"
                        "pull-from-mirror = \"tag-only\"\n",
                        "t"),
               Error);
}

TEST(RegistriesConf, ErrorsNameTheFile) {
  RegistriesConf conf;
  try {
    conf.add("[[registry]]\nlocation = \n", "/etc/broken.conf");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/etc/broken.conf:2"), std::string::npos) << e.what();
  }
  EXPECT_THROW(conf.add("[[registry]]\nlocation = \"x\"\ninsecure = \"yes\"\n", "t"), Error);
  EXPECT_THROW(conf.add("registry = 3\n", "t"), Error);
  EXPECT_THROW(conf.add("[[registry]]\ninsecure = true\n", "t"), Error);
  EXPECT_THROW(conf.add("[[registry]]\nlocation = \"x\"\n[[registry.mirror]]\nlocation = \"y\"\n"
                        "pull-from-mirror = \"sometimes\"\n",
                        "t"),
               Error);
}

std::string auth(const std::string& user_pass) {
  return "{\"auth\":\"" + http::base64_encode(user_pass) + "\"}";
}

TEST(AuthJson, MostSpecificKeyWins) {
  std::string text = "{\"auths\":{\"example.com\":" + auth("reg:1") +
                     ",\"example.com/team\":" + auth("team:2") +
                     ",\"https://index.docker.io/v1/\":" + auth("hub:3") +
                     ",\"other.example\":{\"identitytoken\":\"x\"}}}";
  auto c = find_credentials(text, "a.json", parse_reference("example.com/team/app"));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->username, "team");
  EXPECT_EQ(c->password, "2");
  EXPECT_EQ(c->source, "a.json");
  c = find_credentials(text, "a.json", parse_reference("example.com/solo"));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->username, "reg");
  c = find_credentials(text, "a.json", parse_reference("debian"));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->username, "hub");
  c = find_credentials(text, "a.json", parse_reference("other.example/x"));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->identity_token, "x");
  EXPECT_EQ(c->username, "");
  EXPECT_FALSE(find_credentials(text, "a.json", parse_reference("none.example/x")));
  EXPECT_FALSE(find_credentials("{}", "a.json", parse_reference("none.example/x")));

  EXPECT_THROW(find_credentials("{\"auths\":[]}", "a.json", parse_reference("x.io/y")), Error);
  EXPECT_THROW(find_credentials("{\"auths\":{\"x.io\":{\"auth\":\"!!\"}}}", "a.json",
                                parse_reference("x.io/y")),
               Error);
  EXPECT_THROW(find_credentials("{\"auths\":{\"x.io\":" + auth("nocolon") + "}}", "a.json",
                                parse_reference("x.io/y")),
               Error);
  EXPECT_THROW(find_credentials("not json", "a.json", parse_reference("x.io/y")), Error);
}

TEST(AuthJson, CredentialHelpers) {
  // credHelpers for the registry first, then auths, then credsStore; an empty auths entry (as
  // docker writes next to a store) defers to the store.
  std::string text =
      "{\"credHelpers\":{\"helped.example\":\"pass\","
      "\"https://index.docker.io/v1/\":\"hub\"},"
      "\"credsStore\":\"desktop\",\"auths\":{\"plain.example\":" +
      auth("u:p") + ",\"stored.example\":{}}}";
  auto c = find_credentials(text, "h.json", parse_reference("helped.example/app"));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->helper, "pass");
  EXPECT_EQ(c->source, "h.json");
  EXPECT_EQ(find_credentials(text, "h.json", parse_reference("debian"))->helper, "hub");
  c = find_credentials(text, "h.json", parse_reference("plain.example/app"));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->helper, "");
  EXPECT_EQ(c->username, "u");
  EXPECT_EQ(find_credentials(text, "h.json", parse_reference("stored.example/x"))->helper,
            "desktop");
  EXPECT_EQ(find_credentials(text, "h.json", parse_reference("other.example/x"))->helper,
            "desktop");
  EXPECT_FALSE(find_credentials("{\"credHelpers\":{\"a.example\":\"x\"}}", "h.json",
                                parse_reference("b.example/x")));
  EXPECT_THROW(find_credentials("{\"credHelpers\":[]}", "h.json", parse_reference("b.io/x")),
               Error);
  EXPECT_THROW(
      find_credentials("{\"credHelpers\":{\"b.io\":3}}", "h.json", parse_reference("b.io/x")),
      Error);
}

TEST(AuthJson, FilesInOrder) {
  // Missing files are skipped; the first file with an entry for the image wins.
  TempDir dir("/tmp", "cfs-auth-test");
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir / name) << text;
    return dir / name;
  };
  std::string other = write("other.json", "{\"auths\":{\"z.io\":" + auth("z:0") + "}}");
  std::string first = write("first.json", "{\"auths\":{\"x.io\":" + auth("first:1") + "}}");
  std::string second = write("second.json", "{\"auths\":{\"x.io\":" + auth("second:2") + "}}");
  auto c =
      lookup_credentials({dir / "missing.json", other, first, second}, parse_reference("x.io/y"));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->username, "first");
  EXPECT_EQ(c->source, first);
  EXPECT_FALSE(lookup_credentials({dir / "missing.json", other}, parse_reference("x.io/y")));
  std::string broken = write("broken.json", "{\"auths\":");
  EXPECT_THROW(lookup_credentials({broken, first}, parse_reference("x.io/y")), Error);
}

TEST(WwwAuthenticate, Challenges) {
  Challenge c = parse_challenge(
      R"(Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull")",
      "t");
  EXPECT_EQ(c.scheme, "bearer");
  EXPECT_EQ(c.params["realm"], "https://auth.example/token");
  EXPECT_EQ(c.params["service"], "registry.example");
  EXPECT_EQ(c.params["scope"], "repository:a/b:pull");
  c = parse_challenge(R"(Basic Realm="a \"quoted\" realm", charset=UTF-8)", "t");
  EXPECT_EQ(c.scheme, "basic");
  EXPECT_EQ(c.params["realm"], "a \"quoted\" realm");
  EXPECT_EQ(c.params["charset"], "UTF-8");
  EXPECT_THROW(parse_challenge("", "t"), Error);
  EXPECT_THROW(parse_challenge(R"(Bearer realm="unterminated)", "t"), Error);
  EXPECT_THROW(parse_challenge("Bearer realm", "t"), Error);
}

TEST(Http, Base64AndEscaping) {
  for (std::string s : {"", "a", "ab", "abc", "abcd", "user:pa ss\xff"})
    EXPECT_EQ(http::base64_decode(http::base64_encode(s), "t"), s);
  EXPECT_EQ(http::base64_encode("alice:s3cret"), "YWxpY2U6czNjcmV0");
  EXPECT_THROW(http::base64_decode("a", "t"), Error);
  EXPECT_EQ(http::url_escape("repository:a/b:pull"), "repository%3Aa%2Fb%3Apull");
  EXPECT_TRUE(is_loopback_host("127.0.0.1:5000"));
  EXPECT_TRUE(is_loopback_host("localhost"));
  EXPECT_TRUE(is_loopback_host("[::1]:80"));
  EXPECT_FALSE(is_loopback_host("128.0.0.1"));
}

}  // namespace
}  // namespace cfs::oci::registry
