// The options cfsctl's directory commands (compute-id, create-image, create-dumpfile,
// compute-karg) share: which transforms the scanned tree gets before its image is written.
// By default the same as an OCI pull (cfs_oci's transform_tree), so a root directory and the
// OCI image built from it get the same image id, as in composefs-rs.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "cfs/digest.h"
#include "cfs/store/images.h"
#include "commands.h"

namespace cfs::cli {

struct DirTransformArgs {
  bool no_propagate_usr_to_root = false;  // the plain scan: no OCI transform
  bool bootable = false;
  std::string xattrs = "allowlist-only";
  std::string hash;  // empty: the --repo repository's algorithm, else sha512
};

// Adds --no-propagate-usr-to-root, and unless karg_only --bootable and --xattrs; with_hash
// adds --hash.
void add_dir_transform_options(CLI::App* command, DirTransformArgs& args, bool karg_only,
                               bool with_hash);

// The transform of dir the options ask for (empty for the plain scan). Throws for an
// unknown --xattrs mode, or when cfsctl was built without OCI support and a transform is
// asked for.
store::TreeTransformFn dir_transform(const DirTransformArgs& args, const std::string& dir);

// --hash, else the algorithm of the --repo repository, else sha512 (composefs-rs' default and
// that of 'cfsctl init').
HashAlgorithm dir_hash(const DirTransformArgs& args, const GlobalOptions& global);

}  // namespace cfs::cli
