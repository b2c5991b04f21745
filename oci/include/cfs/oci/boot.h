// Boot entries for bootable OCI images: the kernel and initramfs an image ships in
// /usr/lib/modules/<kver>/ are copied to a boot directory and a Boot Loader Specification
// (Type 1) entry is written whose kernel command line boots the image's bootable composefs
// variant (composefs.image.boot) through cfs-mount setup-root. The layout follows
// composefs-rs' `cfsctl oci prepare-boot`:
//
//   BOOTDIR/<entry-id>/vmlinuz
//   BOOTDIR/<entry-id>/initramfs.img
//   BOOTDIR/loader/entries/<entry-id>.conf    (entry id: --entry-id, else the kernel version)
//
// with "options composefs.digest=[?]v1-<alg>-12:<boot image id> [ARGS...]" ('?' for an insecure
// repository). Paths in the entry are relative to BOOTDIR, the root of the boot partition.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cfs/digest.h"
#include "cfs/oci/tree.h"
#include "cfs/store/repository.h"

namespace cfs::oci {

struct BootEntryOptions {
  std::string bootdir = "/boot";
  std::optional<std::string> entry_id;           // default: the kernel version
  std::optional<std::string> kernel_version;     // default: the first in byte order (composefs-rs)
  std::vector<std::string> kernel_arguments;     // added after the composefs argument
  XattrMode xattrs = XattrMode::allowlist_only;  // which variant of the image to boot
  // Refuse unless the boot image has this id (a sealed image's published digest).
  std::optional<Digest> expected_digest;
};

struct BootEntry {
  Digest image;  // the bootable composefs image the entry boots
  std::string kernel_version;
  std::string entry_path;  // BOOTDIR/loader/entries/<id>.conf
  std::string kernel_path;
  std::string initramfs_path;
  std::string options;  // the entry's kernel command line
  // Type 2: the UKIs and addons written below BOOTDIR/EFI/Linux (then the fields above other
  // than image are empty).
  std::vector<std::string> ukis;
  std::vector<std::string> addons;
  // The image's own Type 1 entries, relocated: the entries written to
  // BOOTDIR/loader/entries and the files they name, below BOOTDIR/<entry id>/.
  std::vector<std::string> entries;
  std::vector<std::string> files;
};

// The composefs image a kernel command line boots (composefs.digest=[?]v1-<alg>-12:<hex>, or
// a format V2 image's composefs=[?]<hex>, the algorithm from the digest's length), nullopt if
// it names none. Throws for a malformed value or two arguments naming different images.
struct ComposefsArgument {
  Digest image;
  bool insecure = false;
};
std::optional<ComposefsArgument> composefs_argument(std::string_view cmdline);

// The kernel argument cfs-mount setup-root (and composefs-rs' setup-root) boots image by:
// composefs.digest=v1-sha256-12:<hex> for a format V0/V1 image, composefs=<hex> for a V2
// one, with '?' after '=' when verity is not to be enforced.
std::string composefs_kernel_argument(const Digest& image, bool insecure,
                                      uint32_t erofs_version = 1);

// Adds arg to a kernel command line the way composefs-rs does: a word with the same key (up to
// and including '=', or the whole word) is replaced, otherwise arg is appended.
void add_kernel_argument(std::vector<std::string>& words, const std::string& arg);

// Writes the boot entry for image name (a tag or @sha256:…), which must have been pulled with
// --bootable. Files are written to temporary names, synced and renamed, the entry last, so a
// bootloader never sees an entry whose kernel is incomplete. Kernel and initramfs data come
// from the repository's objects and are checked against the digests the image records.
// An image that ships unified kernel images (Type 2: /boot/EFI/Linux/*.efi and
// /usr/lib/modules/<kver>/*.efi, addons as *.addon.efi and in <uki>.efi.extra.d/) gets those
// written to BOOTDIR/EFI/Linux instead (--entry-id renames its one UKI), each UKI's .cmdline
// checked (oci/pe.h parses the PE file) to name the boot image: a UKI that would boot another
// image is refused and nothing is written.
// Images with their own BLS Type 1 entries (/boot/loader/entries/*.conf) get those relocated,
// as composefs-rs' boot crate does, and they take precedence over UKIs and /usr/lib/modules
// kernels: the files an entry names (linux, initrd, efi, devicetree: absolute paths, looked up
// from the image's root) are written to BOOTDIR/<id>/<file name>, the entry to
// BOOTDIR/loader/entries/<id>.conf with those paths rewritten and composefs.digest= (then the
// --cmdline arguments) put into its first options line, replacing a word with the same key.
// <id> is the entry file's name without .conf, or --entry-id (only for an image with one
// entry). composefs-rs relocates only under --entry-id and otherwise copies the files to the
// paths the entry names; cfs always relocates, so an image's entry can never write outside
// BOOTDIR/<id>/ (e.g. over EFI/BOOT/BOOTX64.EFI). The entries' own options must name no other
// composefs image. BOOTDIR/<id>/ also
// gets a list of the files cfs put there (.cfs-boot-files), so that gc_boot_dir knows them.
// Every entry and file is checked before anything is written.
BootEntry prepare_boot(const store::Repository& repo, std::string_view name,
                       const BootEntryOptions& options);

// Removes boot entry id from bootdir: its Type 1 entry loader/entries/<id>.conf and/or its
// UKI EFI/Linux/<id>.efi with <id>.efi.extra.d/ (the UKI before its addons). The kernels a
// Type 1 entry named stay until gc_boot_dir. Returns what was removed; throws if there is no
// such entry.
std::vector<std::string> remove_boot_entry(const std::string& bootdir, const std::string& id);

// The boot directory's garbage: in every flat top-level directory of bootdir (only regular
// files in it; EFI/ and loader/ excepted), the kernels, initramfs images and UKIs
// (vmlinuz, initramfs.img, *.efi) that no Type 1 entry in loader/entries names (linux, initrd,
// efi, devicetree), the files a relocated entry brought (listed in the directory's
// .cfs-boot-files, which goes when nothing else is left), and EFI/Linux/*.efi.extra.d directories
// whose UKI is gone. Removes them (and directories left empty) unless dry_run; returns their paths.
// Other files and directories (grub/, loader.conf, config-*) are never touched.
std::vector<std::string> gc_boot_dir(const std::string& bootdir, bool dry_run = false);

}  // namespace cfs::oci
