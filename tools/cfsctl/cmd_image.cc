// Image commands: dump (an image as a composefs-dump(5) file) and compute-id (the image id
// a directory would get, without writing anything).
#include <unistd.h>

#include <string>

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

namespace cfs::cli {

namespace {

struct DumpOptions {
  std::string image;
};

void run_dump(const DumpOptions& o, const GlobalOptions& global) {
  // An image file is read with the cfs rules (symlink targets of at most 1024 bytes,
  // redirects only to digest-named objects); with --repo, IMAGE is an image id or ref name.
  erofs::Tree tree =
      global.repo.empty()
          ? erofs::Image::open(o.image, erofs::ReaderOptions{}).to_tree()
          : store::open_image_reader(store::Repository::open(global.repo), o.image).to_tree();
  FdSink out(STDOUT_FILENO, "stdout");
  erofs::write_dumpfile(tree, out);
  out.flush();
}

struct ComputeIdOptions {
  std::string dir;
  bool use_epoch = false;
  bool skip_devices = false;
  bool skip_xattrs = false;
  bool user_xattrs = false;
  bool no_hardlinks = false;
};

void run_compute_id(const ComputeIdOptions& o, const GlobalOptions& global) {
  erofs::ScanOptions scan;
  scan.use_epoch = o.use_epoch;
  scan.skip_devices = o.skip_devices;
  scan.skip_xattrs = o.skip_xattrs;
  scan.user_xattrs_only = o.user_xattrs;
  scan.detect_hardlinks = !o.no_hardlinks;
  if (!global.repo.empty()) {
    if (global.erofs_version && *global.erofs_version != store::kRepositoryErofsVersion)
      throw Error("compute-id --repo: repositories store EROFS format " +
                  std::to_string(store::kRepositoryErofsVersion) + " images");
    // The id create-image would give in this repository (its hash algorithm).
    HashAlgorithm alg = store::Repository::open(global.repo).algorithm();
    return print(store::compute_image_id(o.dir, alg, scan).hex() + "\n");
  }
  erofs::Tree tree = erofs::scan_directory(o.dir, scan, hash_file_exact);
  DiscardSink discard;
  // Repositories store V1 images, so the id is that of the V1 image of the tree, unless
  // --erofs-version asks for another format.
  erofs::WriteResult result = erofs::write_image(
      tree, discard, erofs::WriterOptions::for_erofs_version(global.erofs_version.value_or(1)));
  print(result.digest.hex() + "\n");
}

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
      "Print the image id (fs-verity SHA-256 of the composefs image) that DIR would get, "
      "without writing an image or storing objects. The id is that of a format V1 image "
      "(min and max version 1), as repositories store them; 'mkcomposefs --print-digest-only' "
      "gives the V0 id of C mkcomposefs. Files over 64 bytes are hashed, hardlinks are kept, "
      "symlinks are not followed.",
      run_compute_id);
  compute_cmd->add_option("DIR", compute->dir, "Directory to scan")->required();
  compute_cmd->add_flag("--use-epoch", compute->use_epoch, "Set every mtime to 0");
  compute_cmd->add_flag("--skip-devices", compute->skip_devices,
                        "Leave out block and character devices");
  compute_cmd->add_flag("--skip-xattrs", compute->skip_xattrs, "Ignore extended attributes");
  compute_cmd
      ->add_flag("--user-xattrs", compute->user_xattrs, "Keep only user.* extended attributes")
      ->excludes("--skip-xattrs");
  compute_cmd->add_flag("--no-hardlinks", compute->no_hardlinks,
                        "Treat every hardlink as a separate file (as C mkcomposefs does)");
}

}  // namespace cfs::cli
