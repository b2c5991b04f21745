// Repository commands: init, create-image, images, cat, fsck, gc. Thin wrappers over
// cfs_store; every rule lives in the library.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "cfs/erofs/reader.h"
#include "cfs/error.h"
#include "cfs/oci/oci.h"
#include "cfs/output.h"
#include "cfs/store/fsck.h"
#include "cfs/store/gc.h"
#include "cfs/store/images.h"
#include "cfs/store/refs.h"
#include "cfs/store/repository.h"
#include "commands.h"
#include "dir_transform.h"
#include "json_out.h"
#include "mount_programs.h"
#include "rs_dump.h"

namespace cfs::cli {

namespace {

struct InitArgs {
  std::string path;
  std::string hash;
  std::string algorithm;  // composefs-rs' spelling: fsverity-sha256-12 / fsverity-sha512-12
  bool insecure = false;
  bool reset_metadata = false;
  bool ensure = false;
  std::optional<uint32_t> erofs_version;  // init --erofs-version (else the global one, else 1)
};

// composefs-rs' reset_metadata: streams/, images/ and meta.json go, objects/ stays.
void reset_metadata(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(fs::symlink_status(path, ec))) return;
  for (const char* name : {"streams", "images", "meta.json"}) {
    fs::path p = fs::path(path) / name;
    if (!fs::exists(fs::symlink_status(p, ec))) continue;
    fs::remove_all(p, ec);
    if (ec) throw Error(p.string() + ": removing: " + ec.message());
  }
}

void print_created(const std::string& path, const store::Repository& repo) {
  print("Initialized " + std::string(repo.secure() ? "secure" : "insecure") + " " +
        repo.meta().algorithm_string() + " repository in " + path + "\n");
}

void run_init(const InitArgs& args, const GlobalOptions& global) {
  std::string path = !args.path.empty() ? args.path : require_repo(global, "init");
  store::InitOptions options;
  if (!args.algorithm.empty()) {
    options.algorithm = store::parse_algorithm_string(args.algorithm, "init --algorithm");
  } else {
    const std::string& hash = !args.hash.empty() ? args.hash : global.hash;
    auto alg = parse_algorithm_name(hash.empty() ? "sha512" : hash);
    if (!alg) throw Error("init: unknown hash '" + hash + "' (use sha256 or sha512)");
    options.algorithm = *alg;
  }
  options.insecure = args.insecure || global.insecure;
  // composefs-rs: init's own --erofs-version, else the global one, else V1.
  options.erofs_version =
      args.erofs_version.value_or(global.erofs_version.value_or(store::kRepositoryErofsVersion));
  if (args.reset_metadata) reset_metadata(path);

  struct stat st;
  const bool exists = ::stat(path.c_str(), &st) == 0;
  const bool has_meta = exists && ::access((path + "/meta.json").c_str(), F_OK) == 0;
  const bool has_objects = exists && ::access((path + "/objects").c_str(), F_OK) == 0;
  if (has_meta || (args.ensure && has_objects)) {
    // composefs-rs: init of an initialized repository succeeds when it asks for what is
    // there; --ensure keeps whatever is there (upgrading one without meta.json).
    store::Repository repo = store::Repository::open(
        path, store::LockMode::shared,
        args.ensure ? store::MissingMeta::upgrade : store::MissingMeta::read_only);
    store::RepoMeta wanted =
        store::RepoMeta::for_erofs_version(options.algorithm, options.erofs_version);
    if (repo.algorithm() != options.algorithm)
      throw Error(path + ": repository already initialized with " + repo.meta().algorithm_string() +
                  "; cannot initialize it with " + wanted.algorithm_string());
    if (repo.upgraded()) return print("Upgraded legacy repository at " + path + "\n");
    if (args.ensure)
      return print("Repository already initialized at " + path +
                   " (existing configuration preserved)\n");
    if (repo.meta().to_json() != wanted.to_json())
      throw Error(path +
                  ": repository already initialized with a different configuration "
                  "(EROFS format " +
                  std::to_string(repo.meta().erofs_default) + ", asked for " +
                  std::to_string(options.erofs_version) + "); use --ensure to keep it");
    return print("Repository already initialized at " + path + "\n");
  }
  // composefs-rs creates missing parent directories.
  std::error_code ec;
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  store::Repository repo = store::Repository::init(path, options);
  print_created(path, repo);
}

struct CreateImageArgs {
  std::string source;
  std::string name;
  std::string positional_name;
  DirTransformArgs transform;
};

void run_create_image(const CreateImageArgs& args, const GlobalOptions& global) {
  if (!args.name.empty() && !args.positional_name.empty())
    throw Error("create-image: give the name once (NAME or --name)");
  const std::string& name = args.name.empty() ? args.positional_name : args.name;
  store::Repository repo = open_repo(global, "create-image");
  std::optional<std::string_view> ref;
  if (!name.empty()) ref = name;
  store::CreateImageResult result =
      store::create_image(repo, args.source, ref, {}, dir_transform(args.transform, args.source));
  print(result.id.hex() + "\n");
}

struct ImagesArgs {
  bool json = false;
  bool no_trunc = false;  // composefs-rs' flag; ids are always printed in full here
};

void run_images(const ImagesArgs& args, const GlobalOptions& global) {
  store::Repository repo = open_repo(global, "images");
  auto images = repo.list_images();
  std::string out;
  if (args.json) {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& image : images)
      list.push_back({{"id", image.id.hex()}, {"size", image.size}, {"refs", image.refs}});
    out = json_text(list);
  } else {
    for (const auto& image : images) {
      out += image.id.hex();
      for (const auto& ref : image.refs) out += " " + ref;
      out += "\n";
    }
  }
  print(out);
}

struct CatArgs {
  std::string name;
};

void run_cat(const CatArgs& args, const GlobalOptions& global) {
  store::Repository repo = open_repo(global, "cat");
  FdSink out(STDOUT_FILENO, "stdout");
  repo.cat_stream(args.name, out);
}

struct FsckArgs {
  bool json = false;
  bool metadata_only = false;
};

void run_fsck(const FsckArgs& args, const GlobalOptions& global) {
  store::Repository repo = open_repo(global, "fsck");
  store::FsckOptions options;
  options.metadata_only = args.metadata_only;
  store::FsckReport r = store::fsck(repo, options);
  if (args.json) {
    nlohmann::ordered_json j;
    j["ok"] = r.ok();
    j["has_metadata"] = r.has_metadata;
    j["objects_checked"] = r.objects_checked;
    j["objects_corrupted"] = r.objects_corrupted;
    j["streams_checked"] = r.streams_checked;
    j["streams_corrupted"] = r.streams_corrupted;
    j["images_checked"] = r.images_checked;
    j["images_corrupted"] = r.images_corrupted;
    j["broken_links"] = r.broken_links;
    j["missing_objects"] = r.missing_objects;
    j["errors"] = r.errors;
    print(json_text(j));
    return;
  }
  auto line = [](const char* what, uint64_t checked, uint64_t bad) {
    return std::string(what) + ": " + std::to_string(checked) + " checked, " + std::to_string(bad) +
           " corrupted\n";
  };
  std::string out = std::string("meta.json: ") + (r.has_metadata ? "ok" : "absent") + "\n";
  out += line("objects", r.objects_checked, r.objects_corrupted);
  out += line("streams", r.streams_checked, r.streams_corrupted);
  out += line("images", r.images_checked, r.images_corrupted);
  out += "broken symlinks: " + std::to_string(r.broken_links) + "\n";
  out += "missing objects: " + std::to_string(r.missing_objects) + "\n";
  if (r.ok()) {
    out += "status: ok\n";
    print(out);
    return;
  }
  out += "status: " + std::to_string(r.errors.size()) + " error(s)\n";
  for (const auto& e : r.errors) out += "  - " + e + "\n";
  print(out);
  // main prints this to stderr and exits 1.
  throw Error(repo.path() + ": fsck found " + std::to_string(r.errors.size()) + " error(s)");
}

struct GcArgs {
  bool dry_run = false;
  std::vector<std::string> roots;
  bool no_wait = false;
  std::optional<double> timeout;  // seconds
};

void run_gc(const GcArgs& args, const GlobalOptions& global) {
  store::Repository repo = open_repo(global, "gc");
  store::GcOptions options{.dry_run = args.dry_run, .extra_roots = args.roots};
  if (args.no_wait) options.lock_timeout = std::chrono::milliseconds(0);
  if (args.timeout)
    options.lock_timeout = std::chrono::milliseconds(static_cast<int64_t>(*args.timeout * 1000));
  // While waiting, say who holds the repository: a cfs-fuse mount can hold it for days.
  options.on_wait = [](const std::string& message) {
    std::fprintf(stderr, "%s\n", message.c_str());
  };
  const bool dry_run = args.dry_run;
  oci::CachePruneResult caches;
  options.prune_caches = [&caches, &repo](const std::function<bool(const Digest&)>& kept,
                                          bool dry) {
    caches = oci::prune_caches(repo, kept, dry);
    return caches.content_index_entries + caches.estargz_tails;
  };
  store::GcResult r = store::collect_garbage(repo, options);
  const char* verb = dry_run ? "would be removed" : "removed";
  std::string out;
  out += "Objects: " + std::to_string(r.objects_removed) + " " + verb + " (" +
         std::to_string(r.bytes_freed) + " bytes), " + std::to_string(r.objects_kept) + " kept\n";
  out += "Images: " + std::to_string(r.images_removed) + " " + verb + "\n";
  out += "Streams: " + std::to_string(r.streams_removed) + " " + verb + "\n";
  out += "Broken refs: " + std::to_string(r.refs_pruned) + " " + verb + "\n";
  out += "Temporary files: " + std::to_string(r.temp_files_removed) + " " + verb + "\n";
  out +=
      "Content index entries: " + std::to_string(caches.content_index_entries) + " " + verb + "\n";
  out += "eStargz tails: " + std::to_string(caches.estargz_tails) + " " + verb + "\n";
  print(out);
}

struct TransactionArgs {};

// composefs-rs' transaction: hold the shared repository lock (which gc waits for) until
// the process is ended.
void run_transaction(const TransactionArgs&, const GlobalOptions& global) {
  store::Repository repo = open_repo(global, "transaction");
  for (;;) ::pause();
}

struct ImportImageArgs {
  std::string name;
};

// composefs-rs' import-image: an EROFS image from stdin stored as images/<id> and named
// images/refs/NAME. Unlike composefs-rs, the image must pass the strict reader first.
void run_import_image(const ImportImageArgs& args, const GlobalOptions& global) {
  store::Repository repo = open_repo(global, "import-image");
  repo.require_writable();
  store::validate_ref_name(args.name, "import-image");
  store::ObjectWriter writer = repo.write_object();
  std::vector<std::byte> buf(1 << 16);
  for (;;) {
    ssize_t n = ::read(STDIN_FILENO, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("import-image: reading stdin");
    }
    if (n == 0) break;
    writer.write(std::span<const std::byte>(buf.data(), static_cast<size_t>(n)));
  }
  Digest id = writer.commit();
  {
    UniqueFd fd = repo.open_object(id);
    erofs::Image::open_fd(fd.get(), "import-image: stdin").validate();
  }
  repo.link_image(id);
  repo.set_image_ref(args.name, id);
  print(id.hex() + "\n");
}

struct ImageObjectsArgs {
  std::string name;
};

// composefs-rs' image-objects: every object an image's files name, one id per line (sorted).
void run_image_objects(const ImageObjectsArgs& args, const GlobalOptions& global) {
  store::Repository repo = open_repo(global, "image-objects");
  std::string out;
  for (std::string path : store::open_image_reader(repo, args.name).objects()) {
    path.erase(2, 1);  // "ab/cdef…" -> "abcdef…"
    out += path + "\n";
  }
  print(out);
}

struct DumpFilesArgs {
  std::string name;
  std::vector<std::string> paths;
  bool backing_path_only = false;
};

// composefs-rs' dump-files: for each PATH of an image, its dumpfile line (a directory: the
// whole subtree), or with --backing-path-only "PATH inline" / "PATH xx/rest".
void run_dump_files(const DumpFilesArgs& args, const GlobalOptions& global) {
  store::Repository repo = open_repo(global, "dump-files");
  erofs::Tree tree = store::open_image_reader(repo, args.name).to_tree();
  std::string out;
  for (const std::string& path : args.paths) {
    std::string absolute = path.starts_with('/') ? path : "/" + path;
    while (absolute.size() > 1 && absolute.ends_with('/')) absolute.pop_back();
    if (absolute == "/")
      throw Error("dump-files: '" + path + "' names no entry of a directory (give a path below /)");
    const erofs::Inode* inode = tree.lookup(absolute);
    if (!inode) throw Error("dump-files: " + path + " not found in image " + args.name);
    if (args.backing_path_only) {
      if (inode->is_dir()) throw Error("dump-files: " + path + " is a directory");
      out +=
          path + " " + (inode->is_external() ? inode->payload.str() : std::string("inline")) + "\n";
      continue;
    }
    append_rs_subtree(out, tree, *inode, path);
  }
  print(out);
}

struct MountArgs {
  MountRequest request;
};

// composefs-rs' mount NAME MOUNTPOINT: an image of the repository (id or images/refs name).
void run_mount(const MountArgs& args, const GlobalOptions& global) {
  MountRequest request = args.request;
  request.command = "mount";
  request.insecure = global.insecure;
  choose_mount_program(request);  // before the repository is touched
  {
    // Upgraded and checked here, closed before the exec (the mount program locks it itself).
    store::Repository repo = open_repo(global, "mount");
    if (!repo.resolve_image(request.image))
      throw Error(repo.path() + ": no image named '" + request.image + "'");
  }
  request.repo = require_repo(global, "mount");
  exec_mount(request);
}

}  // namespace

void register_repo_commands(CLI::App& app, GlobalOptions& global) {
  auto [init_cmd, init] = add_command<InitArgs>(
      app, global, "init",
      "Create a repository at --repo DIR (or PATH). Secure repositories need fs-verity on the "
      "filesystem; --insecure makes one that names objects by userspace digests instead.",
      run_init);
  init_cmd->add_option("PATH", init->path, "Repository directory (default: --repo)");
  auto* hash =
      init_cmd->add_option("--hash", init->hash, "fs-verity hash: sha256 or sha512 (default)")
          ->check(CLI::IsMember({"sha256", "sha512"}));
  init_cmd
      ->add_option("--algorithm", init->algorithm,
                   "composefs-rs' spelling of the hash: fsverity-sha256-12 or "
                   "fsverity-sha512-12 (default)")
      ->check(CLI::IsMember({"fsverity-sha256-12", "fsverity-sha512-12"}))
      ->excludes(hash);
  init_cmd->add_flag("--insecure", init->insecure, "Do not require fs-verity");
  init_cmd->add_flag("--reset-metadata", init->reset_metadata,
                     "Remove streams/, images/ and meta.json (keeping objects/) first; streams "
                     "and images must be imported again");
  init_cmd->add_flag("--ensure", init->ensure,
                     "Keep an existing repository as it is (upgrading one without meta.json) "
                     "and create one otherwise");
  init_cmd
      ->add_option("--erofs-version", init->erofs_version,
                   "EROFS format of the repository's images (meta.json erofs_formats): 1 "
                   "(default; C mkcomposefs' format), 2 (composefs-rs' original format, older "
                   "bootc hosts) or 0; default: the global --erofs-version, else 1")
      ->check(CLI::Range(0, 2));

  auto [create_cmd, create] = add_command<CreateImageArgs>(
      app, global, "create-image",
      "Store the files of directory SRC as objects and a composefs image of it in each EROFS "
      "format the repository is configured for (meta.json erofs_formats, or --erofs-version); "
      "prints the default format's image id. With a NAME that image is also named "
      "images/refs/NAME. SRC gets "
      "the transforms of an OCI pull (see compute-id); --no-propagate-usr-to-root stores the "
      "tree as scanned.",
      run_create_image);
  create_cmd->add_option("SRC", create->source, "Source directory")->required();
  create_cmd->add_option("NAME", create->positional_name, "Ref name for the image");
  create_cmd->add_option("--name", create->name, "Ref name for the image");
  add_dir_transform_options(create_cmd, create->transform, false, false);

  auto [images_cmd, images] = add_command<ImagesArgs>(
      app, global, "images", "List the repository's images and refs", run_images);
  images_cmd->add_flag("--json", images->json, "JSON output");
  images_cmd->add_flag("--no-trunc", images->no_trunc, "Full ids (they always are)");
  images_cmd->alias("list-images");

  add_command<TransactionArgs>(app, global, "transaction",
                               "Hold the repository's shared lock until killed: gc waits meanwhile",
                               run_transaction);

  auto [import_cmd, import_args] = add_command<ImportImageArgs>(
      app, global, "import-image",
      "Store an EROFS composefs image read from stdin as images/<id> and name it "
      "images/refs/NAME; prints the id. The image must pass the strict reader.",
      run_import_image);
  import_cmd->add_option("NAME", import_args->name, "Ref name")->required();

  auto [mount_cmd, mount] = add_command<MountArgs>(
      app, global, "mount",
      "Mount an image of the repository (id or ref name): the kernel (cfs-mount) as root, "
      "cfs-fuse otherwise",
      run_mount);
  mount_cmd->add_option("NAME", mount->request.image, "Image id or ref name")->required();
  mount_cmd->add_option("MOUNTPOINT", mount->request.mountpoint, "Existing directory")->required();
  mount_cmd
      ->add_option("--fuse", mount->request.fuse,
                   "auto (the kernel as root, FUSE otherwise), yes or no")
      ->check(CLI::IsMember({"auto", "yes", "no"}))
      ->capture_default_str();
  mount_cmd->add_flag("--foreground", mount->request.foreground,
                      "Keep cfs-fuse in the foreground until the image is unmounted (no effect "
                      "on kernel mounts)");
  mount_cmd->add_option("--upperdir", mount->request.upperdir,
                        "Writable overlay upper directory (kernel mounts)");
  mount_cmd->add_option("--workdir", mount->request.workdir,
                        "Overlay work directory (with --upperdir)");
  mount_cmd->add_flag("--read-write", mount->request.read_write,
                      "Mount writable (needs --upperdir)");

  auto [objects_cmd, objects_args] = add_command<ImageObjectsArgs>(
      app, global, "image-objects",
      "List the object ids the files of an image (id or ref name) refer to, one per line",
      run_image_objects);
  objects_cmd->add_option("NAME", objects_args->name, "Image id or ref name")->required();

  auto [dump_files_cmd, dump_files] = add_command<DumpFilesArgs>(
      app, global, "dump-files",
      "Print the dumpfile lines of files of an image (id or ref name), as composefs-rs "
      "writes them: a directory with everything below it, a further name of a hardlinked "
      "file as an '@120000' line naming the first",
      run_dump_files);
  dump_files_cmd->add_option("NAME", dump_files->name, "Image id or ref name")->required();
  dump_files_cmd->add_option("PATHS", dump_files->paths, "Paths in the image");
  dump_files_cmd->add_flag("--backing-path-only", dump_files->backing_path_only,
                           "Print 'PATH inline' for data inside the image, else 'PATH xx/rest' "
                           "(the object's path below objects/)");

  auto [cat_cmd, cat] = add_command<CatArgs>(
      app, global, "cat",
      "Write the content of a stream (content id or ref below streams/refs) to stdout", run_cat);
  cat_cmd->add_option("NAME", cat->name, "Stream name")->required();

  auto [fsck_cmd, fsck] = add_command<FsckArgs>(
      app, global, "fsck",
      "Check every object's digest, every stream and image, and every ref; exits 1 on "
      "problems (with --json: always 0, see \"ok\")",
      run_fsck);
  fsck_cmd->add_flag("--json", fsck->json, "JSON output");
  fsck_cmd->add_flag("--metadata-only", fsck->metadata_only,
                     "Do not re-read object data (objects are checked to exist, not re-hashed)");

  auto [gc_cmd, gc] = add_command<GcArgs>(
      app, global, "gc",
      "Remove images, streams and objects that no ref below images/refs or streams/refs "
      "reaches",
      run_gc);
  gc_cmd->add_flag("-n,--dry-run", gc->dry_run, "Only report what would be removed");
  gc_cmd->add_option("-r,--root", gc->roots,
                     "Also keep this image (id or images/refs name) or stream (name or "
                     "streams/refs name) and what it reaches; repeatable");
  auto* no_wait =
      gc_cmd->add_flag("--no-wait", gc->no_wait,
                       "Fail at once (naming the processes) if readers hold the repository lock");
  gc_cmd
      ->add_option("--timeout", gc->timeout,
                   "Give up after waiting SECONDS for readers to release the repository lock")
      ->check(CLI::NonNegativeNumber)
      ->excludes(no_wait);
}

}  // namespace cfs::cli
