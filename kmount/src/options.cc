#include "cfs/kmount/options.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <fstream>

#include "cfs/error.h"

namespace cfs::kmount {

std::vector<std::string> split_mount_options(std::string_view text) {
  std::vector<std::string> out;
  std::string current;
  for (size_t i = 0; i < text.size(); i++) {
    char c = text[i];
    if (c == '\\' && i + 1 < text.size()) {
      current += text[++i];
    } else if (c == ',') {
      out.push_back(std::move(current));
      current.clear();
    } else {
      current += c;
    }
  }
  out.push_back(std::move(current));
  std::erase_if(out, [](const std::string& s) { return s.empty(); });
  return out;
}

namespace {

std::vector<std::string> split_colon_list(std::string_view text) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    size_t end = text.find(':', start);
    std::string_view part = text.substr(start, end == std::string_view::npos ? end : end - start);
    if (!part.empty()) out.emplace_back(part);
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  return out;
}

}  // namespace

void apply_composefs_options(std::string_view text, MountOptions* options) {
  bool digest_given = false;
  bool try_given = false;
  for (const std::string& option : split_mount_options(text)) {
    size_t eq = option.find('=');
    std::string key = option.substr(0, eq);
    std::string value = eq == std::string::npos ? "" : option.substr(eq + 1);
    bool has_value = eq != std::string::npos;
    auto need_value = [&] {
      if (!has_value || value.empty()) throw Error("mount option " + key + " needs a value");
    };
    auto no_value = [&] {
      if (has_value) throw Error("mount option " + key + " takes no value");
    };
    if (key == "basedir") {
      need_value();
      for (std::string& dir : split_colon_list(value)) options->object_dirs.push_back(dir);
    } else if (key == "digest") {
      need_value();
      options->expected_digest = Digest::from_hex(value);
      if (!options->expected_digest)
        throw Error("mount option digest=" + value +
                    ": not a sha256 or sha512 fs-verity digest in hex");
      digest_given = true;
    } else if (key == "verity") {
      no_value();
      options->verity = VerityMode::require;
    } else if (key == "tryverity") {
      no_value();
      try_given = true;
    } else if (key == "upperdir") {
      need_value();
      options->upperdir = value;
    } else if (key == "workdir") {
      need_value();
      options->workdir = value;
    } else if (key == "idmap") {
      need_value();
      options->idmap_userns = value;
    } else if (key == "allow_missing_objects") {
      no_value();
      options->check_objects = false;
    } else if (key == "ro") {
      no_value();
      options->writable = false;
    } else if (key == "rw") {
      no_value();
      options->writable = true;
    } else if (key.starts_with("x-") || key == "defaults" || key == "nofail" || key == "auto" ||
               key == "noauto") {
      // fstab bookkeeping for mount(8) and systemd, meaningless to the filesystem.
    } else {
      throw Error("unsupported composefs mount option: " + option);
    }
  }
  // As in the C tool: a digest implies verity, tryverity only applies when nothing requires it.
  if (digest_given) options->verity = VerityMode::require;
  if (try_given && options->verity == VerityMode::off) options->verity = VerityMode::attempt;
  // mount(8) passes "rw" by default; an overlay without an upper layer is read-only anyway.
  if (options->upperdir.empty()) options->writable = false;
}

std::string helper_image_source(const std::string& source, const std::string& sysfs_block) {
  struct stat st;
  if (::stat(source.c_str(), &st) != 0 || !S_ISBLK(st.st_mode)) return source;
  std::string device = std::to_string(major(st.st_rdev)) + ":" + std::to_string(minor(st.st_rdev));
  std::ifstream in(sysfs_block + "/" + device + "/loop/backing_file");
  std::string backing;
  if (!in || !std::getline(in, backing) || backing.empty()) return source;  // not a bound loop
  constexpr std::string_view deleted = " (deleted)";
  if (backing.ends_with(deleted))
    throw Error(source + ": a loop device whose backing file " +
                backing.substr(0, backing.size() - deleted.size()) + " was deleted");
  return backing;
}

}  // namespace cfs::kmount
