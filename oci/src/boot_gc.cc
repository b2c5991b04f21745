// Boot entry removal and the boot directory's garbage collection (oci/include/cfs/oci/boot.h).
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <set>

#include "cfs/error.h"
#include "cfs/escape.h"
#include "cfs/fd.h"
#include "cfs/oci/boot.h"

namespace cfs::oci {

namespace {

struct DirCloser {
  void operator()(DIR* d) const { ::closedir(d); }
};

// Names in dir (sorted, without . and ..); empty if dir does not exist.
std::vector<std::string> names_in(const std::string& dir) {
  std::vector<std::string> out;
  std::unique_ptr<DIR, DirCloser> d(::opendir(dir.c_str()));
  if (!d) {
    if (errno == ENOENT) return out;
    throw_errno(dir);
  }
  while (dirent* e = ::readdir(d.get())) {
    std::string name = e->d_name;
    if (name != "." && name != "..") out.push_back(name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool lstat_is(const std::string& path, mode_t type) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0 && (st.st_mode & S_IFMT) == type;
}

void remove_file(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) throw_errno(path + ": cannot remove");
}

// Removes dir's regular files and then dir; anything else in it is an error (left alone).
void remove_flat_dir(const std::string& dir) {
  for (const std::string& name : names_in(dir)) {
    if (!lstat_is(dir + "/" + name, S_IFREG))
      throw Error(dir + "/" + name + " is not a regular file; not removing " + dir);
    remove_file(dir + "/" + name);
  }
  if (::rmdir(dir.c_str()) != 0) throw_errno(dir + ": cannot remove");
}

void require_dir(const std::string& bootdir) {
  if (!lstat_is(bootdir, S_IFDIR))
    throw Error(bootdir + ": no such directory (the boot partition's root, --bootdir)");
}

// The files Type 1 entries name (linux, initrd, efi, devicetree), relative to bootdir.
std::set<std::string> named_files(const std::string& bootdir) {
  std::set<std::string> named;
  const std::string entries = bootdir + "/loader/entries";
  for (const std::string& name : names_in(entries)) {
    if (!name.ends_with(".conf") || !lstat_is(entries + "/" + name, S_IFREG)) continue;
    UniqueFd fd = open_file(entries + "/" + name, O_RDONLY | O_CLOEXEC);
    std::string text = read_fd(fd.get(), entries + "/" + name, 1 << 20);
    size_t at = 0;
    while (at < text.size()) {
      size_t nl = text.find('\n', at);
      std::string line = text.substr(at, nl == std::string::npos ? std::string::npos : nl - at);
      at = nl == std::string::npos ? text.size() : nl + 1;
      size_t key_end = line.find_first_of(" \t");
      if (key_end == std::string::npos) continue;
      std::string key = line.substr(0, key_end);
      if (key != "linux" && key != "initrd" && key != "efi" && key != "devicetree") continue;
      size_t v = line.find_first_not_of(" \t", key_end);
      if (v == std::string::npos) continue;
      std::string value = line.substr(v);
      while (!value.empty() &&
             (value.back() == ' ' || value.back() == '\t' || value.back() == '\r'))
        value.pop_back();
      while (value.starts_with('/')) value.erase(0, 1);
      named.insert(value);
    }
  }
  return named;
}

bool is_boot_file_name(const std::string& name) {
  return name == "vmlinuz" || name == "initramfs.img" || name.ends_with(".efi");
}

// The list prepare-boot leaves in a directory it relocated an image's entry into: the names of
// the files it put there, one a line.
constexpr std::string_view kFileList = ".cfs-boot-files";

std::set<std::string> listed_files(const std::string& dir) {
  std::set<std::string> listed;
  const std::string path = dir + "/" + std::string(kFileList);
  if (!lstat_is(path, S_IFREG)) return listed;
  UniqueFd fd = open_file(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  std::string text = read_fd(fd.get(), path, 1 << 20);
  for (size_t at = 0; at < text.size();) {
    size_t nl = text.find('\n', at);
    std::string line = text.substr(at, nl == std::string::npos ? std::string::npos : nl - at);
    at = nl == std::string::npos ? text.size() : nl + 1;
    if (!line.empty()) listed.insert(line);
  }
  return listed;
}

}  // namespace

std::vector<std::string> remove_boot_entry(const std::string& bootdir, const std::string& id) {
  require_dir(bootdir);
  if (id.empty() || id == "." || id == ".." || id.find('/') != std::string::npos)
    throw Error("boot entry id '" + escape_for_log(id) + "' is not a plain file name");
  std::vector<std::string> removed;
  const std::string conf = bootdir + "/loader/entries/" + id + ".conf";
  const std::string uki = bootdir + "/EFI/Linux/" + id + ".efi";
  const std::string addons = uki + ".extra.d";
  if (lstat_is(conf, S_IFREG)) {
    remove_file(conf);
    removed.push_back(conf);
  }
  if (lstat_is(uki, S_IFREG)) {
    // The UKI first: addons without their UKI are never loaded, a UKI without its addons is.
    remove_file(uki);
    removed.push_back(uki);
  }
  if (lstat_is(addons, S_IFDIR)) {
    remove_flat_dir(addons);
    removed.push_back(addons);
  }
  if (removed.empty())
    throw Error(bootdir + ": no boot entry '" + escape_for_log(id) + "' (neither " + conf +
                " nor " + uki + ")");
  return removed;
}

std::vector<std::string> gc_boot_dir(const std::string& bootdir, bool dry_run) {
  require_dir(bootdir);
  std::set<std::string> named = named_files(bootdir);
  std::vector<std::string> garbage;
  for (const std::string& dir : names_in(bootdir)) {
    std::string path = bootdir + "/" + dir;
    if (dir == "EFI" || dir == "loader" || dir.starts_with('.') || !lstat_is(path, S_IFDIR))
      continue;
    // Only the flat directories boot entries keep their kernels in: other directories
    // (grub/, efi/, anything with a subdirectory or a symlink) are not the entries' to clean.
    std::vector<std::string> files = names_in(path);
    bool flat = std::all_of(files.begin(), files.end(), [&](const std::string& f) {
      return lstat_is(path + "/" + f, S_IFREG);
    });
    if (!flat || files.empty()) continue;
    std::set<std::string> listed = listed_files(path);
    size_t collected = 0;
    for (const std::string& f : files) {
      if (f == kFileList) continue;
      if ((is_boot_file_name(f) || listed.contains(f)) && !named.contains(dir + "/" + f)) {
        garbage.push_back(path + "/" + f);
        ++collected;
      }
    }
    // The list goes last, with the last file it covers.
    bool has_list = std::find(files.begin(), files.end(), kFileList) != files.end();
    if (has_list && collected + 1 == files.size())
      garbage.push_back(path + "/" + std::string(kFileList));
  }
  // Addon directories whose UKI is gone.
  const std::string linux_dir = bootdir + "/EFI/Linux";
  for (const std::string& name : names_in(linux_dir)) {
    if (!name.ends_with(".efi.extra.d")) continue;
    std::string uki =
        linux_dir + "/" + name.substr(0, name.size() - std::string(".extra.d").size());
    if (!lstat_is(uki, S_IFREG) && lstat_is(linux_dir + "/" + name, S_IFDIR))
      garbage.push_back(linux_dir + "/" + name);
  }
  if (dry_run) return garbage;
  for (const std::string& path : garbage) {
    if (lstat_is(path, S_IFDIR)) {
      remove_flat_dir(path);
      continue;
    }
    remove_file(path);
    std::string dir = path.substr(0, path.rfind('/'));
    if (names_in(dir).empty() && ::rmdir(dir.c_str()) != 0) throw_errno(dir + ": cannot remove");
  }
  return garbage;
}

}  // namespace cfs::oci
