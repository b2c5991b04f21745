#include "layout_extract.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "oci_fixture.h"
#include "testdata.h"

namespace cfs::test::oci {

namespace {

namespace fs = std::filesystem;

struct ReadFree {
  void operator()(archive* a) const { archive_read_free(a); }
};
struct WriteFree {
  void operator()(archive* a) const { archive_write_free(a); }
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The tar path without "./" prefixes and trailing slashes; "" for the root.
std::string clean(std::string path) {
  while (path.starts_with("./")) path.erase(0, 2);
  while (path.starts_with('/')) path.erase(0, 1);
  while (!path.empty() && path.back() == '/') path.pop_back();
  return path == "." ? std::string() : path;
}

void empty_directory(const fs::path& dir) {
  for (const auto& child : fs::directory_iterator(dir)) fs::remove_all(child.path());
}

void extract_layer(const std::string& blob, const fs::path& dest) {
  std::unique_ptr<archive, ReadFree> in(archive_read_new());
  archive_read_support_filter_all(in.get());
  archive_read_support_format_tar(in.get());
  if (archive_read_open_filename(in.get(), blob.c_str(), 1 << 16) != ARCHIVE_OK)
    throw std::runtime_error(blob + ": " + archive_error_string(in.get()));
  std::unique_ptr<archive, WriteFree> out(archive_write_disk_new());
  archive_write_disk_set_options(out.get(), ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM |
                                                ARCHIVE_EXTRACT_OWNER | ARCHIVE_EXTRACT_XATTR |
                                                ARCHIVE_EXTRACT_SECURE_SYMLINKS |
                                                ARCHIVE_EXTRACT_SECURE_NODOTDOT);
  archive_entry* entry = nullptr;
  // libarchive sets the times of a directory that already exists right away, and later
  // entries of the layer change them again: every directory's time is set once more at the
  // end.
  std::vector<std::pair<fs::path, struct timespec>> dir_times;
  for (;;) {
    int r = archive_read_next_header(in.get(), &entry);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) throw std::runtime_error(blob + ": " + archive_error_string(in.get()));
    std::string path = clean(archive_entry_pathname(entry));
    fs::path target = path.empty() ? dest : dest / path;
    std::string base = target.filename().string();
    if (!path.empty() && base.starts_with(".wh.")) {
      if (base == ".wh..wh..opq")
        empty_directory(target.parent_path());
      else
        fs::remove_all(target.parent_path() / base.substr(4));
      continue;
    }
    struct stat st;
    bool is_dir = archive_entry_filetype(entry) == AE_IFDIR && !archive_entry_hardlink(entry);
    if (!path.empty() && ::lstat(target.c_str(), &st) == 0 && !(is_dir && S_ISDIR(st.st_mode)))
      fs::remove_all(target);
    if (is_dir)
      dir_times.push_back({target, {archive_entry_mtime(entry), archive_entry_mtime_nsec(entry)}});
    archive_entry_set_pathname(entry, target.c_str());
    if (const char* link = archive_entry_hardlink(entry))
      archive_entry_set_hardlink(entry, (dest / clean(link)).c_str());
    if (archive_write_header(out.get(), entry) < ARCHIVE_WARN)
      throw std::runtime_error(target.string() + ": " + archive_error_string(out.get()));
    const void* buf;
    size_t size;
    la_int64_t offset;
    while ((r = archive_read_data_block(in.get(), &buf, &size, &offset)) == ARCHIVE_OK)
      if (archive_write_data_block(out.get(), buf, size, offset) < ARCHIVE_WARN)
        throw std::runtime_error(target.string() + ": " + archive_error_string(out.get()));
    if (r != ARCHIVE_EOF) throw std::runtime_error(blob + ": " + archive_error_string(in.get()));
    if (archive_write_finish_entry(out.get()) < ARCHIVE_WARN)
      throw std::runtime_error(target.string() + ": " + archive_error_string(out.get()));
  }
  // Directory times and modes are set here, after their children were written.
  if (archive_write_close(out.get()) != ARCHIVE_OK)
    throw std::runtime_error(blob + ": " + archive_error_string(out.get()));
  for (const auto& [dir, mtime] : dir_times) {
    struct timespec times[2] = {mtime, mtime};
    if (::utimensat(AT_FDCWD, dir.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0)
      throw std::runtime_error(dir.string() + ": cannot set its mtime");
  }
}

// Root /, /usr, /run, /boot and /sysroot with different metadata, nanosecond mtimes, a file
// in /run hardlinked from /etc (its nlink drops when /run is emptied), xattrs the allowlist
// drops and one it keeps.
std::vector<Layer> transform_layers() {
  std::vector<Layer> l;
  l.push_back(dump_layer(
      "/ 0 40700 2 5 6 0 1600000000.5 - - - user.root=1\n"
      "/usr 0 40755 2 0 0 0 1700000000.123456789 - - - user.usr=yes\n"
      "/usr/bin 0 40755 2 0 0 0 1700000000.0 - - -\n"
      "/usr/bin/tool 5000 100755 1 0 0 0 1700000000.0 - - - "
      "security.capability=\\x01\\x00\\x00\\x02\\x00\\x20\\x00\\x00\\x00\\x00\\x00\\x00\\x00"
      "\\x00\\x00\\x00\\x00\\x00\\x00\\x00 user.kept=maybe\n"
      "/run 0 40755 2 0 0 0 1650000000.75 - - -\n"
      "/run/lock 0 41777 2 0 0 0 1650000000.0 - - -\n"
      "/run/shared 300 100644 1 0 0 0 1650000000.0 - - -\n"
      "/etc 0 40755 2 0 0 0 1700000001.0 - - -\n"
      "/etc/also-shared 0 @100644 1 0 0 0 1650000000.0 /run/shared - -\n"
      "/boot 0 40755 2 0 0 0 1690000000.987654321 - - -\n"
      "/boot/vmlinuz 4000 100644 1 0 0 0 1690000000.0 - - -\n"
      "/sysroot 0 40755 2 0 0 0 1690000001.25 - - -\n"
      "/sysroot/ostree 0 40755 2 0 0 0 1690000001.0 - - -\n"));
  l.push_back(
      dump_layer("/ 0 40711 2 7 8 0 1600000001.0 - - -\n"
                 "/usr 0 40755 2 0 0 0 1700000000.123456789 - - - user.usr=yes\n"
                 "/usr/share 0 40755 2 0 0 0 1700000002.5 - - -\n"
                 "/usr/share/note 90 100644 1 0 0 0 1700000002.5 - - - user.note=x\n",
                 Compression::zstd));
  return l;
}

}  // namespace

std::vector<TestLayout> build_test_layouts(const std::string& parent, GzipMembers gzip) {
  // The same tars either way: only the compressed blobs (and so the manifests) differ.
  auto layers = [gzip](std::vector<Layer> l) {
    if (gzip == GzipMembers::single)
      for (Layer& layer : l)
        if (layer.compression == Compression::gzip_multimember)
          layer.compression = Compression::gzip;
    return l;
  };
  std::vector<TestLayout> out;
  LayoutBuilder b(parent + "/fixture");
  b.add_image(layers(base_image_layers()), "base");
  out.push_back({b.dir(), "base", "base"});
  b.add_image(layers(bootable_image_layers(1)), "os1");
  out.push_back({b.dir(), "os1", "bootable-v1"});
  b.add_image(layers(bootable_image_layers(2)), "os2");
  out.push_back({b.dir(), "os2", "bootable-v2"});
  b.add_image(layers(transform_layers()), "transforms");
  out.push_back({b.dir(), "transforms", "transforms"});
  std::string script = std::string(CFS_TESTDATA) + "/../oci/make-sample-layout.sh";
  std::string log;
  if (run(script + " " + parent + "/gnu-tar --layers 3 --size-mib 1 --compress gzip", &log) != 0)
    throw std::runtime_error("make-sample-layout.sh failed: " + log);
  out.push_back({parent + "/gnu-tar", "latest", "gnu-tar-sample"});
  return out;
}

TestLayout build_transform_layout(const std::string& parent) {
  LayoutBuilder b(parent + "/transforms");
  b.add_image(transform_layers(), "transforms");
  return {b.dir(), "transforms", "transforms"};
}

void extract_image(const std::string& layout, const std::string& ref, const std::string& dest) {
  using nlohmann::json;
  json index = json::parse(slurp(layout + "/index.json"));
  std::string manifest_digest;
  for (const json& m : index["manifests"])
    if (m.contains("annotations") &&
        m["annotations"].value("org.opencontainers.image.ref.name", "") == ref)
      manifest_digest = m["digest"].get<std::string>();
  if (manifest_digest.empty()) throw std::runtime_error(layout + ": no image " + ref);
  auto blob = [&](const std::string& digest) {
    return layout + "/blobs/sha256/" + digest.substr(digest.find(':') + 1);
  };
  json manifest = json::parse(slurp(blob(manifest_digest)));
  for (const json& layer : manifest["layers"])
    extract_layer(blob(layer["digest"].get<std::string>()), dest);
}

}  // namespace cfs::test::oci
