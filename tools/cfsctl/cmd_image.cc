// Image commands: dump (an image as a composefs-dump(5) file), and for a directory compute-id
// (the image id it would get), create-dumpfile and compute-karg, none of which store anything.
#include <unistd.h>

#include <string>

#include "cfs/erofs/compat_dump.h"
#include "cfs/erofs/dumpfile.h"
#include "cfs/erofs/reader.h"
#include "cfs/erofs/scan.h"
#include "cfs/erofs/writer.h"
#include "cfs/error.h"
#include "cfs/output.h"
#include "cfs/store/images.h"
#include "cfs/store/repository.h"
#include "cli_util.h"
#include "commands.h"
#include "dir_transform.h"
#if CFS_WITH_OCI
#include "cfs/oci/boot.h"
#endif

namespace cfs::cli {

namespace {

struct DumpOptions {
  std::string image;
};

void run_dump(const DumpOptions& o, const GlobalOptions& global) {
  // An image file is read with the cfs rules (symlink targets of at most 1024 bytes,
  // redirects only to digest-named objects); with --repo, IMAGE is an image id or ref name.
  // Printed while walking the image, without building its tree.
  erofs::ReaderOptions options;
  options.low_memory = true;  // validation, then one pass
  erofs::Image image =
      global.repo.empty() ? erofs::Image::open(o.image, options)
                          : store::open_image_reader(store::Repository::open(global.repo), o.image);
  FdSink out(STDOUT_FILENO, "stdout");
  erofs::write_image_dumpfile(image, out);
  out.flush();
}

struct ComputeIdOptions {
  std::string dir;
  DirTransformArgs transform;
  bool use_epoch = false;
  bool skip_devices = false;
  bool skip_xattrs = false;
  bool user_xattrs = false;
  bool no_hardlinks = false;
};

erofs::ScanOptions scan_options(const ComputeIdOptions& o) {
  erofs::ScanOptions scan;
  scan.use_epoch = o.use_epoch;
  scan.skip_devices = o.skip_devices;
  scan.skip_xattrs = o.skip_xattrs;
  scan.user_xattrs_only = o.user_xattrs;
  scan.detect_hardlinks = !o.no_hardlinks;
  return scan;
}

void run_compute_id(const ComputeIdOptions& o, const GlobalOptions& global) {
  const HashAlgorithm alg = dir_hash(o.transform, global);
  const uint32_t version = global.erofs_version.value_or(store::kRepositoryErofsVersion);
  if (version == store::kRepositoryErofsVersion) {
    // The id create-image gives in a (format V1) repository of that algorithm.
    print(store::compute_image_id(o.dir, alg, scan_options(o), dir_transform(o.transform, o.dir))
              .hex() +
          "\n");
    return;
  }
  // --erofs-version: the id of the tree written in that format.
  erofs::Tree tree =
      store::scan_image_tree(o.dir, alg, scan_options(o), dir_transform(o.transform, o.dir));
  VeritySink sink(nullptr, alg);
  erofs::write_image(tree, sink, erofs::WriterOptions::for_erofs_version(version));
  print(sink.finish().hex() + "\n");
}

struct CreateDumpfileOptions {
  std::string dir;
  DirTransformArgs transform;
};

void run_create_dumpfile(const CreateDumpfileOptions& o, const GlobalOptions& global) {
  erofs::Tree tree = store::scan_image_tree(o.dir, dir_hash(o.transform, global), {},
                                            dir_transform(o.transform, o.dir));
  FdSink out(STDOUT_FILENO, "stdout");
  erofs::write_dumpfile(tree, out);
  out.flush();
}

#if CFS_WITH_OCI
struct ComputeKargOptions {
  std::string dir;
  DirTransformArgs transform;
  bool insecure = false;
};

void run_compute_karg(ComputeKargOptions o, const GlobalOptions& global) {
  // A karg names the image a sealed system boots: always the bootable variant with the
  // default xattr allowlist, as composefs-rs' compute-karg.
  o.transform.bootable = true;
  o.transform.xattrs = "allowlist-only";
  // --erofs-version 2: the V2 image's id, as composefs=<hex> (composefs-rs' compute-karg).
  const uint32_t version = global.erofs_version.value_or(store::kRepositoryErofsVersion);
  const HashAlgorithm alg = dir_hash(o.transform, global);
  erofs::Tree tree = store::scan_image_tree(o.dir, alg, {}, dir_transform(o.transform, o.dir));
  VeritySink sink(nullptr, alg);
  erofs::write_image(tree, sink, erofs::WriterOptions::for_erofs_version(version));
  // composefs-rs marks the argument with the global --insecure too.
  print(oci::composefs_kernel_argument(sink.finish(), o.insecure || global.insecure, version) +
        "\n");
}
#endif

}  // namespace

void register_image_commands(CLI::App& app, GlobalOptions& global) {
  auto [dump_cmd, dump] = add_command<DumpOptions>(
      app, global, "dump",
      "Print a composefs image as a composefs-dump(5) file (hardlinks as '@' lines, objects as "
      "XX/YYYY... payloads). The image is validated strictly first: a corrupt image or one "
      "with a symlink target over 1024 bytes is an error (use 'composefs-info dump' for "
      "images from the C tools that need the looser limits).",
      run_dump);
  dump_cmd->add_option("IMAGE", dump->image, "Image file")->required();

  auto [compute_cmd, compute] = add_command<ComputeIdOptions>(
      app, global, "compute-id",
      "Print the image id (fs-verity digest of the composefs image) that DIR would get, "
      "without writing an image or storing objects. DIR gets the transforms of an OCI pull "
      "(root metadata from /usr, /run emptied, only security.capability xattrs kept; with "
      "--bootable also /boot and /sysroot emptied and SELinux labels from DIR's policy), so "
      "a root directory gives the id 'oci image-id' gives after pulling it as an image, as "
      "composefs-rs' compute-id does; --no-propagate-usr-to-root is the plain scan. The id is "
      "that of a format V1 image, as repositories store them ('mkcomposefs "
      "--print-digest-only' gives the V0 id of C mkcomposefs). Files over 64 bytes are "
      "hashed, hardlinks are kept, symlinks are not followed.",
      run_compute_id);
  compute_cmd->add_option("DIR", compute->dir, "Directory to scan")->required();
  add_dir_transform_options(compute_cmd, compute->transform, false, true);
  compute_cmd->add_flag("--use-epoch", compute->use_epoch, "Set every mtime to 0");
  compute_cmd->add_flag("--skip-devices", compute->skip_devices,
                        "Leave out block and character devices");
  compute_cmd->add_flag("--skip-xattrs", compute->skip_xattrs, "Ignore extended attributes");
  compute_cmd
      ->add_flag("--user-xattrs", compute->user_xattrs, "Keep only user.* extended attributes")
      ->excludes("--skip-xattrs");
  compute_cmd->add_flag("--no-hardlinks", compute->no_hardlinks,
                        "Treat every hardlink as a separate file (as C mkcomposefs does)");

  auto [dumpfile_cmd, dumpfile] = add_command<CreateDumpfileOptions>(
      app, global, "create-dumpfile",
      "Print DIR as a composefs-dump(5) file, with the transforms compute-id applies; "
      "stores nothing.",
      run_create_dumpfile);
  dumpfile_cmd->add_option("DIR", dumpfile->dir, "Directory to scan")->required();
  add_dir_transform_options(dumpfile_cmd, dumpfile->transform, false, true);

#if CFS_WITH_OCI
  auto [karg_cmd, karg] = add_command<ComputeKargOptions>(
      app, global, "compute-karg",
      "Print the kernel argument that boots DIR as a sealed composefs root: "
      "composefs.digest=v1-<sha256|sha512>-12:<id> with the id of DIR's bootable variant "
      "(with --erofs-version 2: composefs=<id> of its format V2 image) "
      "(compute-id --bootable), for a UKI's command line (e.g. in a Containerfile: "
      "cfsctl compute-karg / > /etc/kernel/cmdline).",
      run_compute_karg);
  karg_cmd->add_option("DIR", karg->dir, "Root directory to scan")->required();
  add_dir_transform_options(karg_cmd, karg->transform, true, true);
  karg_cmd->add_flag("--insecure", karg->insecure,
                     "Mark the argument '?' (composefs.digest=?v1-...): fs-verity is not "
                     "required at boot");
#endif
}

}  // namespace cfs::cli
