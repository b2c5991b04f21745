// The drop-in replacements for the composefs C tools: mkcomposefs and composefs-info take the
// options of composefs 1.0.8 and produce the same bytes and the same output.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "cfs/atomic_file.h"
#include "cfs/erofs/compat_dump.h"
#include "cfs/erofs/dumpfile.h"
#include "cfs/erofs/reader.h"
#include "cfs/erofs/scan.h"
#include "cfs/erofs/writer.h"
#include "cfs/error.h"
#include "cfs/fd.h"
#include "cfs/fsverity.h"
#include "cli_util.h"
#include "commands.h"

namespace cfs::cli {

namespace {

constexpr const char* kMkcomposefsDescription =
    "mkcomposefs: build a composefs image (EROFS metadata with overlayfs redirects to\n"
    "content-addressed objects) from a directory or from a composefs-dump(5) file.\n"
    "\n"
    "  mkcomposefs [OPTIONS] SOURCE IMAGE      write the image to IMAGE ('-' = stdout)\n"
    "  mkcomposefs --print-digest-only SOURCE  only print the image's fs-verity digest\n"
    "\n"
    "SOURCE is a directory, or with --from-file a dumpfile ('-' = stdin). For a directory,\n"
    "files of at most 64 bytes are stored inside the image; larger ones are referenced by\n"
    "their fs-verity digest as objects XX/YYYY... (see --digest-store), and symlinks are\n"
    "never followed. Hardlinked files become separate inodes, as in C mkcomposefs 1.0.8;\n"
    "--hardlinks keeps them as one inode with its link count. The image is written to a\n"
    "temporary file next to IMAGE and renamed into place, so a failed run leaves no partial\n"
    "image. The output is byte-identical to C mkcomposefs 1.0.8 for the same tree.\n"
    "Set CFS_PARSE_STRICT in the environment for the strict dumpfile rules. As in C\n"
    "mkcomposefs, giving only one of --min-version and --max-version sets the other to 0\n"
    "(and max is raised to min).\n"
    "\n"
    "Examples:\n"
    "  mkcomposefs --digest-store=/srv/objects rootfs/ rootfs.cfs\n"
    "  composefs-info dump old.cfs | mkcomposefs --from-file - new.cfs\n";

struct MkcomposefsOptions {
  std::string source;
  std::string image;
  std::string digest_store;
  bool use_epoch = false;
  bool skip_devices = false;
  bool skip_xattrs = false;
  bool user_xattrs = false;
  bool hardlinks = false;
  bool print_digest = false;
  bool print_digest_only = false;
  bool from_file = false;
  std::optional<uint32_t> min_version;
  std::optional<uint32_t> max_version;
  unsigned threads = 0;
};

// C mkcomposefs semantics: without either option the range is 0..1; once one is given the
// other defaults to 0, and max is raised to min (so --min-version=1 alone means 1..1).
erofs::WriterOptions version_range(const MkcomposefsOptions& o) {
  if (!o.min_version && !o.max_version) return {};
  erofs::WriterOptions w;
  w.min_version = o.min_version.value_or(0);
  w.max_version = std::max(o.max_version.value_or(0), w.min_version);
  return w;
}

erofs::Tree read_dumpfile(const std::string& source) {
  erofs::DumpfileParseOptions parse;
  parse.max_symlink = erofs::kSymlinkMaxCompat;
  parse.strict = std::getenv("CFS_PARSE_STRICT") != nullptr;
  // Inline content stays in the file until the image is written (a fraction of the memory).
  parse.reference_content = true;
  if (source == "-") return erofs::parse_dumpfile_fd(STDIN_FILENO, "<stdin>", parse);
  UniqueFd fd = open_file(source, O_RDONLY);
  return erofs::parse_dumpfile_fd(fd.get(), source, parse);
}

erofs::Tree scan_source(const MkcomposefsOptions& o) {
  erofs::ScanOptions scan;
  scan.use_epoch = o.use_epoch;
  scan.skip_devices = o.skip_devices;
  scan.skip_xattrs = o.skip_xattrs;
  scan.user_xattrs_only = o.user_xattrs;
  scan.detect_hardlinks = o.hardlinks;
  scan.max_symlink = erofs::kSymlinkMaxCompat;  // C mkcomposefs keeps PATH_MAX - 1
  std::optional<DigestStore> store;
  if (!o.digest_store.empty()) store.emplace(o.digest_store);
  auto sink = [&](int fd, uint64_t size, const std::string& path) {
    Digest digest = hash_file_exact(fd, size, path);
    if (store) store->add(fd, size, digest, path);
    return digest;
  };
  return erofs::scan_directory(o.source, scan, sink);
}

void print_digest(const Digest& digest) {
  std::string line = digest.hex() + "\n";
  FdSink out(STDOUT_FILENO, "stdout");
  out.write(line);
  out.flush();
}

}  // namespace

int mkcomposefs_main(int argc, char** argv) {
  CLI::App app{kMkcomposefsDescription, "mkcomposefs"};
  MkcomposefsOptions o;
  app.add_option("--digest-store", o.digest_store,
                 "Copy files over 64 bytes into DIR/XX/YYYY..., named by digest")
      ->type_name("DIR");
  app.add_flag("--use-epoch", o.use_epoch, "Set every mtime to 0 (reproducible images)");
  app.add_flag("--skip-devices", o.skip_devices, "Leave out block and character devices");
  app.add_flag("--skip-xattrs", o.skip_xattrs, "Store no extended attributes");
  app.add_flag("--user-xattrs", o.user_xattrs, "Store only user.* extended attributes")
      ->excludes("--skip-xattrs");
  app.add_flag("--print-digest", o.print_digest,
               "Print the image's fs-verity digest (its composefs id) on stdout");
  app.add_flag("--print-digest-only", o.print_digest_only,
               "Print the digest and write no image (takes no IMAGE argument)");
  app.add_flag("--hardlinks", o.hardlinks,
               "Keep hardlinked files of SOURCE as one inode (C mkcomposefs 1.0.8 and the default "
               "make each link a separate inode with nlink 1)");
  app.add_flag("--from-file", o.from_file, "SOURCE is a composefs-dump(5) file, '-' for stdin");
  app.add_option("--min-version", o.min_version, "Lowest format version (default 0)")
      ->type_name("N")
      ->check(CLI::Range(0u, erofs::kFormatVersionMax));
  app.add_option("--max-version", o.max_version,
                 "Highest format version, used if the tree has whiteouts (default 1)")
      ->type_name("N")
      ->check(CLI::Range(0u, erofs::kFormatVersionMax));
  app.add_option("--threads", o.threads,
                 "Accepted for compatibility (files are hashed as they are scanned)")
      ->type_name("N")
      ->check(CLI::Range(1u, 65536u));
  app.add_option("SOURCE", o.source, "Directory, or dumpfile with --from-file")->required();
  app.add_option("IMAGE", o.image, "Output image file, '-' for stdout");
  if (int rc = parse_dropin_args(app, "mkcomposefs", argc, argv); rc >= 0) return rc;

  auto usage_error = [](const char* message) {
    std::fprintf(stderr, "mkcomposefs: %s\nRun 'mkcomposefs --help' for usage.\n", message);
    return 1;
  };
  if (o.source.empty()) return usage_error("empty source path");
  if (o.print_digest_only && !o.image.empty())
    return usage_error("an IMAGE cannot be given with --print-digest-only");
  if (!o.print_digest_only && o.image.empty()) return usage_error("no IMAGE given");
  if (o.from_file && !o.digest_store.empty())  // C mkcomposefs ignores it silently
    std::fprintf(stderr, "mkcomposefs: warning: --digest-store is ignored with --from-file\n");
  if (o.image == "-" && ::isatty(STDOUT_FILENO))
    return usage_error("stdout is a terminal; refusing to write an image to it");

  struct stat source_stat;
  if (!o.from_file && ::stat(o.source.c_str(), &source_stat) == 0 && S_ISREG(source_stat.st_mode))
    return usage_error(
        ("SOURCE '" + o.source + "' is a file; add --from-file if it is a dumpfile").c_str());
  erofs::Tree tree = o.from_file ? read_dumpfile(o.source) : scan_source(o);
  erofs::WriterOptions writer_options = version_range(o);
  writer_options.compute_digest = o.print_digest || o.print_digest_only;

  // The writer hands its sink 256 KiB pieces, which FdSink writes straight through when they
  // do not fit its buffer: a small one saves the default megabyte of peak memory.
  constexpr size_t kSinkBuffer = 64 * 1024;
  erofs::WriteResult result;
  if (o.print_digest_only) {
    DiscardSink discard;
    result = erofs::write_image(tree, discard, writer_options);
  } else if (o.image == "-") {
    FdSink out(STDOUT_FILENO, "stdout", kSinkBuffer);
    result = erofs::write_image(tree, out, writer_options);
    out.flush();
  } else {
    AtomicFile file(o.image);
    FdSink out(file.fd(), o.image, kSinkBuffer);
    result = erofs::write_image(tree, out, writer_options);
    out.flush();
    file.commit();
  }
  if (result.digest) print_digest(*result.digest);
  return 0;
}

namespace {

constexpr const char* kComposefsInfoDescription =
    "composefs-info: inspect composefs images.\n"
    "\n"
    "  composefs-info [OPTIONS] COMMAND FILE...\n"
    "\n"
    "Commands:\n"
    "  ls               list every path; directories end in '/', symlinks show '-> TARGET',\n"
    "                   external files '@ OBJECT'\n"
    "  dump             print the image as a composefs-dump(5) file, which\n"
    "                   'mkcomposefs --from-file' turns back into the same image\n"
    "  objects          list the objects (XX/YYYY...) the images refer to\n"
    "  missing-objects  list the referenced objects absent from --basedir\n"
    "  measure-file     print the fs-verity digest of each FILE (any file, not only images)\n"
    "\n"
    "Images are checked strictly before anything is printed; a corrupt image is an error.\n"
    "Output is identical to composefs-info 1.0.8.\n";

// --filter: keep only the named top-level entries.
void filter_top_level(erofs::Tree& tree, const std::vector<std::string>& keep) {
  if (keep.empty()) return;
  std::vector<erofs::Dirent> kept;
  for (erofs::Dirent& d : tree.root->children)
    if (std::find(keep.begin(), keep.end(), d.name) != keep.end()) kept.push_back(std::move(d));
  tree.root->children = std::move(kept);
}

int measure_files(const std::vector<std::string>& files) {
  FdSink out(STDOUT_FILENO, "stdout");
  for (const std::string& file : files) out.write(fsverity_digest_file(file).hex() + "\n");
  out.flush();
  return 0;
}

}  // namespace

int composefs_info_main(int argc, char** argv) {
  CLI::App app{kComposefsInfoDescription, "composefs-info"};
  std::string basedir;
  std::vector<std::string> filters;
  std::string command;
  std::vector<std::string> files;
  app.add_option("--basedir", basedir, "Object directory for missing-objects")->type_name("DIR");
  app.add_option("--filter", filters,
                 "Only look at this top-level entry (a single name; repeatable)")
      ->type_name("NAME")
      ->take_all()
      ->check([](const std::string& name) -> std::string {
        if (name.find('/') != std::string::npos) return "filter must be a single name: " + name;
        return "";
      });
  app.add_option("COMMAND", command, "ls, dump, objects, missing-objects or measure-file")
      ->required()
      ->check(CLI::IsMember({"ls", "dump", "objects", "missing-objects", "measure-file"}));
  app.add_option("FILE", files, "Images (or any files for measure-file)")->required();
  if (int rc = parse_dropin_args(app, "composefs-info", argc, argv); rc >= 0) return rc;

  if (command == "measure-file") return measure_files(files);
  if (command == "missing-objects" && basedir.empty()) {
    std::fprintf(stderr,
                 "composefs-info: missing-objects needs --basedir=DIR\n"
                 "Run 'composefs-info --help' for usage.\n");
    return 1;
  }

  FdSink out(STDOUT_FILENO, "stdout");
  std::vector<std::string> objects;
  for (const std::string& file : files) {
    erofs::ReaderOptions options = erofs::ReaderOptions::compat();
    options.low_memory = true;  // one pass over each image
    erofs::Image image = erofs::Image::open(file, options);
    if (command == "objects" || command == "missing-objects") {
      if (filters.empty()) {
        std::vector<std::string> more = image.objects();
        objects.insert(objects.end(), more.begin(), more.end());
        continue;
      }
      erofs::Tree tree = image.to_tree();
      filter_top_level(tree, filters);
      erofs::walk(tree, [&](const erofs::WalkEntry& entry) {
        if (entry.first_visit && entry.inode.is_reg() && !entry.inode.payload.empty())
          objects.push_back(entry.inode.payload.str());
      });
      continue;
    }
    if (command == "dump") {
      erofs::write_compat_dump(image, out, filters);
      continue;
    }
    erofs::Tree tree = image.to_tree();
    filter_top_level(tree, filters);
    erofs::write_compat_listing(tree, out);
  }

  if (!objects.empty()) {
    std::sort(objects.begin(), objects.end());
    objects.erase(std::unique(objects.begin(), objects.end()), objects.end());
    std::optional<UniqueFd> base;
    if (command == "missing-objects") base.emplace(open_file(basedir, O_PATH | O_DIRECTORY));
    for (const std::string& object : objects) {
      if (base) {
        struct stat st;
        std::string_view relative(object);
        while (relative.starts_with('/')) relative.remove_prefix(1);
        if (::fstatat(base->get(), std::string(relative).c_str(), &st, 0) == 0) continue;
      }
      out.write(object + "\n");
    }
  }
  out.flush();
  return 0;
}

}  // namespace cfs::cli
