// cfs_store library tests: meta.json, splitstreams (including fixtures built byte by byte
// from composefs-rs' documented layout, legacy header too), objects, refs, streams, images,
// gc and fsck on real repositories in temporary directories.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <cstring>
#include <filesystem>
#include <set>

#include "cfs/erofs/writer.h"
#include "cfs/error.h"
#include "cfs/fsverity.h"
#include "cfs/store/fsck.h"
#include "cfs/store/gc.h"
#include "cfs/store/images.h"
#include "cfs/store/meta.h"
#include "cfs/store/refs.h"
#include "cfs/store/repository.h"
#include "cfs/store/splitstream.h"
#include "testdata.h"

namespace cfs::store {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

std::span<const std::byte> bytes_of(std::string_view s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

Repository make_repo(const TempDir& tmp, HashAlgorithm alg = HashAlgorithm::sha256) {
  return Repository::init(tmp / "repo", {alg, /*insecure=*/true});
}

// ---------------------------------------------------------------------------- meta.json

TEST(Meta, RoundTripsInComposefsRsSchema) {
  RepoMeta meta;
  meta.algorithm = HashAlgorithm::sha256;
  std::string json = meta.to_json();
  EXPECT_NE(json.find("\"algorithm\": \"fsverity-sha256-12\""), std::string::npos);
  EXPECT_NE(json.find("\"read-only-compatible\": [\n      \"v1_erofs\"\n    ]"), std::string::npos);
  EXPECT_EQ(json.back(), '\n');
  RepoMeta parsed = parse_meta(json, "meta.json");
  EXPECT_EQ(parsed.algorithm, HashAlgorithm::sha256);
  EXPECT_EQ(parsed.erofs_default, 1u);
  EXPECT_TRUE(meta_allows_writing(parsed));
}

TEST(Meta, ComposefsRsDefaultRepositoryParses) {
  RepoMeta m = parse_meta(
      R"({"version":1,"algorithm":"fsverity-sha512-12","features":{"compatible":[],)"
      R"("read-only-compatible":["v1_erofs"],"incompatible":[]},"erofs_formats":{"default":1,"extra":[2]}})",
      "meta.json");
  EXPECT_EQ(m.algorithm, HashAlgorithm::sha512);
  EXPECT_EQ(m.erofs_extra, std::vector<uint32_t>{2});
}

TEST(Meta, LegacyFormatsInferredFromFlag) {
  auto v2 = parse_meta(R"({"version":1,"algorithm":"fsverity-sha256-12"})", "m");
  EXPECT_EQ(v2.erofs_default, 2u);
  auto v1 = parse_meta(
      R"({"version":1,"algorithm":"fsverity-sha256-12","features":{"read-only-compatible":["v1_erofs"]}})",
      "m");
  EXPECT_EQ(v1.erofs_default, 1u);
}

// composefs-rs' FormatConfig: the default first, then the extra ones ascending; {"default":2}
// is its serde default, so the v1_erofs flag decides for it as for an absent field.
TEST(Meta, ErofsFormatsAsComposefsRsReadsThem) {
  auto meta = [](const std::string& formats, bool v1_flag) {
    return parse_meta(R"({"version":1,"algorithm":"fsverity-sha256-12","features":{)"
                      R"("read-only-compatible":[)" +
                          std::string(v1_flag ? "\"v1_erofs\"" : "") + "]}" +
                          (formats.empty() ? "" : ",\"erofs_formats\":" + formats) + "}",
                      "m");
  };
  EXPECT_EQ(meta(R"({"default":1,"extra":[2]})", true).erofs_versions(),
            (std::vector<uint32_t>{1, 2}));
  EXPECT_EQ(meta(R"({"default":2,"extra":[2,1,0]})", false).erofs_versions(),
            (std::vector<uint32_t>{2, 0, 1}));
  EXPECT_EQ(meta(R"({"default":2})", false).erofs_versions(), std::vector<uint32_t>{2});
  EXPECT_EQ(meta(R"({"default":2})", true).erofs_versions(), std::vector<uint32_t>{1});
  EXPECT_EQ(meta(R"({"default":0})", false).erofs_versions(), std::vector<uint32_t>{0});
  EXPECT_EQ(meta("", false).erofs_versions(), std::vector<uint32_t>{2});
  EXPECT_THROW(meta(R"({"default":3})", false), Error);
  EXPECT_THROW(meta(R"({"default":1,"extra":[7]})", true), Error);
  // init --erofs-version 2 as composefs-rs writes it: no v1_erofs flag.
  EXPECT_EQ(RepoMeta::for_erofs_version(HashAlgorithm::sha256, 2).to_json(),
            "{\n  \"version\": 1,\n  \"algorithm\": \"fsverity-sha256-12\",\n  \"features\": {\n"
            "    \"compatible\": [],\n    \"read-only-compatible\": [],\n    \"incompatible\": "
            "[]\n  },\n  \"erofs_formats\": {\n    \"default\": 2\n  }\n}\n");
  EXPECT_EQ(RepoMeta::for_erofs_version(HashAlgorithm::sha256, 1).to_json(),
            RepoMeta{.algorithm = HashAlgorithm::sha256}.to_json());
}

TEST(Meta, RejectsUnknownIncompatibleAndBadFields) {
  auto fails_with = [](const std::string& json, const std::string& needle) {
    try {
      parse_meta(json, "repo/meta.json");
      ADD_FAILURE() << "accepted " << json;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("repo/meta.json"), std::string::npos);
    }
  };
  fails_with(
      R"({"version":1,"algorithm":"fsverity-sha256-12","features":{"incompatible":["zstd_objects"]}})",
      "unknown incompatible feature 'zstd_objects'");
  fails_with(R"({"version":2,"algorithm":"fsverity-sha256-12"})", "version 2");
  fails_with(R"({"version":1,"algorithm":"fsverity-sha256-16"})", "block size");
  fails_with(R"({"version":1,"algorithm":"sha1"})", "unknown algorithm");
  fails_with("{", "not valid JSON");
  fails_with("[]", "not a JSON object");
}

TEST(Meta, UnknownReadOnlyCompatibleMakesRepositoryReadOnly) {
  TempDir tmp;
  { make_repo(tmp); }
  test::write_file(
      tmp / "repo/meta.json",
      R"({"version":1,"algorithm":"fsverity-sha256-12","features":{"compatible":["x"],)"
      R"("read-only-compatible":["v1_erofs","future"],"incompatible":[]}})");
  Repository repo = Repository::open(tmp / "repo");
  EXPECT_FALSE(repo.writable());
  EXPECT_THROW(repo.ensure_object(bytes_of("data")), Error);
}

// ---------------------------------------------------------------------------- splitstream

// Builds a splitstream by hand from the documented layout: never through the writer.
struct Fixture {
  static void put64(std::string& s, size_t off, uint64_t v) {
    for (int i = 0; i < 8; ++i) s[off + i] = static_cast<char>(v >> (8 * i));
  }
  static std::string le64(uint64_t v) {
    std::string s(8, '\0');
    put64(s, 0, v);
    return s;
  }
  static std::string zstd(const std::string& data) {
    std::string out(ZSTD_compressBound(data.size()), '\0');
    size_t n = ZSTD_compress(out.data(), out.size(), data.data(), data.size(), 3);
    EXPECT_FALSE(ZSTD_isError(n));
    out.resize(n);
    return out;
  }
  static std::string build(bool legacy, const std::vector<Digest>& stream_refs,
                           const std::vector<Digest>& object_refs, const std::string& named_plain,
                           const std::string& stream_plain, uint64_t type, uint64_t size) {
    std::string refs_blob, objs_blob;
    for (const auto& d : stream_refs)
      refs_blob.append(reinterpret_cast<const char*>(d.bytes().data()), d.size());
    for (const auto& d : object_refs)
      objs_blob.append(reinterpret_cast<const char*>(d.bytes().data()), d.size());
    std::string named = zstd(named_plain), stream = zstd(stream_plain);
    std::string f(112, '\0');
    uint64_t sr = f.size();
    f += refs_blob;
    uint64_t orf = f.size();
    f += objs_blob;
    uint64_t nr = f.size();
    f += named;
    uint64_t st = f.size();
    f += stream;
    uint8_t alg = static_cast<uint8_t>(object_refs.empty() ? HashAlgorithm::sha256
                                                           : object_refs[0].algorithm());
    if (!legacy) {
      std::memcpy(f.data(), "SplitStream", 11);
      f[11] = 0;  // version
      f[14] = static_cast<char>(alg);
      f[15] = 12;
      put64(f, 16, 32);
      put64(f, 24, 112);
    } else {
      put64(f, 0, 32);
      put64(f, 8, 112);
      std::memcpy(f.data() + 18, "SplitStream", 11);
      f[29] = 0;
      f[30] = static_cast<char>(alg);
      f[31] = 12;
    }
    put64(f, 32, sr);
    put64(f, 40, orf);
    put64(f, 48, orf);
    put64(f, 56, nr);
    put64(f, 64, st);
    put64(f, 72, st + stream.size());
    put64(f, 80, nr);
    put64(f, 88, st);
    put64(f, 96, type);
    put64(f, 104, size);
    return f;
  }
};

std::vector<std::byte> to_vec(const std::string& s) {
  auto b = bytes_of(s);
  return {b.begin(), b.end()};
}

class SplitStreamFixture : public ::testing::TestWithParam<bool> {};

TEST_P(SplitStreamFixture, HandBuiltComposefsRsLayoutParses) {
  const bool legacy = GetParam();
  Digest obj1 = fsverity_digest(test::pattern(5000, 1));
  Digest obj2 = fsverity_digest(test::pattern(100, 2));
  Digest config = fsverity_digest(std::string_view("config"));
  Digest image = fsverity_digest(std::string_view("image"));
  std::string named = std::string("1:composefs.image.v1") + '\0' + "0:config:sha256:abc" + '\0';
  std::string stream = Fixture::le64(static_cast<uint64_t>(-5)) + "hello" + Fixture::le64(0) +
                       Fixture::le64(static_cast<uint64_t>(-3)) + "abc" + Fixture::le64(1) +
                       Fixture::le64(0);
  std::string file = Fixture::build(legacy, {config, image}, {obj1, obj2}, named, stream,
                                    kContentOciLayer, 5 + 5000 + 3 + 100 + 5000);
  auto reader = SplitStreamReader::from_bytes(to_vec(file), HashAlgorithm::sha256, "fixture");
  EXPECT_EQ(reader.legacy_header(), legacy);
  EXPECT_EQ(reader.content_type(), kContentOciLayer);
  EXPECT_EQ(content_type_name(reader.content_type()), "ocilayer");
  EXPECT_EQ(reader.stream_size(), 10108u);
  EXPECT_EQ(reader.object_refs(), (std::vector<Digest>{obj1, obj2}));
  EXPECT_EQ(reader.stream_refs(), (std::vector<Digest>{config, image}));
  ASSERT_EQ(reader.named_refs().size(), 2u);
  EXPECT_EQ(reader.named_refs()[0].name, "composefs.image.v1");
  EXPECT_EQ(reader.named_refs()[0].target, image);
  ASSERT_NE(reader.find_named_ref("config:sha256:abc"), nullptr);
  EXPECT_EQ(*reader.find_named_ref("config:sha256:abc"), config);
  std::string events;
  reader.for_each_chunk(
      [&](std::span<const std::byte> d) {
        events += "I:" + std::string(reinterpret_cast<const char*>(d.data()), d.size()) + ";";
      },
      [&](const Digest& d) { events += d == obj1   ? "E1;"
                                       : d == obj2 ? "E2;"
                                                   : "E?;"; });
  EXPECT_EQ(events, "I:hello;E1;I:abc;E2;E1;");
}
INSTANTIATE_TEST_SUITE_P(Headers, SplitStreamFixture, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Legacy" : "Current"; });

TEST(SplitStream, WriterOutputFollowsTheDocumentedLayout) {
  Digest obj = fsverity_digest(test::pattern(1000, 3), HashAlgorithm::sha512);
  Digest other = fsverity_digest(std::string_view("x"), HashAlgorithm::sha512);
  SplitStreamWriter w(HashAlgorithm::sha512, kContentOciConfig);
  w.write_inline(std::string_view("ab"));
  w.write_inline(std::string_view("cd"));  // coalesced with "ab"
  w.write_external(obj, 1000);
  w.write_external(obj, 1000);  // deduplicated in object_refs
  w.add_named_ref("zeta", other);
  w.add_named_ref("alpha", obj);
  StringSink out;
  w.finish(out);
  const std::string& f = out.str();
  ASSERT_GE(f.size(), 112u);
  EXPECT_EQ(f.substr(0, 11), "SplitStream");
  EXPECT_EQ(f[11], 0);
  EXPECT_EQ(f[14], 2);
  EXPECT_EQ(f[15], 12);
  auto get64 = [&](size_t off) {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i)
      v |= static_cast<uint64_t>(static_cast<uint8_t>(f[off + i])) << (8 * i);
    return v;
  };
  EXPECT_EQ(get64(16), 32u);
  EXPECT_EQ(get64(24), 112u);
  EXPECT_EQ(get64(32), 112u);                 // stream_refs start
  EXPECT_EQ(get64(40) - get64(32), 2 * 64u);  // two stream refs
  EXPECT_EQ(get64(56) - get64(48), 64u);      // one object ref
  EXPECT_EQ(get64(96), kContentOciConfig);
  EXPECT_EQ(get64(104), 2004u);
  EXPECT_EQ(f.substr(get64(48), 64),
            std::string(reinterpret_cast<const char*>(obj.bytes().data()), 64));
  // Named refs: zstd of sorted "<idx>:<name>\0" records.
  std::string named(1024, '\0');
  size_t n =
      ZSTD_decompress(named.data(), named.size(), f.data() + get64(80), get64(88) - get64(80));
  ASSERT_FALSE(ZSTD_isError(n));
  named.resize(n);
  EXPECT_EQ(named, std::string("1:alpha") + '\0' + "0:zeta" + '\0');
  // Stream: one inline chunk of 4, then object 0 twice.
  std::string stream(1024, '\0');
  n = ZSTD_decompress(stream.data(), stream.size(), f.data() + get64(64), get64(72) - get64(64));
  ASSERT_FALSE(ZSTD_isError(n));
  stream.resize(n);
  EXPECT_EQ(stream, Fixture::le64(static_cast<uint64_t>(-4)) + "abcd" + Fixture::le64(0) +
                        Fixture::le64(0));
}

TEST(SplitStream, RejectsCorruptInput) {
  Digest obj = fsverity_digest(test::pattern(100, 4));
  std::string good = Fixture::build(false, {}, {obj}, "", Fixture::le64(0), kContentOciBlob, 100);
  auto rejects = [](std::string file, HashAlgorithm alg, const std::string& needle) {
    try {
      auto r = SplitStreamReader::from_bytes(to_vec(file), alg, "bad.ss");
      r.for_each_chunk([](auto) {}, [](auto&) {});
      ADD_FAILURE() << "accepted, expected: " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("bad.ss"), std::string::npos) << e.what();
    }
  };
  rejects(good.substr(0, 20), HashAlgorithm::sha256, "too short");
  rejects("X" + good.substr(1), HashAlgorithm::sha256, "magic");
  rejects(good, HashAlgorithm::sha512, "repository uses sha512");
  std::string v = good;
  v[11] = 1;
  rejects(v, HashAlgorithm::sha256, "version 1");
  std::string range = good;
  Fixture::put64(range, 72, 1u << 30);
  rejects(range, HashAlgorithm::sha256, "outside");
  rejects(Fixture::build(false, {}, {obj}, "", Fixture::le64(7), 0, 0), HashAlgorithm::sha256,
          "references object 7");
  rejects(
      Fixture::build(false, {}, {obj}, "", Fixture::le64(static_cast<uint64_t>(-10)) + "abc", 0, 0),
      HashAlgorithm::sha256, "inside inline data");
  rejects(Fixture::build(false, {obj}, {obj}, "5:x", Fixture::le64(0), 0, 0), HashAlgorithm::sha256,
          "unterminated");
  rejects(Fixture::build(false, {obj}, {obj}, std::string("5:x") + '\0', Fixture::le64(0), 0, 0),
          HashAlgorithm::sha256, "points to stream ref 5");
  std::string truncated = Fixture::build(false, {}, {obj}, "", Fixture::le64(0), 0, 0);
  truncated.resize(truncated.size() - 3);
  Fixture::put64(truncated, 72, truncated.size());
  rejects(truncated, HashAlgorithm::sha256, "truncated");
}

// ---------------------------------------------------------------------------- objects

TEST(Objects, NamedByFsVerityDigestAndDeduplicated) {
  TempDir tmp;
  Repository repo = make_repo(tmp);
  std::string data = test::pattern(100000, 5);
  Digest id = repo.ensure_object(bytes_of(data));
  EXPECT_EQ(id, fsverity_digest(data));
  EXPECT_EQ(repo.ensure_object(bytes_of(data)), id);
  repo.sync();
  EXPECT_EQ(fsverity_digest_file(tmp / "repo/objects/" + id.object_path()), id);
  UniqueFd fd = repo.open_object(id);
  EXPECT_EQ(read_fd(fd.get(), "obj"), data);
  // An empty object is valid too.
  Digest empty = repo.ensure_object({});
  repo.sync();
  EXPECT_TRUE(fs::exists(tmp / "repo/objects/" + empty.object_path()));
}

TEST(Objects, NotVisibleBeforeSyncButReadable) {
  TempDir tmp;
  Repository repo = make_repo(tmp);
  ObjectWriter w = repo.write_object();
  w.write(std::string_view("pending object"));
  Digest id = w.commit();
  EXPECT_TRUE(repo.has_object(id));
  EXPECT_EQ(read_fd(repo.open_object(id).get(), "o"), "pending object");
  EXPECT_FALSE(fs::exists(tmp / "repo/objects/" + id.object_path()));
  repo.sync();
  EXPECT_TRUE(fs::exists(tmp / "repo/objects/" + id.object_path()));
}

TEST(Objects, UncommittedWriterLeavesNothing) {
  TempDir tmp;
  Repository repo = make_repo(tmp);
  {
    ObjectWriter w = repo.write_object();
    w.write(std::string_view("abandoned"));
  }
  repo.sync();
  size_t entries = 0;
  for (auto& e : fs::recursive_directory_iterator(tmp / "repo/objects"))
    entries += !e.is_directory();
  EXPECT_EQ(entries, 0u);
}

TEST(Objects, CorruptObjectOfWrongSizeIsReplacedOnRewrite) {
  TempDir tmp;
  Repository repo = make_repo(tmp);
  std::string data = test::pattern(9000, 6);
  Digest id = repo.ensure_object(bytes_of(data));
  repo.sync();
  test::write_file(tmp / "repo/objects/" + id.object_path(), "short");
  ObjectWriter w = repo.write_object();
  w.write(bytes_of(data));
  EXPECT_EQ(w.commit(), id);
  repo.sync();
  EXPECT_EQ(read_file(tmp / "repo/objects/" + id.object_path()), data);
}

// ---------------------------------------------------------------------------- images

void make_tree(const std::string& dir) {
  fs::create_directories(dir + "/a/b");
  test::write_file(dir + "/small", "tiny");
  test::write_file(dir + "/a/big", test::pattern(200000, 7));
  test::write_file(dir + "/a/b/mid", test::pattern(3000, 8));
  test::write_file(dir + "/a/b/dup", test::pattern(3000, 8));
  fs::create_symlink("a/big", dir + "/link");
}

TEST(Images, CreateStoresObjectsAndNamesTheImage) {
  TempDir tmp;
  make_tree(tmp / "src");
  Repository repo = make_repo(tmp, HashAlgorithm::sha512);
  CreateImageResult r = create_image(repo, tmp / "src", "os/v1");
  EXPECT_EQ(r.id, compute_image_id(tmp / "src", HashAlgorithm::sha512));
  EXPECT_EQ(r.id.algorithm(), HashAlgorithm::sha512);
  EXPECT_EQ(fs::read_symlink(tmp / "repo/images/" + r.id.hex()).string(),
            "../objects/" + r.id.object_path());
  EXPECT_EQ(fs::read_symlink(tmp / "repo/images/refs/os/v1").string(), "../../" + r.id.hex());
  EXPECT_EQ(repo.resolve_image("os/v1"), r.id);
  EXPECT_EQ(repo.resolve_image(r.id.hex()), r.id);
  EXPECT_FALSE(repo.resolve_image("nope"));
  erofs::Image image = open_image_reader(repo, "os/v1");
  EXPECT_EQ(image.format_version(), 1u);
  auto objects = image_objects(image, HashAlgorithm::sha512);
  EXPECT_EQ(objects.size(), 2u);  // big and mid (dup has the same content)
  for (const auto& o : objects) EXPECT_TRUE(fs::exists(tmp / "repo/objects/" + o.object_path()));
  auto list = repo.list_images();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].refs, std::vector<std::string>{"os/v1"});
  EXPECT_TRUE(fsck(repo).ok());
}

TEST(Images, SourceErrorsNameThePath) {
  TempDir tmp;
  Repository repo = make_repo(tmp);
  test::write_file(tmp / "file", "x");
  try {
    create_image(repo, tmp / "missing");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(tmp / "missing"), std::string::npos);
  }
  try {
    create_image(repo, tmp / "file");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a directory"), std::string::npos);
  }
  EXPECT_TRUE(fsck(repo).ok());
}

// ---------------------------------------------------------------------------- streams

TEST(Streams, WriteCatAndRefs) {
  TempDir tmp;
  Repository repo = make_repo(tmp);
  std::string big = test::pattern(70000, 9);
  Digest big_id = repo.ensure_object(bytes_of(big));
  SplitStreamWriter w(repo.algorithm(), kContentOciLayer);
  w.write_inline(std::string_view("header|"));
  w.write_external(big_id, big.size());
  w.write_inline(std::string_view("|trailer"));
  Digest id = repo.write_stream(w, "oci-layer-sha256:1234", "layers/one");
  EXPECT_EQ(fs::read_symlink(tmp / "repo/streams/oci-layer-sha256:1234").string(),
            "../objects/" + id.object_path());
  EXPECT_EQ(fs::read_symlink(tmp / "repo/streams/refs/layers/one").string(),
            "../../oci-layer-sha256:1234");
  StringSink out;
  repo.cat_stream("layers/one", out);
  EXPECT_EQ(out.str(), "header|" + big + "|trailer");
  StringSink out2;
  repo.cat_stream("oci-layer-sha256:1234", out2);
  EXPECT_EQ(out2.str(), out.str());
  EXPECT_THROW(repo.cat_stream("missing", out2), Error);
  EXPECT_THROW(repo.write_stream(w, "bad/name"), Error);
  std::vector<std::string> streams;
  for (const auto& e : fs::directory_iterator(tmp / "repo/streams"))
    if (e.path().filename() != "refs") streams.push_back(e.path().filename());
  EXPECT_EQ(streams, std::vector<std::string>{"oci-layer-sha256:1234"});
  EXPECT_TRUE(fsck(repo).ok());
}

// ---------------------------------------------------------------------------- gc

std::set<std::string> object_files(const std::string& repo) {
  std::set<std::string> out;
  for (auto& e : fs::recursive_directory_iterator(repo + "/objects"))
    if (e.is_regular_file()) out.insert(fs::relative(e.path(), repo + "/objects").string());
  return out;
}

TEST(Gc, KeepsExactlyWhatRefsReach) {
  TempDir tmp;
  Repository repo = make_repo(tmp);
  // Image A (named) and image B (unnamed), sharing one file.
  fs::create_directories(tmp / "a");
  fs::create_directories(tmp / "b");
  std::string shared = test::pattern(5000, 10), only_a = test::pattern(6000, 11),
              only_b = test::pattern(7000, 12);
  test::write_file(tmp / "a/shared", shared);
  test::write_file(tmp / "a/mine", only_a);
  test::write_file(tmp / "b/shared", shared);
  test::write_file(tmp / "b/mine", only_b);
  Digest image_a = create_image(repo, tmp / "a", "a").id;
  Digest image_b = create_image(repo, tmp / "b").id;
  // Stream chain: named root stream -> named ref to a second stream -> its object, and a
  // named ref to image B (keeps B and its files alive).
  std::string leaf_data = test::pattern(8000, 13), root_data = test::pattern(9000, 14);
  Digest leaf_obj = repo.ensure_object(bytes_of(leaf_data));
  SplitStreamWriter leaf(repo.algorithm(), kContentOciLayer);
  leaf.write_external(leaf_obj, leaf_data.size());
  Digest leaf_id = repo.write_stream(leaf, "leaf");
  Digest root_obj = repo.ensure_object(bytes_of(root_data));
  SplitStreamWriter root(repo.algorithm(), kContentOciConfig);
  root.write_external(root_obj, root_data.size());
  root.add_named_ref("layer", leaf_id);
  root.add_named_ref("composefs.image.v1", image_b);
  Digest root_id = repo.write_stream(root, "root", "tag");
  // Garbage: an unreferenced object, an unnamed stream, a broken ref.
  Digest junk = repo.ensure_object(bytes_of(test::pattern(4000, 15)));
  SplitStreamWriter orphan(repo.algorithm(), kContentOciBlob);
  orphan.write_inline(std::string_view("orphan"));
  Digest orphan_id = repo.write_stream(orphan, "orphan");
  repo.sync();
  fs::create_symlink("../nothing", tmp / "repo/images/refs/dangling");

  std::set<std::string> expected;
  for (const Digest& d :
       {image_a, image_b, leaf_id, leaf_obj, root_id, root_obj, fsverity_digest(shared),
        fsverity_digest(only_a), fsverity_digest(only_b)})
    expected.insert(d.object_path());
  std::set<std::string> before = object_files(tmp / "repo");
  ASSERT_TRUE(before.count(junk.object_path()));
  ASSERT_TRUE(before.count(orphan_id.object_path()));

  GcResult dry = collect_garbage(repo, {true});
  EXPECT_EQ(dry.objects_removed, 2u);
  EXPECT_EQ(dry.streams_removed, 1u);
  EXPECT_EQ(dry.refs_pruned, 1u);
  EXPECT_EQ(object_files(tmp / "repo"), before);  // dry run changed nothing

  GcResult r = collect_garbage(repo);
  EXPECT_EQ(r.objects_removed, 2u);
  EXPECT_EQ(r.objects_kept, expected.size());
  EXPECT_EQ(r.images_removed, 0u);
  EXPECT_EQ(r.streams_removed, 1u);
  EXPECT_EQ(r.refs_pruned, 1u);
  EXPECT_GT(r.bytes_freed, 4000u);
  EXPECT_EQ(object_files(tmp / "repo"), expected);
  EXPECT_FALSE(fs::exists(fs::symlink_status(tmp / "repo/streams/orphan")));
  EXPECT_TRUE(fsck(repo).ok());

  // Extra roots keep what no ref reaches, for one collection: the orphan-to-be stream by name,
  // image B by id; a root naming nothing throws before anything is removed.
  SplitStreamWriter kept(repo.algorithm(), kContentOciBlob);
  kept.write_inline(std::string_view("kept by --root"));
  repo.write_stream(kept, "kept");
  repo.sync();
  EXPECT_THROW(collect_garbage(repo, {.extra_roots = {"kept", "nosuch"}}), cfs::Error);
  EXPECT_TRUE(fs::exists(fs::symlink_status(tmp / "repo/streams/kept")));
  EXPECT_THROW(collect_garbage(repo, {.extra_roots = {"../streams/kept"}}), cfs::Error);
  r = collect_garbage(repo, {.extra_roots = {"kept"}});
  EXPECT_EQ(r.streams_removed, 0u);
  EXPECT_TRUE(fs::exists(fs::symlink_status(tmp / "repo/streams/kept")));
  r = collect_garbage(repo);
  EXPECT_EQ(r.streams_removed, 1u);

  // Dropping the stream tag leaves only image A.
  fs::remove(tmp / "repo/streams/refs/tag");
  r = collect_garbage(repo);
  EXPECT_EQ(r.images_removed, 1u);
  EXPECT_EQ(r.streams_removed, 2u);
  std::set<std::string> only_image_a;
  for (const Digest& d : {image_a, fsverity_digest(shared), fsverity_digest(only_a)})
    only_image_a.insert(d.object_path());
  EXPECT_EQ(object_files(tmp / "repo"), only_image_a);
  EXPECT_TRUE(fsck(repo).ok());
}

// ---------------------------------------------------------------------------- fsck

TEST(Fsck, NamesEveryKindOfDamage) {
  TempDir tmp;
  make_tree(tmp / "src");
  Repository repo = make_repo(tmp);
  Digest image = create_image(repo, tmp / "src", "img").id;
  std::string data = test::pattern(3000, 8);  // /a/b/mid
  Digest mid = fsverity_digest(data);
  ASSERT_TRUE(fsck(repo).ok());

  // Flip one byte of an object (same size: only a re-hash finds it).
  std::string path = tmp / "repo/objects/" + mid.object_path();
  data[100] ^= 1;
  test::write_file(path, data);
  FsckReport r = fsck(repo);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.objects_corrupted, 1u);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].find("object-digest-mismatch: objects/" + mid.object_path()), 0u)
      << r.errors[0];

  // Remove it: the image now misses an object.
  fs::remove(path);
  r = fsck(repo);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_NE(r.errors[0].find("image-missing-object: images/" + image.hex()), std::string::npos);
  EXPECT_NE(r.errors[0].find(mid.hex()), std::string::npos);

  // A broken ref and a stray file.
  fs::create_symlink("../gone", tmp / "repo/images/refs/broken");
  test::write_file(tmp / "repo/objects/zz", "x");
  r = fsck(repo);
  EXPECT_EQ(r.broken_links, 1u);
  EXPECT_EQ(r.errors.size(), 3u);
}

// ---------------------------------------------------------------------------- interop

// A repository laid out by hand exactly as composefs-rs documents it (meta.json with its
// default formats, objects, a splitstream with the legacy header, relative symlinks).
TEST(Interop, HandBuiltComposefsRsRepository) {
  TempDir tmp;
  const std::string root = tmp / "rs";
  for (const char* d : {"objects", "images/refs", "streams/refs/oci"})
    fs::create_directories(root + "/" + d);
  test::write_file(
      root + "/meta.json",
      "{\n  \"version\": 1,\n  \"algorithm\": \"fsverity-sha512-12\",\n  \"features\": "
      "{\n    \"compatible\": [],\n    \"read-only-compatible\": [\n      \"v1_erofs\"\n    "
      "],\n    \"incompatible\": []\n  },\n  \"erofs_formats\": {\n    \"default\": 1,\n    "
      "\"extra\": [\n      2\n    ]\n  }\n}\n");
  auto put_object = [&](const std::string& data) {
    Digest d = fsverity_digest(data, HashAlgorithm::sha512);
    fs::create_directories(root + "/objects/" + d.object_path().substr(0, 2));
    test::write_file(root + "/objects/" + d.object_path(), data);
    return d;
  };
  std::string content = test::pattern(10000, 16);
  Digest object = put_object(content);
  std::string stream = Fixture::le64(static_cast<uint64_t>(-4)) + "tar:" + Fixture::le64(0);
  Digest stream_obj = put_object(
      Fixture::build(true, {}, {object}, "", stream, kContentOciLayer, 4 + content.size()));
  fs::create_symlink("../objects/" + stream_obj.object_path(),
                     root + "/streams/oci-layer-sha256:ff");
  fs::create_symlink("../../oci-layer-sha256:ff", root + "/streams/refs/oci/my%2Ftag");

  Repository repo = Repository::open(root);
  EXPECT_EQ(repo.algorithm(), HashAlgorithm::sha512);
  EXPECT_FALSE(repo.secure());
  EXPECT_TRUE(repo.writable());
  StringSink out;
  repo.cat_stream("oci/my%2Ftag", out);
  EXPECT_EQ(out.str(), "tar:" + content);
  FsckReport report = fsck(repo);
  EXPECT_TRUE(report.ok()) << (report.errors.empty() ? "" : report.errors[0]);
  EXPECT_EQ(report.streams_checked, 1u);
  GcResult gc = collect_garbage(repo);
  EXPECT_EQ(gc.objects_removed, 0u);
  EXPECT_EQ(gc.objects_kept, 2u);
}

TEST(Interop, RepositoryWithoutMetaIsInferredReadOnly) {
  TempDir tmp;
  Digest d = fsverity_digest(std::string_view("legacy"), HashAlgorithm::sha256);
  fs::create_directories(tmp / "old/objects/" + d.object_path().substr(0, 2));
  test::write_file(tmp / "old/objects/" + d.object_path(), "legacy");
  Repository repo = Repository::open(tmp / "old");
  EXPECT_EQ(repo.algorithm(), HashAlgorithm::sha256);
  EXPECT_FALSE(repo.has_meta());
  EXPECT_FALSE(repo.writable());
  EXPECT_EQ(read_fd(repo.open_object(d).get(), "o"), "legacy");
}

// Secure repositories need fs-verity on the filesystem holding TMPDIR (e.g. ext4 -O verity
// in the test VM); this host's kernel has none, so there the test is skipped.
TEST(Repository, SecureModeUsesKernelVerity) {
  TempDir tmp;
  std::optional<Repository> repo;
  try {
    repo.emplace(Repository::init(tmp / "secure", {HashAlgorithm::sha256, false}));
  } catch (const Error& e) {
    if (std::string(e.what()).find("does not support fs-verity") != std::string::npos)
      GTEST_SKIP() << "no fs-verity on " << tmp.path() << ": " << e.what();
    throw;
  }
  ASSERT_TRUE(repo->secure());
  make_tree(tmp / "src");
  CreateImageResult r = create_image(*repo, tmp / "src", "img");
  EXPECT_EQ(r.id, compute_image_id(tmp / "src", HashAlgorithm::sha256));
  EXPECT_TRUE(fsck(*repo).ok());
  // Reopened: still secure, objects verified by the kernel on open.
  repo.reset();
  Repository again = Repository::open(tmp / "secure");
  EXPECT_TRUE(again.secure());
  EXPECT_NO_THROW(again.open_image("img"));
  // An object replaced by the same bytes without fs-verity: fsck names it, the kernel having
  // nothing to measure.
  std::string object;
  for (const auto& e : fs::recursive_directory_iterator(tmp / "secure/objects"))
    if (e.is_regular_file() && e.file_size() > 0) object = e.path();
  ASSERT_FALSE(object.empty());
  std::string bytes = read_file(object);
  fs::remove(object);
  test::write_file(object, bytes);
  FsckReport report = fsck(again);
  EXPECT_FALSE(report.ok());
  std::string all;
  for (const auto& e : report.errors) all += e + "\n";
  EXPECT_NE(all.find("object-verity-missing"), std::string::npos) << all;
  EXPECT_NE(all.find(fs::path(object).filename().string()), std::string::npos) << all;
}

TEST(Repository, OpenErrors) {
  TempDir tmp;
  auto fails_with = [](const std::string& path, const std::string& needle) {
    try {
      Repository::open(path);
      ADD_FAILURE() << path;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  fails_with(tmp / "missing", "no such repository");
  test::write_file(tmp / "file", "x");
  fails_with(tmp / "file", "not a directory");
  fs::create_directories(tmp / "empty");
  fails_with(tmp / "empty", "not a composefs repository");
  { make_repo(tmp); }
  EXPECT_THROW(make_repo(tmp), Error);  // already a repository
  // Secure init works only where the filesystem has fs-verity, and says what to do otherwise.
  try {
    Repository secure = Repository::init(tmp / "secure", {HashAlgorithm::sha256, false});
    EXPECT_TRUE(secure.secure());
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--insecure"), std::string::npos) << e.what();
    EXPECT_FALSE(fs::exists(tmp / "secure/meta.json"));
  }
}

}  // namespace
}  // namespace cfs::store
