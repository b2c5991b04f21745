// libFuzzer target: OCI layer import without the repository. The bytes are an uncompressed
// layer tar (the pull decompresses with libarchive, then hands the tar to TarParser).
//  * splitting may only throw cfs::Error, and hands every byte on exactly once (inline or
//    as the content of an external object; a sparse member's tar bytes go inline and its
//    expansion, data plus holes, must be exactly the entry's size);
//  * the parse-time bounds hold: paths and link targets within PATH_MAX and the strict
//    reader's depth, only xattrs the mode keeps, values within EROFS's limit;
//  * reading the split stream back (inline chunks + object references) yields the same
//    entries;
//  * the entries either merge (LayerMerger, then the OCI transforms) into a tree that the
//    EROFS writer turns into an image the strict reader validates, or are refused with
//    cfs::Error.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "cfs/erofs/dumpfile.h"
#include "cfs/erofs/reader.h"
#include "cfs/erofs/writer.h"
#include "cfs/error.h"
#include "cfs/oci/tar.h"
#include "cfs/oci/tree.h"

namespace {

using namespace cfs;
using namespace cfs::oci;

// The split form of a layer: inline byte runs and external objects, in stream order.
struct Piece {
  bool external;
  std::string bytes;  // inline bytes or the object's content
  uint64_t size = 0;
  Digest object;  // the name the splitter gave it (sparse members take names too)
};

// Names an object by its index: the parser only carries digests through.
Digest object_name(size_t index) {
  std::array<uint8_t, 32> raw{};
  for (size_t i = 0; i < sizeof index; ++i) raw[i] = static_cast<uint8_t>(index >> (8 * i));
  raw[31] = 1;
  return Digest(HashAlgorithm::sha256, raw);
}

class Splitter : public TarHandler {
 public:
  void inline_bytes(std::span<const std::byte> data) override {
    if (pieces.empty() || pieces.back().external) pieces.push_back({false, {}, 0, {}});
    pieces.back().bytes.append(reinterpret_cast<const char*>(data.data()), data.size());
    bytes += data.size();
  }
  void external_begin(const TarEntry& e) override {
    if (open) std::abort();
    open = true;
    sparse = e.sparse;
    expanded = 0;
    // A sparse member's expansion is not part of the stream (its tar bytes are inline).
    if (!sparse) pieces.push_back({true, {}, 0, {}});
  }
  void external_bytes(std::span<const std::byte> data) override {
    if (!open) std::abort();
    expanded += data.size();
    if (sparse) return;
    pieces.back().bytes.append(reinterpret_cast<const char*>(data.data()), data.size());
    bytes += data.size();
  }
  void external_zeros(uint64_t n) override {
    if (!open || !sparse) std::abort();
    expanded += n;
  }
  void external_end() override {
    if (!open) std::abort();
    open = false;
  }
  void entry(TarEntry& e) override {
    check_bounds(e);
    if (e.external() && e.sparse) {
      if (expanded != e.size) std::abort();  // holes + data must be exactly the real size
      e.object = object_name(objects++);
      sparse_objects.emplace(e.header_offset, *e.object);
    } else if (e.external()) {
      if (pieces.empty() || !pieces.back().external || pieces.back().bytes.size() != e.size)
        std::abort();  // the content handed out must be exactly the entry's size
      pieces.back().size = e.size;
      e.object = object_name(objects++);
      pieces.back().object = *e.object;
    } else if (e.type == TarEntryType::regular && (!e.content || e.content->size() != e.size)) {
      std::abort();
    }
    entries.push_back(e);
  }
  static void check_bounds(const TarEntry& e) {
    auto depth = [](const std::string& p) {
      size_t n = 0;
      for (size_t i = 0; i < p.size(); ++i)
        if (p[i] != '/' && (i == 0 || p[i - 1] == '/')) ++n;
      return n;
    };
    if (e.path.size() > erofs::kPathMax || e.link.size() > erofs::kPathMax ||
        depth(e.path) > erofs::kMaxDirDepth)
      std::abort();
    for (const erofs::Xattr& x : e.xattrs)
      if (!xattr_kept(x.name, XattrMode::keep_user_xattrs) ||
          x.value.size() > erofs::kXattrValueMax)
        std::abort();
  }
  std::vector<Piece> pieces;
  std::vector<TarEntry> entries;
  std::map<uint64_t, Digest> sparse_objects;  // what the stream's named refs would hold
  uint64_t bytes = 0;
  uint64_t expanded = 0;
  size_t objects = 0;
  bool open = false;
  bool sparse = false;
};

class Collector : public TarHandler {
 public:
  explicit Collector(const std::map<uint64_t, Digest>& sparse) : sparse_(sparse) {}
  void entry(TarEntry& e) override {
    if (e.sparse && e.external()) {
      if (e.object) std::abort();  // read-back mode cannot know it: the stream's named ref does
      auto it = sparse_.find(e.header_offset);
      if (it == sparse_.end()) std::abort();
      e.object = it->second;
    }
    entries.push_back(e);
  }
  std::vector<TarEntry> entries;

 private:
  const std::map<uint64_t, Digest>& sparse_;
};

bool same(const TarEntry& a, const TarEntry& b) {
  return a.path == b.path && a.link == b.link && a.type == b.type && a.mode == b.mode &&
         a.uid == b.uid && a.gid == b.gid && a.mtime_sec == b.mtime_sec &&
         a.mtime_nsec == b.mtime_nsec && a.size == b.size && a.dev_major == b.dev_major &&
         a.dev_minor == b.dev_minor && a.xattrs == b.xattrs && a.content == b.content &&
         a.object == b.object && a.sparse == b.sparse && a.header_offset == b.header_offset;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  // The first byte picks how the stream is cut into feed() calls (decompressors hand out
  // arbitrary pieces).
  size_t step = 1 + data[0] * 7;
  std::span<const std::byte> tar(reinterpret_cast<const std::byte*>(data + 1), size - 1);

  Splitter split;
  try {
    TarParser parser(split, TarMode::split, "fuzz");
    for (size_t off = 0; off < tar.size(); off += step)
      parser.feed(tar.subspan(off, std::min(step, tar.size() - off)));
    parser.finish();
  } catch (const Error&) {
    return 0;
  }
  if (split.bytes != tar.size() || split.open) std::abort();

  Collector back(split.sparse_objects);
  TarParser reader(back, TarMode::read_back, "again");
  for (const Piece& p : split.pieces) {
    if (p.external)
      reader.feed_external(p.object, p.size);
    else
      reader.feed({reinterpret_cast<const std::byte*>(p.bytes.data()), p.bytes.size()});
  }
  reader.finish();  // must not throw: it is the stream the splitter accepted
  if (back.entries.size() != split.entries.size()) std::abort();
  for (size_t i = 0; i < back.entries.size(); ++i)
    if (!same(back.entries[i], split.entries[i])) std::abort();

  erofs::Tree tree;
  try {
    LayerMerger merger(tree);
    for (const TarEntry& e : split.entries) merger.apply(e, "fuzz layer");
    merger.finish();
    transform_for_oci(tree);
    filter_xattrs(tree, XattrMode::keep_user_xattrs);
  } catch (const Error&) {
    return 0;
  }
  std::string image;
  try {
    image = erofs::image_to_string(tree, {});
  } catch (const Error&) {
    return 0;  // the writer's own limits (e.g. too many xattrs on one inode)
  }
  erofs::Image::from_bytes(image, "merged", erofs::ReaderOptions{}).validate();  // must not throw
  return 0;
}
