#include "cfs/kmount/setup_root.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cctype>
#include <cstring>

#include "cfs/error.h"
#include "cfs/fd.h"
#include "cfs/kmount/repo.h"
#include "cfs/repo_layout.h"
#include "cfs/safe_open.h"
#include "enum_names.h"
#include "kernel.h"

namespace cfs::kmount {

using detail::fd_path;

namespace {

constexpr auto kStateMounts = detail::enum_names(
    std::pair{StateMount::none, "none"}, std::pair{StateMount::bind, "bind"},
    std::pair{StateMount::overlay, "overlay"}, std::pair{StateMount::transient, "transient"});

}  // namespace

std::string_view to_string(StateMount mode) {
  return kStateMounts.name(mode);
}

namespace {

// Kernel command-line words: separated by whitespace, double quotes group and are dropped.
std::vector<std::string> cmdline_words(std::string_view cmdline) {
  std::vector<std::string> words;
  std::string word;
  bool quoted = false, in_word = false;
  for (char c : cmdline) {
    if (c == '"') {
      quoted = !quoted;
      in_word = true;
    } else if (!quoted && std::isspace(static_cast<unsigned char>(c))) {
      if (in_word) words.push_back(std::move(word));
      word.clear();
      in_word = false;
    } else {
      word += c;
      in_word = true;
    }
  }
  if (in_word) words.push_back(std::move(word));
  return words;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

}  // namespace

std::vector<BootImage> parse_kernel_cmdline(std::string_view cmdline) {
  std::vector<BootImage> images;
  for (const std::string& word : cmdline_words(cmdline)) {
    size_t eq = word.find('=');
    if (eq == std::string::npos) continue;
    std::string_view key = std::string_view(word).substr(0, eq);
    std::string_view value = std::string_view(word).substr(eq + 1);
    if (key != "composefs" && key != "composefs.digest") continue;
    BootImage image;
    if (value.starts_with('?')) {
      image.insecure = true;
      value.remove_prefix(1);
    }
    auto bad = [&](const std::string& why) {
      return Error("kernel command line: " + word + ": " + why);
    };
    std::optional<Digest> digest;
    if (key == "composefs") {
      digest = Digest::from_hex(value);
      if (!digest) throw bad("expected 64 or 128 hex digits");
    } else {
      // <format>-<algorithm>-<log2 block size>:<hex>, e.g. v1-sha256-12:...
      size_t colon = value.find(':');
      if (colon == std::string_view::npos) throw bad("expected v1-sha256-12:<hex>");
      std::string_view spec = value.substr(0, colon);
      std::optional<HashAlgorithm> alg;
      for (std::string_view version : {"v1-", "v2-"}) {
        if (!spec.starts_with(version)) continue;
        std::string_view rest = spec.substr(version.size());
        if (rest == "sha256-12") alg = HashAlgorithm::sha256;
        if (rest == "sha512-12") alg = HashAlgorithm::sha512;
      }
      if (!alg)
        throw bad("unknown digest kind " + std::string(spec) + " (v1-sha256-12, v1-sha512-12)");
      digest = Digest::from_hex(value.substr(colon + 1), *alg);
      if (!digest)
        throw bad("expected " + std::to_string(2 * digest_size(*alg)) + " hex digits after ':'");
    }
    image.digest = *digest;
    images.push_back(image);
  }
  return images;
}

SetupRootConfig parse_setup_root_config(std::string_view text, const std::string& what) {
  SetupRootConfig config;
  std::string section;
  size_t line_no = 0;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    line_no++;
    auto bad = [&](const std::string& why) {
      return Error(what + ":" + std::to_string(line_no) + ": " + why);
    };
    if (size_t hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    line = trim(line);
    if (line.empty()) continue;
    if (line.front() == '[') {
      if (line.back() != ']') throw bad("unterminated section header");
      section = std::string(trim(line.substr(1, line.size() - 2)));
      if (section != "etc" && section != "var" && section != "root")
        throw bad("unknown section [" + section + "] (expected [root], [etc], [var])");
      continue;
    }
    size_t eq = line.find('=');
    if (eq == std::string_view::npos) throw bad("expected key = value");
    std::string key(trim(line.substr(0, eq)));
    std::string_view value = trim(line.substr(eq + 1));
    bool quoted = value.size() >= 2 && value.front() == '"' && value.back() == '"';
    if (quoted) value = value.substr(1, value.size() - 2);
    if (section.empty()) throw bad(key + " outside of a section");
    if (key == "transient") {
      if (quoted || (value != "true" && value != "false"))
        throw bad("transient must be true or false");
      if (section == "root") {
        config.root_transient = value == "true";
        continue;
      }
      StateMount& target = section == "etc" ? config.etc : config.var;
      if (value == "true") target = StateMount::transient;
    } else if (key == "mount" && section != "root") {
      if (!quoted) throw bad("mount takes a quoted string");
      std::optional<StateMount> mode = kStateMounts.parse(value);
      if (!mode)
        throw bad("mount = \"" + std::string(value) +
                  "\": expected none, bind, overlay or transient");
      (section == "etc" ? config.etc : config.var) = *mode;
    } else {
      throw bad("unknown key " + key + " in [" + section + "]");
    }
  }
  return config;
}

namespace {

// Creates sysroot/rel beneath the sysroot without following symlinks: a symlink planted in
// the state tree must not make root create or bind-mount directories elsewhere.
UniqueFd make_state_dir(int sysroot_fd, const std::string& sysroot, const std::string& rel,
                        mode_t mode) {
  const std::string path = sysroot + "/" + rel;
  try {
    UniqueFd fd = mkdirs_beneath(sysroot_fd, rel, 0755, path);
    if (::fchmod(fd.get(), mode) < 0) throw_errno(path);
    return fd;
  } catch (const SystemError& e) {
    std::string hint = e.code() == EROFS ? " (the physical root must be mounted read-write, e.g. "
                                           "kernel argument \"rw\")"
                                         : "";
    throw Error(path + ": cannot create the state directory: " + e.what() + hint);
  }
}

// State directories are opened before the new root hides the old sysroot.
struct StateDirs {
  UniqueFd dir;    // bind source
  UniqueFd upper;  // overlay layers
  UniqueFd work;
};

// state is relative to the sysroot ("state/deploy/<hex>").
StateDirs prepare_state(int sysroot_fd, const std::string& sysroot, const std::string& state,
                        const std::string& name, StateMount mode) {
  StateDirs dirs;
  std::string base = state + "/" + name;
  if (mode == StateMount::bind) {
    dirs.dir = make_state_dir(sysroot_fd, sysroot, base, 0755);
  } else if (mode == StateMount::overlay) {
    dirs.upper = make_state_dir(sysroot_fd, sysroot, base + "/upper", 0755);
    dirs.work = make_state_dir(sysroot_fd, sysroot, base + "/work", 0700);
  }
  return dirs;
}

UniqueFd open_mountpoint(int root_fd, const std::string& name) {
  UniqueFd fd(::openat(root_fd, name.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) throw_errno("the image's /" + name + " (needed as a mount point)");
  return fd;
}

void mount_overlay_on(int target_fd, const std::string& lower, const std::string& upper,
                      const std::string& work, const std::string& label) {
  detail::FsContext ctx("overlay");
  ctx.set_string("source", label);
  // Plain "lowerdir": one lower, understood by every overlayfs with the mount API.
  ctx.set_string("lowerdir", lower);
  ctx.set_string("upperdir", upper);
  ctx.set_string("workdir", work);
  ctx.create();
  UniqueFd m = ctx.mount(0);
  detail::attach_mount(m.get(), target_fd, label);
}

// Covers target (the directory lower_fd also names, or one above it) with an overlay of lower
// and a fresh tmpfs upper. The tmpfs is attached on the target first so that it lives as long
// as the overlay; lower stays reachable through its fd, opened before.
void mount_transient_overlay(int target_fd, int lower_fd, const std::string& label) {
  detail::FsContext tmpfs("tmpfs");
  tmpfs.set_string("source", label);
  tmpfs.set_string("mode", "0755");
  tmpfs.create();
  UniqueFd tmp = tmpfs.mount(0);
  if (::mkdirat(tmp.get(), "upper", 0755) < 0 || ::mkdirat(tmp.get(), "work", 0700) < 0)
    throw_errno("tmpfs for " + label);
  UniqueFd upper(::openat(tmp.get(), "upper", O_PATH | O_DIRECTORY | O_CLOEXEC));
  UniqueFd work(::openat(tmp.get(), "work", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!upper || !work) throw_errno("tmpfs for " + label);
  detail::attach_mount(tmp.get(), target_fd, label + " (tmpfs)");
  mount_overlay_on(target_fd, fd_path(lower_fd), fd_path(upper.get()), fd_path(work.get()), label);
}

// image_fd is the composefs image's root, root_fd the new root (the same, or the transient root
// overlay over it): the mount goes on root_fd's directory, an overlay's lower is the image's
// directory, so no overlay stacks on another beyond the kernel's depth limit of two.
void mount_state(int image_fd, int root_fd, const std::string& name, StateMount mode,
                 StateDirs& dirs, const std::function<void(std::string_view)>& log,
                 const std::string& state) {
  if (mode == StateMount::none) {
    log("/" + name + ": as in the image");
    return;
  }
  UniqueFd target = open_mountpoint(root_fd, name);
  if (mode == StateMount::bind) {
    UniqueFd tree(
        ::open_tree(dirs.dir.get(), "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH));
    if (!tree) throw_errno(state + "/" + name + ": cannot clone for a bind mount");
    detail::attach_mount(tree.get(), target.get(), "/" + name);
    log("/" + name + ": bind mount of " + state + "/" + name);
    return;
  }
  UniqueFd lower = open_mountpoint(image_fd, name);
  if (mode == StateMount::overlay) {
    mount_overlay_on(target.get(), fd_path(lower.get()), fd_path(dirs.upper.get()),
                     fd_path(dirs.work.get()), "composefs-" + name);
    log("/" + name + ": overlay, changes in " + state + "/" + name + "/upper");
  } else {
    mount_transient_overlay(target.get(), lower.get(), "composefs-" + name);
    log("/" + name + ": transient overlay (changes are lost at reboot)");
  }
}

}  // namespace

std::string link_volatile_root(const std::string& gpt_auto_root, const std::string& volatile_root) {
  struct stat st;
  if (::stat(gpt_auto_root.c_str(), &st) < 0)
    return gpt_auto_root + ": " + std::strerror(errno) + "; " + volatile_root + " not linked";
  if (!S_ISBLK(st.st_mode))
    return gpt_auto_root + " is not a block device; " + volatile_root + " not linked";
  std::string target =
      "/dev/block/" + std::to_string(major(st.st_rdev)) + ":" + std::to_string(minor(st.st_rdev));
  if (::symlink(target.c_str(), volatile_root.c_str()) == 0)
    return volatile_root + " -> " + target + " (" + gpt_auto_root + ")";
  if (errno == EEXIST) return volatile_root + " exists already; kept";
  return volatile_root + ": " + std::strerror(errno) + " (best effort, ignored)";
}

void setup_root(const SetupRootOptions& options, const std::function<void(std::string_view)>& log) {
  const std::string& sysroot = options.sysroot;
  if (!options.gpt_auto_root.empty())
    log(link_volatile_root(options.gpt_auto_root, options.volatile_root));
  std::string cmdline = read_file(options.cmdline_file);
  std::vector<BootImage> candidates = parse_kernel_cmdline(cmdline);
  if (candidates.empty())
    throw Error(options.cmdline_file +
                ": no composefs.digest= or composefs= argument on the kernel command line");

  SetupRootConfig config;
  if (::access(options.config_file.c_str(), F_OK) == 0) {
    config = parse_setup_root_config(read_file(options.config_file), options.config_file);
    log("config " + options.config_file +
        ": root=" + (config.root_transient ? "transient" : "image") + " etc=" +
        std::string(to_string(config.etc)) + " var=" + std::string(to_string(config.var)));
  } else {
    log("no " + options.config_file + "; defaults etc=overlay var=bind");
  }

  std::string repo = sysroot + "/composefs";
  UniqueFd sysroot_fd = open_file(sysroot, O_PATH | O_DIRECTORY | O_CLOEXEC);
  const BootImage* chosen = nullptr;
  for (const BootImage& c : candidates) {
    const std::string entry = repo_layout::image_entry(c.digest);
    if (lstat_beneath(sysroot_fd.get(), "composefs/" + entry, repo + "/" + entry)) {
      chosen = &c;
      break;
    }
    log("image " + c.digest.hex() + " not in " + repo + "/images; trying the next one");
  }
  if (!chosen)
    throw Error(repo + "/images: none of the images named on the kernel command line exists");
  std::string hex = chosen->digest.hex();
  log("image " + hex +
      (chosen->insecure ? " (insecure: no verity enforcement)" : " (verity required)"));

  // The image and objects/ are resolved beneath the repository without following symlinks
  // and mounted through these fds.
  RepoImage resolved = resolve_repo_image(repo, hex);
  std::string state_rel = "state/deploy/" + hex;
  std::string state = sysroot + "/" + state_rel;
  StateDirs etc = prepare_state(sysroot_fd.get(), sysroot, state_rel, "etc", config.etc);
  StateDirs var = prepare_state(sysroot_fd.get(), sysroot, state_rel, "var", config.var);
  UniqueFd old_root(
      ::open_tree(AT_FDCWD, sysroot.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE));
  if (!old_root) throw_errno(sysroot + ": cannot clone the physical root");

  MountOptions mount;
  mount.object_dirs = {resolved.objects_path()};
  mount.expected_digest = chosen->digest;
  mount.verity = chosen->insecure ? VerityMode::off : VerityMode::require;
  mount.overrides = options.overrides;
  // The composefs root goes on top of the sysroot; the physical root stays underneath and is
  // re-exposed at <new root>/sysroot.
  struct stat physical {};
  if (::stat(sysroot.c_str(), &physical) < 0) throw_errno(sysroot);
  MountReport report = mount_image(resolved.mount_path(), sysroot, mount);
  log("mounted " + hex + " on " + sysroot + ": " + report.summary());
  try {
    UniqueFd image_root = open_file(sysroot, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (config.root_transient) {
      mount_transient_overlay(image_root.get(), image_root.get(), "composefs-root");
      log("/: transient overlay over the image (changes are lost at reboot)");
    }
    UniqueFd root = open_file(sysroot, O_PATH | O_DIRECTORY | O_CLOEXEC);
    mount_state(image_root.get(), root.get(), "etc", config.etc, etc, log, state);
    mount_state(image_root.get(), root.get(), "var", config.var, var, log, state);
    UniqueFd sysroot_dir(
        ::openat(root.get(), "sysroot", O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (sysroot_dir) {
      detail::attach_mount(old_root.get(), sysroot_dir.get(), sysroot + "/sysroot");
      log("physical root available at /sysroot in the new root");
    } else {
      log("the image has no /sysroot directory; the physical root is not exposed in it");
    }
  } catch (const Error& e) {
    // Everything stacked on the sysroot (image, transient tmpfs and overlay) comes off, with
    // the state mounts below them, until the physical root shows again.
    struct stat now {};
    for (int i = 0; i < 8 && ::stat(sysroot.c_str(), &now) == 0 && now.st_dev != physical.st_dev;
         i++)
      ::umount2(sysroot.c_str(), MNT_DETACH);
    throw Error(std::string(e.what()) + " (new root on " + sysroot + " taken down again)");
  }
  log("new root ready on " + sysroot);
}

}  // namespace cfs::kmount
