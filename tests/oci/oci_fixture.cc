#include "oci_fixture.h"

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>
#include <zlib.h>
#include <zstd.h>

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "cfs/erofs/dumpfile.h"
#include "cfs/erofs/tree.h"
#include "testdata.h"

namespace cfs::test::oci {

namespace {

struct WriteFree {
  void operator()(archive* a) const { archive_write_free(a); }
};
struct EntryFree {
  void operator()(archive_entry* e) const { archive_entry_free(e); }
};

la_ssize_t append_cb(archive*, void* out, const void* buf, size_t n) {
  static_cast<std::string*>(out)->append(static_cast<const char*>(buf), n);
  return static_cast<la_ssize_t>(n);
}

class TarWriter {
 public:
  TarWriter() : a_(archive_write_new()) {
    archive_write_set_format_pax(a_.get());
    archive_write_set_bytes_per_block(a_.get(), 0);  // no record padding: exact sizes
    if (archive_write_open(a_.get(), &out_, nullptr, append_cb, nullptr) != ARCHIVE_OK)
      throw std::runtime_error(archive_error_string(a_.get()));
  }
  void add(archive_entry* e, std::string_view data = {}) {
    if (archive_write_header(a_.get(), e) != ARCHIVE_OK)
      throw std::runtime_error(std::string("tar header: ") + archive_error_string(a_.get()));
    if (!data.empty() && archive_write_data(a_.get(), data.data(), data.size()) !=
                             static_cast<la_ssize_t>(data.size()))
      throw std::runtime_error(std::string("tar data: ") + archive_error_string(a_.get()));
  }
  std::string finish() {
    archive_write_close(a_.get());
    return std::move(out_);
  }

 private:
  std::string out_;
  std::unique_ptr<archive, WriteFree> a_;
};

std::string host_arch() {
  utsname u{};
  uname(&u);
  std::string m = u.machine;
  if (m == "x86_64") return "amd64";
  if (m == "aarch64") return "arm64";
  return m;
}

std::string gzip(std::string_view data) {
  z_stream z{};
  if (deflateInit2(&z, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    throw std::runtime_error("deflateInit2");
  std::string out(deflateBound(&z, data.size()) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  if (deflate(&z, Z_FINISH) != Z_STREAM_END) throw std::runtime_error("deflate");
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

std::string zstd(std::string_view data) {
  std::string out(ZSTD_compressBound(data.size()), '\0');
  size_t n = ZSTD_compress(out.data(), out.size(), data.data(), data.size(), 3);
  if (ZSTD_isError(n)) throw std::runtime_error("ZSTD_compress");
  out.resize(n);
  return out;
}

// data cut into that many pieces, each compressed on its own, back to back.
std::string compress_pieces(std::string_view data, size_t pieces,
                            std::string (*compress_one)(std::string_view)) {
  std::string out;
  size_t step = data.size() / pieces + 1;
  for (size_t off = 0; off < data.size(); off += step) out += compress_one(data.substr(off, step));
  return out;
}

}  // namespace

std::string file_content(std::string_view path, uint64_t size) {
  std::string out;
  out.reserve(size);
  uint64_t state = 1469598103934665603ULL;
  for (char c : path) state = (state ^ static_cast<uint8_t>(c)) * 1099511628211ULL;
  while (out.size() < size) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    // Printable-ish bytes compress somewhat, like real files.
    out.push_back(static_cast<char>('a' + (state % 26)));
  }
  return out;
}

std::string tar_from_dumpfile(std::string_view dumpfile) {
  erofs::Tree tree = erofs::parse_dumpfile(dumpfile, "layer.dump");
  TarWriter tar;
  std::map<const erofs::Inode*, std::string> first_path;
  erofs::walk(tree, [&](const erofs::WalkEntry& w) {
    const erofs::Inode& inode = w.inode;
    std::string name = w.path == "/" ? "./" : "." + w.path;
    std::unique_ptr<archive_entry, EntryFree> e(archive_entry_new());
    archive_entry_set_pathname(e.get(), name.c_str());
    if (w.shared && !w.first_visit) {
      archive_entry_set_filetype(e.get(), AE_IFREG);
      archive_entry_set_hardlink(e.get(), first_path.at(&inode).c_str());
      archive_entry_set_size(e.get(), 0);
      tar.add(e.get());
      return;
    }
    first_path[&inode] = name;
    archive_entry_set_mode(e.get(), inode.mode);
    archive_entry_set_uid(e.get(), inode.uid);
    archive_entry_set_gid(e.get(), inode.gid);
    archive_entry_set_mtime(e.get(), static_cast<time_t>(inode.mtime_sec),
                            static_cast<long>(inode.mtime_nsec));
    for (const auto& x : inode.xattrs)
      archive_entry_xattr_add_entry(e.get(), x.name.c_str(), x.value.data(), x.value.size());
    std::string data;
    if (inode.is_reg()) {
      data = inode.content ? *inode.content : file_content(w.path, inode.size);
      archive_entry_set_size(e.get(), static_cast<la_int64_t>(data.size()));
    } else if (inode.is_symlink()) {
      archive_entry_set_symlink(e.get(), inode.payload.c_str());
    } else if (inode.is_device()) {
      archive_entry_set_rdevmajor(e.get(), major(inode.rdev));
      archive_entry_set_rdevminor(e.get(), minor(inode.rdev));
    }
    tar.add(e.get(), data);
  });
  return tar.finish();
}

std::string tar_from_entries(const std::vector<RawEntry>& entries) {
  TarWriter tar;
  for (const RawEntry& r : entries) {
    std::unique_ptr<archive_entry, EntryFree> e(archive_entry_new());
    archive_entry_set_pathname(e.get(), r.path.c_str());
    archive_entry_set_mtime(e.get(), 1700000000, 0);
    switch (r.type) {
      case '1':
        archive_entry_set_filetype(e.get(), AE_IFREG);
        archive_entry_set_hardlink(e.get(), r.link.c_str());
        break;
      case '2':
        archive_entry_set_filetype(e.get(), AE_IFLNK);
        archive_entry_set_perm(e.get(), 0777);
        archive_entry_set_symlink(e.get(), r.link.c_str());
        break;
      case '5':
        archive_entry_set_filetype(e.get(), AE_IFDIR);
        archive_entry_set_perm(e.get(), 0755);
        break;
      default:
        archive_entry_set_filetype(e.get(), AE_IFREG);
        archive_entry_set_perm(e.get(), 0644);
        archive_entry_set_size(e.get(), static_cast<la_int64_t>(r.content.size()));
    }
    tar.add(e.get(), r.type == '0' ? std::string_view(r.content) : std::string_view());
  }
  return tar.finish();
}

std::string compress(std::string_view data, Compression c) {
  switch (c) {
    case Compression::none:
      return std::string(data);
    case Compression::gzip:
      return gzip(data);
    case Compression::gzip_multimember:
      // Several gzip members back to back, as parallel compressors (pigz -i) write.
      return compress_pieces(data, 3, gzip);
    case Compression::zstd:
      return zstd(data);
    case Compression::zstd_chunked: {
      // Independent frames per chunk plus a skippable frame at the end, the shape of
      // zstd:chunked (its table of contents lives in a skippable frame).
      std::string out = compress_pieces(data, 4, zstd);
      std::string toc = "{\"version\":1,\"entries\":[]}";
      uint32_t magic = 0x184D2A50, len = static_cast<uint32_t>(toc.size());
      for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(magic >> (8 * i)));
      for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(len >> (8 * i)));
      out += toc;
      return out;
    }
  }
  return {};
}

std::string sha256(std::string_view data) {
  return "sha256:" + sha256_hex(data);
}

Layer dump_layer(std::string_view dumpfile, Compression c) {
  return Layer{tar_from_dumpfile(dumpfile), c};
}

LayoutBuilder::LayoutBuilder(std::string dir) : dir_(std::move(dir)) {
  ::mkdir(dir_.c_str(), 0755);
  ::mkdir((dir_ + "/blobs").c_str(), 0755);
  ::mkdir((dir_ + "/blobs/sha256").c_str(), 0755);
  write_file(dir_ + "/oci-layout", "{\"imageLayoutVersion\":\"1.0.0\"}");
}

std::string LayoutBuilder::blob_path(const std::string& digest) const {
  return dir_ + "/blobs/sha256/" + digest.substr(7);
}

std::string LayoutBuilder::add_blob(std::string_view data) {
  std::string d = sha256(data);
  write_file(blob_path(d), data);
  return d;
}

BuiltImage LayoutBuilder::add_image(const std::vector<Layer>& layers, const std::string& ref,
                                    const std::vector<std::string>& fake_diff_ids) {
  BuiltImage img;
  nlohmann::json layer_list = nlohmann::json::array();
  nlohmann::json diff_ids = nlohmann::json::array();
  for (const Layer& l : layers) {
    std::string blob = compress(l.tar, l.compression);
    std::string media = "application/vnd.oci.image.layer.v1.tar";
    if (l.compression == Compression::gzip || l.compression == Compression::gzip_multimember)
      media += "+gzip";
    else if (l.compression != Compression::none)
      media += "+zstd";
    std::string d = add_blob(blob);
    img.layer_digests.push_back(d);
    img.diff_ids.push_back(fake_diff_ids.empty() ? sha256(l.tar)
                                                 : fake_diff_ids[img.diff_ids.size()]);
    layer_list.push_back({{"mediaType", media}, {"digest", d}, {"size", blob.size()}});
    diff_ids.push_back(img.diff_ids.back());
  }
  nlohmann::json config = {{"architecture", host_arch()},
                           {"os", "linux"},
                           {"config", {{"Cmd", {"/bin/sh"}}}},
                           {"rootfs", {{"type", "layers"}, {"diff_ids", diff_ids}}}};
  std::string config_bytes = config.dump();
  img.config_digest = add_blob(config_bytes);
  nlohmann::json manifest = {{"schemaVersion", 2},
                             {"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                             {"config",
                              {{"mediaType", "application/vnd.oci.image.config.v1+json"},
                               {"digest", img.config_digest},
                               {"size", config_bytes.size()}}},
                             {"layers", layer_list}};
  std::string manifest_bytes = manifest.dump();
  img.manifest_digest = add_blob(manifest_bytes);
  nlohmann::json desc = {{"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                         {"digest", img.manifest_digest},
                         {"size", manifest_bytes.size()},
                         {"annotations", {{"org.opencontainers.image.ref.name", ref}}}};
  index_.emplace_back(ref, desc.dump());
  write_index();
  return img;
}

void LayoutBuilder::write_index() {
  nlohmann::json manifests = nlohmann::json::array();
  for (auto& [ref, desc] : index_) manifests.push_back(nlohmann::json::parse(desc));
  write_file(dir_ + "/index.json",
             nlohmann::json{{"schemaVersion", 2}, {"manifests", manifests}}.dump());
}

void write_docker_archive(const std::string& file, const std::vector<Layer>& layers,
                          const std::string& repo_tag) {
  TempDir tmp;
  nlohmann::json diff_ids = nlohmann::json::array();
  nlohmann::json layer_names = nlohmann::json::array();
  for (size_t i = 0; i < layers.size(); ++i) {
    std::string dir = tmp.path() + "/" + std::to_string(i);
    ::mkdir(dir.c_str(), 0755);
    write_file(dir + "/layer.tar", layers[i].tar);
    diff_ids.push_back(sha256(layers[i].tar));
    layer_names.push_back(std::to_string(i) + "/layer.tar");
  }
  std::string config = nlohmann::json{{"architecture", host_arch()},
                                      {"os", "linux"},
                                      {"rootfs", {{"type", "layers"}, {"diff_ids", diff_ids}}}}
                           .dump();
  std::string config_name = sha256_hex(config) + ".json";
  write_file(tmp.path() + "/" + config_name, config);
  write_file(tmp.path() + "/manifest.json",
             nlohmann::json::array(
                 {{{"Config", config_name}, {"RepoTags", {repo_tag}}, {"Layers", layer_names}}})
                 .dump());
  write_dir_archive(tmp.path(), file);
}

void write_dir_archive(const std::string& dir, const std::string& file) {
  if (run("tar -C '" + dir + "' -cf '" + file + "' .") != 0)
    throw std::runtime_error("tar of " + dir + " failed");
}

namespace {

constexpr std::string_view kRootDirs =
    "/ 0 40755 2 0 0 0 1700000000.0 - - -\n"
    "/usr 0 40755 2 0 0 0 1700000000.0 - - -\n";

std::string layer_text(std::string_view body) {
  return std::string(kRootDirs) + std::string(body);
}

}  // namespace

std::vector<Layer> base_image_layers() {
  std::vector<Layer> l;
  l.push_back(dump_layer(layer_text(
      "/bin 7 120777 1 0 0 0 1700000000.0 usr/bin - -\n"
      "/etc 0 40755 2 0 0 0 1700000000.0 - - -\n"
      "/etc/hostname 7 100644 1 0 0 0 1700000000.0 - sample\\x0a -\n"
      "/etc/passwd 120 100644 1 0 0 0 1700000000.0 - - -\n"
      "/run 0 40755 2 0 0 0 1700000000.0 - - -\n"
      "/run/leftover 4 100644 1 0 0 0 1700000000.0 - junk -\n"
      "/tmp 0 41777 2 0 0 0 1700000000.0 - - -\n"
      "/usr/bin 0 40755 2 0 0 0 1700000000.0 - - -\n"
      "/usr/bin/sh 150000 100755 1 0 0 0 1700000000.0 - - -\n"
      "/usr/bin/ping 9000 100755 1 0 0 0 1700000000.0 - - - "
      "security.capability=\\x01\\x00\\x00\\x02\\x00\\x20\\x00\\x00\\x00\\x00\\x00\\x00\\x00"
      "\\x00\\x00\\x00\\x00\\x00\\x00\\x00 user.note=dropped\n"
      "/usr/lib 0 40755 2 0 0 0 1700000000.0 - - -\n")));
  l.push_back(dump_layer(
      layer_text("/usr/lib 0 40755 2 0 0 0 1700000001.0 - - -\n"
                 "/usr/lib/libc.so.6 2000000 100755 1 0 0 0 1700000001.250000000 - - -\n"
                 "/usr/lib/libc-link.so.6 2000000 100755 1 0 0 0 1700000001.250000000 - - -\n"
                 "/usr/lib/libm.so.6 0 @100755 1 0 0 0 1700000001.0 /usr/lib/libc.so.6 - -\n"),
      Compression::zstd));
  l.push_back(
      dump_layer(layer_text("/usr/share 0 40755 2 0 0 0 1700000002.0 - - -\n"
                            "/usr/share/doc 0 40700 2 0 0 0 1700000002.0 - - -\n"
                            "/usr/share/doc/README 300 100644 1 0 0 0 1700000002.0 - - -\n"
                            "/usr/share/doc/tiny 3 100644 1 0 0 0 1700000002.0 - abc -\n"
                            "/usr/share/zero 0 100644 1 0 0 0 1700000002.0 - - -\n"
                            "/usr/share/fifo 0 10644 1 0 0 0 1700000002.0 - - -\n"
                            "/usr/share/null 0 20666 1 0 0 259 1700000002.0 - - -\n")));
  l.push_back(
      dump_layer(layer_text("/etc 0 40755 2 0 0 0 1700000003.0 - - -\n"
                            "/etc/.wh.hostname 0 100644 1 0 0 0 1700000003.0 - - -\n"
                            "/etc/motd 100 100644 1 0 0 0 1700000003.0 - - -\n"
                            "/usr/share 0 40755 2 0 0 0 1700000003.0 - - -\n"
                            "/usr/share/doc 0 40755 2 0 0 0 1700000003.0 - - -\n"
                            "/usr/share/doc/.wh..wh..opq 0 100644 1 0 0 0 1700000003.0 - - -\n"
                            "/usr/share/doc/NEW 200 100644 1 0 0 0 1700000003.0 - - -\n"),
                 Compression::gzip_multimember));
  l.push_back(
      dump_layer(layer_text("/var 0 40755 2 0 0 0 1700000004.0 - - -\n"
                            "/var/lib 0 40755 2 0 0 0 1700000004.0 - - -\n"
                            "/var/lib/app.db 70000 100600 1 1000 1000 0 1700000004.0 - - -\n"),
                 Compression::zstd_chunked));
  return l;
}

std::vector<Layer> bootable_image_layers(int version) {
  std::vector<Layer> l = base_image_layers();
  // Userspace layers 6..16: shared by both versions.
  for (int i = 6; i <= 16; ++i) {
    std::string n = std::to_string(i);
    l.push_back(dump_layer(layer_text("/usr/share 0 40755 2 0 0 0 1700000005.0 - - -\n"
                                      "/usr/share/pkg" +
                                      n +
                                      " 0 40755 2 0 0 0 1700000005.0 - - -\n"
                                      "/usr/share/pkg" +
                                      n +
                                      "/data 50000 100644 1 0 0 0 1700000005.0 - - -\n"
                                      "/usr/share/pkg" +
                                      n + "/small 60 100644 1 0 0 0 1700000005.0 - - -\n"),
                           i % 2 ? Compression::gzip : Compression::zstd));
  }
  // Layer 17: SELinux policy of the image (the boot image is labelled from it).
  l.push_back(dump_layer(layer_text(
      "/boot 0 40755 2 0 0 0 1700000006.0 - - -\n"
      "/sysroot 0 40755 2 0 0 0 1700000006.0 - - -\n"
      "/sysroot/ostree 0 40755 2 0 0 0 1700000006.0 - - -\n"
      "/etc 0 40755 2 0 0 0 1700000006.0 - - -\n"
      "/etc/selinux 0 40755 2 0 0 0 1700000006.0 - - -\n"
      "/etc/selinux/config 39 100644 1 0 0 0 1700000006.0 - "
      "SELINUX=enforcing\\x0aSELINUXTYPE=targeted\\x0a -\n"
      "/etc/selinux/targeted 0 40755 2 0 0 0 1700000006.0 - - -\n"
      "/etc/selinux/targeted/contexts 0 40755 2 0 0 0 1700000006.0 - - -\n"
      "/etc/selinux/targeted/contexts/files 0 40755 2 0 0 0 1700000006.0 - - -\n"
      "/etc/selinux/targeted/contexts/files/file_contexts 190 100644 1 0 0 0 1700000006.0 - "
      "/.*\\x09system_u:object_r:default_t:s0\\x0a"
      "/usr/bin(/.*)?\\x09system_u:object_r:bin_t:s0\\x0a"
      "/etc(/.*)?\\x09system_u:object_r:etc_t:s0\\x0a"
      "/usr/lib/modules(/.*)?\\x09system_u:object_r:modules_object_t:s0\\x0a"
      "/tmp\\x09<<none>>\\x0a -\n")));
  // Layers 18..20: kernel, modules, initramfs and UKI: differ per version.
  std::string kver = version == 1 ? "6.1.0-1" : "6.1.0-2";
  l.push_back(
      dump_layer(layer_text("/usr/lib 0 40755 2 0 0 0 1700000007.0 - - -\n"
                            "/usr/lib/modules 0 40755 2 0 0 0 1700000007.0 - - -\n"
                            "/usr/lib/modules/" +
                            kver +
                            " 0 40755 2 0 0 0 1700000007.0 - - -\n"
                            "/usr/lib/modules/" +
                            kver + "/vmlinuz " + std::to_string(300000 + version) +
                            " 100644 1 0 0 0 1700000007.0 - - -\n")));
  l.push_back(
      dump_layer(layer_text("/usr/lib 0 40755 2 0 0 0 1700000008.0 - - -\n"
                            "/usr/lib/modules 0 40755 2 0 0 0 1700000008.0 - - -\n"
                            "/usr/lib/modules/" +
                            kver +
                            " 0 40755 2 0 0 0 1700000008.0 - - -\n"
                            "/usr/lib/modules/" +
                            kver + "/initramfs.img " + std::to_string(200000 + version) +
                            " 100644 1 0 0 0 1700000008.0 - - -\n"
                            "/usr/lib/modules/" +
                            kver +
                            "/kernel 0 40755 2 0 0 0 1700000008.0 - - -\n"
                            "/usr/lib/modules/" +
                            kver + "/kernel/fs.ko 40000 100644 1 0 0 0 1700000008.0 - - -\n"),
                 Compression::zstd));
  l.push_back(dump_layer(layer_text(
      "/boot 0 40755 2 0 0 0 1700000009.0 - - -\n"
      "/boot/EFI 0 40755 2 0 0 0 1700000009.0 - - -\n"
      "/boot/EFI/Linux 0 40755 2 0 0 0 1700000009.0 - - -\n"
      "/boot/EFI/Linux/cfs-" +
      kver + ".efi " + std::to_string(500000 + version) + " 100644 1 0 0 0 1700000009.0 - - -\n")));
  return l;
}

}  // namespace cfs::test::oci
