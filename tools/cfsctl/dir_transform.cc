#include "dir_transform.h"

#include "cfs/error.h"
#include "cfs/store/repository.h"
#if CFS_WITH_OCI
#include "cfs/oci/oci.h"
#include "cfs/oci/tree.h"
#endif

namespace cfs::cli {

void add_dir_transform_options(CLI::App* command, DirTransformArgs& args, bool karg_only,
                               bool with_hash) {
  command->add_flag("--no-propagate-usr-to-root", args.no_propagate_usr_to_root,
                    "Skip the OCI transform (root metadata from /usr, /run emptied, xattr "
                    "allowlist): the tree as scanned");
  if (!karg_only) {
    command->add_flag("--bootable", args.bootable,
                      "The bootable variant: /boot and /sysroot emptied, SELinux labels from "
                      "the tree's own policy (as 'oci pull --bootable')");
    command
        ->add_option("--xattrs", args.xattrs,
                     "Which xattrs the OCI transform keeps: allowlist-only (default: "
                     "security.capability) or keep-user-xattrs (also user.*)")
        ->check(CLI::IsMember({"allowlist-only", "keep-user-xattrs"}));
  }
  if (with_hash)
    command
        ->add_option("--hash", args.hash,
                     "fs-verity hash of the id: sha256 or sha512 (default: the --repo "
                     "repository's, else sha512)")
        ->check(CLI::IsMember({"sha256", "sha512"}));
}

store::TreeTransformFn dir_transform(const DirTransformArgs& args, const std::string& dir) {
  if (args.no_propagate_usr_to_root && !args.bootable) return {};
#if CFS_WITH_OCI
  oci::TreeTransform transform{.oci = !args.no_propagate_usr_to_root,
                               .xattrs = oci::parse_xattr_mode(args.xattrs),
                               .bootable = args.bootable};
  return [transform, reader = oci::directory_file_reader(dir)](erofs::Tree& tree) {
    oci::transform_tree(tree, transform, reader);
  };
#else
  (void)dir;
  throw Error(
      "cfsctl was built without OCI support: the OCI and boot transforms are not available "
      "(--no-propagate-usr-to-root gives the plain scan)");
#endif
}

HashAlgorithm dir_hash(const DirTransformArgs& args, const GlobalOptions& global) {
  if (!args.hash.empty()) return *parse_algorithm_name(args.hash);
  // composefs-rs: the repository's algorithm (an explicit --hash must agree), else --hash,
  // else sha512.
  if (!global.repo.empty() && !global.no_repo) {
    HashAlgorithm alg = store::Repository::open(global.repo).algorithm();
    if (!global.hash.empty() && global.hash != algorithm_name(alg))
      throw Error(global.repo + ": repository uses " + std::string(algorithm_name(alg)) +
                  " but --hash " + global.hash + " was given");
    return alg;
  }
  if (!global.hash.empty()) return *parse_algorithm_name(global.hash);
  return HashAlgorithm::sha512;
}

}  // namespace cfs::cli
