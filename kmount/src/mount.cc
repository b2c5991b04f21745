#include "cfs/kmount/mount.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "cfs/erofs/format.h"
#include "cfs/erofs/tree.h"
#include "cfs/erofs/writer.h"
#include "cfs/error.h"
#include "cfs/fd.h"
#include "cfs/kmount/verity.h"
#include "enum_names.h"
#include "kernel.h"
#include "validate.h"

namespace cfs::kmount {

using detail::fd_path;
using detail::FsContext;
using detail::LoopDevice;
using detail::MountApiError;
using detail::TemporaryAttachment;

namespace {

constexpr auto kVerityModes =
    detail::enum_names(std::pair{VerityMode::off, "off"}, std::pair{VerityMode::attempt, "try"},
                       std::pair{VerityMode::require, "require"});
constexpr auto kOverlayTiers =
    detail::enum_names(std::pair{OverlayTier::fd, "fd"}, std::pair{OverlayTier::string, "string"},
                       std::pair{OverlayTier::legacy_dataonly, "legacy-dataonly"},
                       std::pair{OverlayTier::legacy_lower, "legacy-lower"});

}  // namespace

std::string_view to_string(VerityMode mode) {
  return kVerityModes.name(mode);
}
std::optional<VerityMode> parse_verity_mode(std::string_view text) {
  return kVerityModes.parse(text);
}
std::string_view to_string(OverlayTier tier) {
  return kOverlayTiers.name(tier);
}
std::optional<OverlayTier> parse_overlay_tier(std::string_view text) {
  return kOverlayTiers.parse(text);
}

KernelOverrides KernelOverrides::from_environment() {
  KernelOverrides o;
  auto flag = [](const char* name) {
    const char* v = std::getenv(name);
    return v && *v && std::string_view(v) != "0";
  };
  if (const char* tier = std::getenv("CFS_MOUNT_FORCE_TIER"); tier && *tier) {
    o.force_tier = parse_overlay_tier(tier);
    if (!o.force_tier)
      throw Error(std::string("CFS_MOUNT_FORCE_TIER=") + tier +
                  ": unknown tier (fd, string, legacy-dataonly, legacy-lower)");
  }
  o.force_loop = flag("CFS_MOUNT_FORCE_LOOP");
  o.force_attached = flag("CFS_MOUNT_FORCE_ATTACHED");
  return o;
}

std::string MountReport::summary() const {
  std::string s = "tier=" + std::string(to_string(tier)) + " erofs=" + erofs_source +
                  (erofs_attached ? "(attached)" : "(detached)") +
                  " digest-check=" + std::string(to_string(digest_check)) +
                  " verity=" + (verity_applied ? "require" : "off") +
                  " validated=" + std::to_string(validated_inodes) +
                  "-inodes objects=" + std::to_string(objects) +
                  (objects_checked ? "(present)" : "(unchecked)");
  char timing[96];
  std::snprintf(timing, sizeof timing, "\n  validation: reader %.2f ms, object lookups %.2f ms",
                validation_ms, object_check_ms);
  s += timing;
  for (const std::string& f : fallbacks) s += "\n  fallback: " + f;
  return s;
}

namespace {

// The tier cannot work on this kernel (a layer parameter or the whole API was refused); the
// next tier is tried.
class TierUnsupported : public Error {
 public:
  using Error::Error;
};

UniqueFd open_directory(const std::string& path, const std::string& role) {
  UniqueFd fd(::open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) throw Error(path + ": " + role + " does not exist");
    if (errno == ENOTDIR) throw Error(path + ": " + role + " is not a directory");
    throw_errno(path + ": " + role);
  }
  return fd;
}

struct ImageFile {
  UniqueFd fd;
  bool block_device = false;
  bool has_acl = true;  // plain EROFS images (no composefs header) keep ACL support
};

ImageFile open_image(const std::string& path) {
  ImageFile image;
  image.fd.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!image.fd) {
    if (errno == ENOENT) throw Error(path + ": no such image file");
    throw_errno(path + ": cannot open the image");
  }
  struct stat st {};
  if (::fstat(image.fd.get(), &st) < 0) throw_errno(path);
  image.block_device = S_ISBLK(st.st_mode);
  if (!image.block_device && !S_ISREG(st.st_mode))
    throw Error(path + ": not a regular file or block device");
  constexpr uint64_t min_size = erofs::kSuperblockOffset + sizeof(erofs::Superblock);
  if (!image.block_device && static_cast<uint64_t>(st.st_size) < min_size)
    throw Error(path + ": too small for an EROFS image (" + std::to_string(st.st_size) + " bytes)");
  erofs::Superblock sb;
  pread_exact(image.fd.get(), {reinterpret_cast<std::byte*>(&sb), sizeof sb},
              erofs::kSuperblockOffset, path + ": EROFS superblock");
  if (sb.magic != erofs::kErofsMagic)
    throw Error(path + ": not an EROFS image (superblock magic " + std::to_string(sb.magic.get()) +
                ", expected " + std::to_string(erofs::kErofsMagic) + ")");
  erofs::ComposefsHeader header;
  pread_exact(image.fd.get(), {reinterpret_cast<std::byte*>(&header), sizeof header}, 0,
              path + ": composefs header");
  // V2 images (composefs-rs) have no ACL flag: only V0/V1 may say they hold no ACLs.
  if (header.magic == erofs::kComposefsMagic)
    image.has_acl = (header.flags & erofs::kComposefsFlagHasAcl) != 0 ||
                    header.composefs_version == erofs::kComposefsVersionV2;
  return image;
}

// The EROFS layer: a detached mount, possibly on a loop device, possibly attached to a
// temporary directory for kernels that refuse detached layers.
struct ErofsLayer {
  std::optional<LoopDevice> loop;
  UniqueFd mount;
  std::unique_ptr<TemporaryAttachment> attachment;

  void attach(MountReport& report) {
    if (attachment) return;
    attachment = std::make_unique<TemporaryAttachment>(mount.get(), "erofs");
    report.erofs_attached = true;
  }
};

UniqueFd create_erofs(const std::string& source, bool has_acl) {
  FsContext ctx("erofs");
  // Read-only must be requested before the superblock is created: block devices opened for
  // writing would fail on a read-only loop device (EACCES).
  ctx.set_flag("ro");
  ctx.set_string("source", source);
  if (!has_acl) {
    try {
      ctx.set_flag("noacl");  // saves ACL lookups; absent when the kernel lacks EROFS ACLs
    } catch (const MountApiError&) {
    }
  }
  ctx.create();
  return ctx.mount(MOUNT_ATTR_RDONLY);
}

// Whether the kernel's EROFS reads chunk-based inodes, the layout of every external file in a
// composefs image (Linux 5.15; some distribution kernels have it backported, so the release
// number cannot tell). A built-in image holding one such file is mounted from a loop device
// and the file looked up: an EROFS without the layout refuses the inode ("unsupported
// datalayout 4"). Only kernels without file-backed EROFS (before 6.12) get here.
bool erofs_reads_chunk_inodes() {
  erofs::Tree tree;
  erofs::InodePtr file = erofs::make_inode(S_IFREG | 0644);
  file->size = erofs::kBlockSize;
  file->payload = "00/" + std::string(62, '0');
  tree.root->set_child("chunked", file);
  std::string bytes = erofs::image_to_string(tree);
  UniqueFd memfd(::memfd_create("cfs-chunk-probe", MFD_CLOEXEC));
  if (!memfd) throw_errno("memfd_create for the EROFS chunk probe");
  write_all(memfd.get(), {reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()},
            "EROFS chunk probe image");
  LoopDevice loop = LoopDevice::bind(memfd.get(), "cfs EROFS chunk probe");
  UniqueFd probe = create_erofs(loop.path(), false);
  struct stat st {};
  return ::fstatat(probe.get(), "chunked", &st, AT_SYMLINK_NOFOLLOW) == 0;
}

void require_chunk_inodes(const std::string& path) {
  if (!erofs_reads_chunk_inodes())
    throw Error(path +
                ": this kernel's EROFS cannot read chunk-based inodes, which composefs images "
                "use for every file whose data is an object (Linux 5.15 or later, or a kernel "
                "with that support backported, is needed); nothing was mounted");
}

ErofsLayer mount_erofs(const std::string& path, const ImageFile& image, const MountOptions& options,
                       MountReport& report) {
  ErofsLayer layer;
  // The fd, not the path: the file that was digest-checked is the file that gets mounted.
  std::string source = fd_path(image.fd.get());
  if (image.block_device) {
    require_chunk_inodes(path);
    layer.mount = create_erofs(source, image.has_acl);
    report.erofs_source = "block-device";
  } else {
    if (!options.overrides.force_loop) {
      try {
        layer.mount = create_erofs(source, image.has_acl);
        report.erofs_source = "file";
      } catch (const MountApiError& e) {
        // ENOTBLK: no file-backed EROFS (before 6.12 or CONFIG_EROFS_FS_BACKED_BY_FILE off).
        if (e.code() != ENOTBLK) throw Error(path + ": cannot mount the EROFS image: " + e.what());
        report.fallbacks.push_back("file-backed EROFS unavailable (" + std::string(e.what()) +
                                   "); using a loop device");
      }
    }
    if (!layer.mount) {
      require_chunk_inodes(path);
      layer.loop = LoopDevice::bind(image.fd.get(), path);
      try {
        layer.mount = create_erofs(layer.loop->path(), image.has_acl);
      } catch (const MountApiError& e) {
        throw Error(path + ": cannot mount the EROFS image from " + layer.loop->path() + ": " +
                    e.what());
      }
      report.erofs_source = layer.loop->path();
    }
  }
  if (!options.idmap_userns.empty()) {
    UniqueFd userns = open_file(options.idmap_userns, O_RDONLY | O_CLOEXEC);
    mount_attr attr{};
    attr.attr_set = MOUNT_ATTR_IDMAP;
    attr.userns_fd = static_cast<uint64_t>(userns.get());
    if (::mount_setattr(layer.mount.get(), "", AT_EMPTY_PATH, &attr, sizeof attr) < 0)
      throw_errno(options.idmap_userns + ": cannot idmap the EROFS layer");
  }
  return layer;
}

struct Layers {
  int erofs = -1;
  std::vector<UniqueFd> objects;
  UniqueFd upper;
  UniqueFd work;
};

void require_overlay_verity(FsContext& ctx, const MountOptions& options, MountReport& report) {
  if (options.verity == VerityMode::off) return;
  try {
    ctx.set_string("verity", "require");
    report.verity_applied = true;
  } catch (const MountApiError& e) {
    if (options.verity == VerityMode::require)
      throw Error(std::string("overlayfs cannot enforce fs-verity here (verity= needs Linux "
                              "6.6+): ") +
                  e.what());
    report.fallbacks.push_back("overlayfs has no verity= option; mounting without it");
  }
}

UniqueFd create_overlay(OverlayTier tier, const Layers& layers, const MountOptions& options,
                        MountReport& report) {
  report.verity_applied = false;
  std::optional<FsContext> ctx;
  try {
    ctx.emplace("overlay");
  } catch (const MountApiError& e) {
    if (e.code() == ENOSYS) throw TierUnsupported(e.what());
    throw;
  }
  // Before 6.5 overlayfs took fsconfig() parameters through the legacy shim, which accepts
  // anything and fails only at creation; a parameter no kernel knows tells the two apart.
  if (ctx->try_set_string("cfs-probe-unknown-parameter", "1") == 0)
    throw TierUnsupported("overlayfs accepts any fsconfig() parameter (pre-6.5 legacy shim)");
  ctx.emplace("overlay");  // a fresh context: the failed probe may have left an error state
  ctx->set_string("source", "composefs");
  // The layer parameters decide whether this tier exists on the running kernel.
  try {
    if (tier == OverlayTier::fd) {
      ctx->set_fd("lowerdir+", layers.erofs);
      for (const UniqueFd& o : layers.objects) ctx->set_fd("datadir+", o.get());
    } else {
      ctx->set_string("lowerdir+", fd_path(layers.erofs));
      for (const UniqueFd& o : layers.objects) ctx->set_string("datadir+", fd_path(o.get()));
    }
  } catch (const MountApiError& e) {
    throw TierUnsupported(e.what());
  }
  ctx->set_string("metacopy", "on");
  ctx->set_string("redirect_dir", "on");
  require_overlay_verity(*ctx, options, report);
  if (layers.upper) {
    try {
      if (tier == OverlayTier::fd) {
        ctx->set_fd("upperdir", layers.upper.get());
        ctx->set_fd("workdir", layers.work.get());
      } else {
        ctx->set_string("upperdir", fd_path(layers.upper.get()));
        ctx->set_string("workdir", fd_path(layers.work.get()));
      }
    } catch (const MountApiError& e) {
      if (tier == OverlayTier::fd) throw TierUnsupported(e.what());  // fd upper/work: 6.13+
      throw;
    }
  }
  ctx->create();
  return ctx->mount(options.writable ? 0 : MOUNT_ATTR_RDONLY);
}

void mount_overlay_legacy(OverlayTier tier, const Layers& layers, const MountOptions& options,
                          int target_fd, MountReport& report) {
  std::string separator = tier == OverlayTier::legacy_dataonly ? "::" : ":";
  // Every path is a /proc/self/fd name, so nothing in it needs escaping.
  std::string data = "metacopy=on,redirect_dir=on,lowerdir=" + fd_path(layers.erofs);
  for (const UniqueFd& o : layers.objects) data += separator + fd_path(o.get());
  if (layers.upper)
    data += ",upperdir=" + fd_path(layers.upper.get()) + ",workdir=" + fd_path(layers.work.get());
  unsigned long flags = (options.writable ? 0 : MS_RDONLY) | MS_SILENT;
  std::string target = fd_path(target_fd);
  auto attempt = [&](const std::string& opts) {
    return ::mount("composefs", target.c_str(), "overlay", flags, opts.c_str()) == 0 ? 0 : errno;
  };
  report.verity_applied = false;
  int code = 0;
  if (options.verity != VerityMode::off) {
    code = attempt(data + ",verity=require");
    if (code == 0) {
      report.verity_applied = true;
      return;
    }
    if (options.verity == VerityMode::require || code != EINVAL)
      throw TierUnsupported(
          "mount(2) overlay with verity=require: " + std::string(std::strerror(code)) +
          " (verity= needs Linux 6.6+; see dmesg)");
    report.fallbacks.push_back(std::string(to_string(tier)) +
                               ": verity=require refused; retrying without it");
  }
  code = attempt(data);
  if (code == 0) return;
  std::string what =
      "mount(2) overlay " + std::string(to_string(tier)) + ": " + std::strerror(code);
  if (tier == OverlayTier::legacy_dataonly && code == EINVAL)
    throw TierUnsupported(what + " (data-only lowers need Linux 6.5+)");
  throw Error(what + " (see dmesg for the kernel's reason)");
}

bool is_legacy(OverlayTier tier) {
  return tier == OverlayTier::legacy_dataonly || tier == OverlayTier::legacy_lower;
}

}  // namespace

MountReport mount_image(const std::string& image, const std::string& target,
                        const MountOptions& options) {
  if (options.upperdir.empty() != options.workdir.empty())
    throw Error("an upper directory needs a work directory and vice versa");
  if (options.writable && options.upperdir.empty())
    throw Error(target + ": a writable mount needs an upper and a work directory");

  // Everything that can be checked without mounting is checked first.
  if (::access("/proc/self/fd", F_OK) < 0)
    throw Error("/proc is not mounted: cfs-mount hands layers to the kernel as /proc/self/fd/N");
  UniqueFd target_fd = open_directory(target, "mount point");
  Layers layers;
  for (const std::string& dir : options.object_dirs)
    layers.objects.push_back(open_directory(dir, "object directory"));
  if (!options.upperdir.empty()) {
    layers.upper = open_directory(options.upperdir, "upper directory");
    layers.work = open_directory(options.workdir, "work directory");
  }
  ImageFile file = open_image(image);

  MountReport report;
  if (options.expected_digest)
    report.digest_check = check_digest(file.fd.get(), *options.expected_digest,
                                       options.verity == VerityMode::require, image);
  // The kernel trusts what it mounts: nothing reaches it that the strict reader refuses.
  detail::ValidationResult valid = detail::validate_image(file.fd.get(), file.block_device, image,
                                                          layers.objects, options.check_objects);
  report.validated_inodes = valid.inodes;
  report.objects = valid.objects;
  report.objects_checked = valid.objects_checked;
  report.validation_ms = valid.validation_ms;
  report.object_check_ms = valid.object_check_ms;

  ErofsLayer erofs = mount_erofs(image, file, options, report);
  layers.erofs = erofs.mount.get();

  std::vector<OverlayTier> tiers = {OverlayTier::fd, OverlayTier::string,
                                    OverlayTier::legacy_dataonly, OverlayTier::legacy_lower};
  if (options.overrides.force_tier) tiers = {*options.overrides.force_tier};
  std::vector<std::string> refusals;
  // Set when the fd tier is refused: a kernel without fd layers (before 6.13) has no detached
  // layers either (6.15), and trying one makes overlayfs log "failed to clone lowerpath".
  bool no_detached_layers = false;
  for (OverlayTier tier : tiers) {
    report.tier = tier;
    try {
      // mount(2) names layers by path and kernels before 6.15 only accept layers that are
      // attached in the caller's namespace, so the legacy tiers always attach.
      if (is_legacy(tier) || options.overrides.force_attached || no_detached_layers)
        erofs.attach(report);
      if (is_legacy(tier)) {
        mount_overlay_legacy(tier, layers, options, target_fd.get(), report);
        return report;
      }
      UniqueFd overlay;
      try {
        overlay = create_overlay(tier, layers, options, report);
      } catch (const MountApiError& e) {
        if (e.stage() != MountApiError::Stage::create || erofs.attachment) throw;
        // Before 6.15 overlayfs refuses detached layers (EINVAL from clone_private_mount); any
        // creation failure gets one retry with the EROFS attached, which costs little.
        report.fallbacks.push_back(std::string(to_string(tier)) +
                                   ": detached EROFS layer refused (" + e.what() +
                                   "); attaching it temporarily");
        erofs.attach(report);
        overlay = create_overlay(tier, layers, options, report);
      }
      detail::attach_mount(overlay.get(), target_fd.get(), target);
      return report;
    } catch (const TierUnsupported& e) {
      refusals.push_back(std::string(to_string(tier)) + ": " + e.what());
      report.fallbacks.push_back(refusals.back());
      if (tier == OverlayTier::fd) no_detached_layers = true;
    } catch (const Error& e) {
      throw Error(image + ": cannot mount on " + target + ": " + e.what());
    }
  }
  std::string message = image + ": no overlayfs mount method works on this kernel";
  for (const std::string& r : refusals) message += "\n  " + r;
  throw Error(message);
}

}  // namespace cfs::kmount
