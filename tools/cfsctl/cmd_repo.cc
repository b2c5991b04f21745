// Repository commands: init, create-image, images, cat, fsck, gc. Thin wrappers over
// cfs_store; every rule lives in the library.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "cfs/error.h"
#include "cfs/output.h"
#include "cfs/store/fsck.h"
#include "cfs/store/gc.h"
#include "cfs/store/images.h"
#include "cfs/store/repository.h"
#include "commands.h"
#include "dir_transform.h"
#include "json_out.h"

namespace cfs::cli {

namespace {

struct InitArgs {
  std::string path;
  std::string hash = "sha512";
  bool insecure = false;
};

void run_init(const InitArgs& args, const GlobalOptions& global) {
  std::string path = !args.path.empty() ? args.path : require_repo(global, "init");
  store::InitOptions options;
  auto alg = parse_algorithm_name(args.hash);
  if (!alg) throw Error("init: unknown hash '" + args.hash + "' (use sha256 or sha512)");
  options.algorithm = *alg;
  options.insecure = args.insecure;
  store::Repository repo = store::Repository::init(path, options);
  print("Initialized " + std::string(repo.secure() ? "secure" : "insecure") + " " +
        repo.meta().algorithm_string() + " repository in " + path + "\n");
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
  store::Repository repo = store::Repository::open(require_repo(global, "create-image"));
  std::optional<std::string_view> ref;
  if (!name.empty()) ref = name;
  store::CreateImageResult result =
      store::create_image(repo, args.source, ref, {}, dir_transform(args.transform, args.source));
  print(result.id.hex() + "\n");
}

struct ImagesArgs {
  bool json = false;
};

void run_images(const ImagesArgs& args, const GlobalOptions& global) {
  store::Repository repo = store::Repository::open(require_repo(global, "images"));
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
  store::Repository repo = store::Repository::open(require_repo(global, "cat"));
  FdSink out(STDOUT_FILENO, "stdout");
  repo.cat_stream(args.name, out);
}

struct FsckArgs {
  bool json = false;
  bool metadata_only = false;
};

void run_fsck(const FsckArgs& args, const GlobalOptions& global) {
  store::Repository repo = store::Repository::open(require_repo(global, "fsck"));
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
  store::Repository repo = store::Repository::open(require_repo(global, "gc"));
  store::GcOptions options{.dry_run = args.dry_run, .extra_roots = args.roots};
  if (args.no_wait) options.lock_timeout = std::chrono::milliseconds(0);
  if (args.timeout)
    options.lock_timeout = std::chrono::milliseconds(static_cast<int64_t>(*args.timeout * 1000));
  // While waiting, say who holds the repository: a cfs-fuse mount can hold it for days.
  options.on_wait = [](const std::string& message) {
    std::fprintf(stderr, "%s\n", message.c_str());
  };
  const bool dry_run = args.dry_run;
  store::GcResult r = store::collect_garbage(repo, options);
  const char* verb = dry_run ? "would be removed" : "removed";
  std::string out;
  out += "Objects: " + std::to_string(r.objects_removed) + " " + verb + " (" +
         std::to_string(r.bytes_freed) + " bytes), " + std::to_string(r.objects_kept) + " kept\n";
  out += "Images: " + std::to_string(r.images_removed) + " " + verb + "\n";
  out += "Streams: " + std::to_string(r.streams_removed) + " " + verb + "\n";
  out += "Broken refs: " + std::to_string(r.refs_pruned) + " " + verb + "\n";
  out += "Temporary files: " + std::to_string(r.temp_files_removed) + " " + verb + "\n";
  print(out);
}

}  // namespace

void register_repo_commands(CLI::App& app, GlobalOptions& global) {
  auto [init_cmd, init] = add_command<InitArgs>(
      app, global, "init",
      "Create a repository at --repo DIR (or PATH). Secure repositories need fs-verity on the "
      "filesystem; --insecure makes one that names objects by userspace digests instead.",
      run_init);
  init_cmd->add_option("PATH", init->path, "Repository directory (default: --repo)");
  init_cmd->add_option("--hash", init->hash, "fs-verity hash: sha256 or sha512 (default)")
      ->check(CLI::IsMember({"sha256", "sha512"}));
  init_cmd->add_flag("--insecure", init->insecure, "Do not require fs-verity");

  auto [create_cmd, create] = add_command<CreateImageArgs>(
      app, global, "create-image",
      "Store the files of directory SRC as objects and a composefs image (EROFS V1) of it; "
      "prints the image id. With a NAME the image is also named images/refs/NAME. SRC gets "
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
  gc_cmd->add_flag("--dry-run", gc->dry_run, "Only report what would be removed");
  gc_cmd->add_option("--root", gc->roots,
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
