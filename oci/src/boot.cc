#include "cfs/oci/boot.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <deque>
#include <set>

#include "cfs/atomic_file.h"
#include "cfs/erofs/reader.h"
#include "cfs/error.h"
#include "cfs/escape.h"
#include "cfs/fd.h"
#include "cfs/oci/oci.h"
#include "cfs/oci/pe.h"
#include "cfs/output.h"
#include "cfs/store/images.h"
#include "fsutil.h"

namespace cfs::oci {

namespace {

constexpr std::string_view kModulesDir = "/usr/lib/modules";

std::optional<erofs::InodeInfo> lookup_path(const erofs::Image& image, std::string_view path) {
  erofs::InodeInfo inode = image.root();
  while (!path.empty()) {
    size_t slash = path.find('/');
    std::string_view part = path.substr(0, slash);
    path = slash == std::string_view::npos ? std::string_view{} : path.substr(slash + 1);
    if (part.empty()) continue;
    if (!inode.is_dir()) return std::nullopt;
    std::optional<erofs::DirEntry> entry = image.lookup(inode, part);
    if (!entry) return std::nullopt;
    inode = image.inode(entry->nid);
  }
  return inode;
}

// Names in a directory of the image, sorted bytewise, without "." and "..".
std::vector<std::string> list_dir(const erofs::Image& image, std::string_view path) {
  std::vector<std::string> names;
  std::optional<erofs::InodeInfo> dir = lookup_path(image, path);
  if (!dir || !dir->is_dir()) return names;
  erofs::DirCursor cursor = image.dirents(*dir);
  erofs::DirEntry entry;
  while (cursor.next(entry))
    if (entry.name != "." && entry.name != "..") names.emplace_back(entry.name);
  std::sort(names.begin(), names.end());
  return names;
}

bool is_regular(const erofs::Image& image, const std::string& path) {
  std::optional<erofs::InodeInfo> inode = lookup_path(image, path);
  return inode && inode->is_reg();
}

struct UkiSource {
  std::string path;  // in the image
  std::string dest;  // below BOOTDIR/EFI/Linux
  bool addon = false;
};

constexpr std::string_view kEfiExt = ".efi";
constexpr std::string_view kAddonExt = ".addon.efi";
constexpr std::string_view kAddonDirExt = ".efi.extra.d";

bool is_directory(const erofs::Image& image, const std::string& path) {
  std::optional<erofs::InodeInfo> inode = lookup_path(image, path);
  return inode && inode->is_dir();
}

// The EFI binaries of dir: *.efi files (UKIs, or addons when named *.addon.efi) and the
// addons in *.efi.extra.d directories, as composefs-rs' boot crate finds them.
void collect_efi(const erofs::Image& image, const std::string& dir, std::vector<UkiSource>& out) {
  for (const std::string& name : list_dir(image, dir)) {
    std::string path = dir + "/" + name;
    if (name.ends_with(kEfiExt) && is_regular(image, path)) {
      out.push_back({path, name, name.ends_with(kAddonExt)});
    } else if (name.ends_with(kAddonDirExt) && is_directory(image, path)) {
      for (const std::string& addon : list_dir(image, path))
        if (addon.ends_with(kEfiExt) && is_regular(image, path + "/" + addon))
          out.push_back({path + "/" + addon, name + "/" + addon, true});
    }
  }
}

// Type 2 entries: /boot/EFI/Linux and /usr/lib/modules/<kver>/.
std::vector<UkiSource> find_ukis(const erofs::Image& image) {
  std::vector<UkiSource> out;
  collect_efi(image, "/boot/EFI/Linux", out);
  for (const std::string& kver : list_dir(image, kModulesDir))
    collect_efi(image, std::string(kModulesDir) + "/" + kver, out);
  return out;
}

// A boot entry is line-oriented text read by the boot loader: a line break in any value it
// takes from the image (or from the command line for it) would end that line and start a
// key of the image's choosing ("options rd.break ..."), and other control characters would
// reach the boot menu. Refused, not escaped: the entry must say what the image says.
void require_entry_text(std::string_view value, const std::string& what) {
  if (has_control_chars(value) || !is_valid_utf8(value))
    throw Error(what + " '" + escape_for_log(value) +
                "' holds control characters or is not valid UTF-8; it cannot go into a boot "
                "entry");
}

void validate_entry_id(const std::string& id) {
  bool bad = id.empty() || id == "." || id == ".." || id.size() > 200 ||
             std::any_of(id.begin(), id.end(), [](char c) {
               return c == '/' || static_cast<unsigned char>(c) <= ' ' || c == 0x7f;
             });
  if (bad)
    throw Error("boot entry id '" + escape_for_log(id) +
                "' is not a plain file name (no '/', spaces or control characters)");
}

// Streams the image's regular file at path into sink. External data is read from its object
// and checked against the digest the image records, so a damaged object is never passed on.
void read_image_file(const store::Repository& repo, const erofs::Image& image,
                     const erofs::InodeInfo& inode, const std::string& path, OutputSink& sink) {
  std::array<std::byte, 1 << 16> buf;
  if (!inode.is_external()) {
    for (uint64_t offset = 0; offset < inode.size;) {
      size_t n = image.read(inode, offset, buf);
      if (n == 0) throw Error(image.name() + ": " + path + ": short inline data");
      sink.write(std::span(buf.data(), n));
      offset += n;
    }
    return;
  }
  std::optional<Digest> expected = image.metacopy_digest(inode);
  if (!expected) throw Error(image.name() + ": " + path + " names no object digest");
  UniqueFd object = repo.open_object(*expected);
  VeritySink verified(&sink, expected->algorithm());
  for (;;) {
    ssize_t n = ::read(object.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno(path + ": reading object " + expected->hex());
    if (n == 0) break;
    verified.write(std::span(buf.data(), static_cast<size_t>(n)));
  }
  if (verified.size() != inode.size || verified.finish() != *expected)
    throw Error(path + ": object " + expected->hex() +
                " does not match the digest the image records (run fsck)");
}

// PRETTY_NAME from the image's os-release, if it has one.
std::optional<std::string> pretty_name(const store::Repository& repo, const erofs::Image& image) {
  for (const char* path : {"/usr/lib/os-release", "/etc/os-release"}) {
    std::optional<erofs::InodeInfo> inode = lookup_path(image, path);
    if (!inode || !inode->is_reg() || inode->size > 65536) continue;
    StringSink sink;
    read_image_file(repo, image, *inode, path, sink);
    const std::string& text = sink.str();
    size_t at = 0;
    while (at < text.size()) {
      size_t nl = text.find('\n', at);
      std::string line = text.substr(at, nl == std::string::npos ? std::string::npos : nl - at);
      at = nl == std::string::npos ? text.size() : nl + 1;
      if (!line.starts_with("PRETTY_NAME=")) continue;
      std::string value = line.substr(12);
      if (value.size() >= 2 && (value.front() == '"' || value.front() == '\'') &&
          value.back() == value.front())
        value = value.substr(1, value.size() - 2);
      if (!value.empty()) return value;
    }
  }
  return std::nullopt;
}

// Writes the image's file at path to dest: a new file, renamed into place only when complete
// and synced.
void copy_out(const store::Repository& repo, const erofs::Image& image, const std::string& path,
              const std::string& dest) {
  std::optional<erofs::InodeInfo> inode = lookup_path(image, path);
  if (!inode || !inode->is_reg()) throw Error(image.name() + ": " + path + " is not a file");
  AtomicFile out(dest, 0644);
  FdSink sink(out.fd(), dest);
  read_image_file(repo, image, *inode, path, sink);
  sink.flush();
  out.commit();
}

}  // namespace

namespace {

// The composefs format of a stored image (its header's composefs_version), which decides the
// kernel argument's spelling.
uint32_t image_erofs_version(const store::Repository& repo, const Digest& image) {
  return store::open_image_reader(repo, image.hex()).format_version();
}

}  // namespace

std::string composefs_kernel_argument(const Digest& image, bool insecure, uint32_t erofs_version) {
  if (erofs_version == 2) return std::string("composefs=") + (insecure ? "?" : "") + image.hex();
  return std::string("composefs.digest=") + (insecure ? "?" : "") + "v1-" +
         std::string(algorithm_name(image.algorithm())) + "-12:" + image.hex();
}

void add_kernel_argument(std::vector<std::string>& words, const std::string& arg) {
  size_t eq = arg.find('=');
  std::string key = eq == std::string::npos ? arg : arg.substr(0, eq + 1);
  for (std::string& word : words) {
    if (word.starts_with(key)) {
      word = arg;
      return;
    }
  }
  words.push_back(arg);
}

std::optional<ComposefsArgument> composefs_argument(std::string_view cmdline) {
  std::optional<ComposefsArgument> found;
  size_t at = 0;
  while (at < cmdline.size()) {
    while (at < cmdline.size() && std::isspace(static_cast<unsigned char>(cmdline[at]))) ++at;
    size_t end = at;
    while (end < cmdline.size() && !std::isspace(static_cast<unsigned char>(cmdline[end]))) ++end;
    std::string_view word = cmdline.substr(at, end - at);
    at = end;
    ComposefsArgument arg;
    auto add = [&] {
      if (found && found->image != arg.image)
        throw Error("the command line names two composefs images (" + found->image.hex() + " and " +
                    arg.image.hex() + ")");
      found = arg;
    };
    if (word.starts_with("composefs=")) {
      // A format V2 image: the bare digest, sha256 or sha512 by its length.
      std::string_view value = word.substr(std::string_view("composefs=").size());
      if (value.starts_with('?')) {
        arg.insecure = true;
        value.remove_prefix(1);
      }
      std::optional<Digest> digest = Digest::from_hex(
          value, value.size() == 128 ? HashAlgorithm::sha512 : HashAlgorithm::sha256);
      if (!digest) throw Error("'" + escape_for_log(word) + "' is not composefs=[?]<hex digest>");
      arg.image = *digest;
      add();
      continue;
    }
    if (!word.starts_with("composefs.digest=")) continue;
    std::string_view value = word.substr(std::string_view("composefs.digest=").size());
    if (value.starts_with('?')) {
      arg.insecure = true;
      value.remove_prefix(1);
    }
    auto bad = [&] {
      return Error("'" + escape_for_log(word) +
                   "' is not composefs.digest=[?]v1-<sha256|sha512>-12:<hex digest>");
    };
    size_t colon = value.find(':');
    if (!value.starts_with("v1-") || colon == std::string_view::npos) throw bad();
    std::string_view descriptor = value.substr(3, colon - 3);
    if (!descriptor.ends_with("-12")) throw bad();
    std::optional<HashAlgorithm> alg =
        parse_algorithm_name(descriptor.substr(0, descriptor.size() - 3));
    if (!alg) throw bad();
    std::optional<Digest> digest = Digest::from_hex(value.substr(colon + 1), *alg);
    if (!digest) throw bad();
    arg.image = *digest;
    add();
  }
  return found;
}

namespace {

std::string image_file_bytes(const store::Repository& repo, const erofs::Image& image,
                             const std::string& path) {
  std::optional<erofs::InodeInfo> inode = lookup_path(image, path);
  if (!inode || !inode->is_reg()) throw Error(image.name() + ": " + path + " is not a file");
  StringSink sink;
  read_image_file(repo, image, *inode, path, sink);
  return sink.str();
}

// Writes the image's UKIs and addons to BOOTDIR/EFI/Linux after checking every one: a UKI's
// .cmdline must name the boot image (composefs.digest=), an addon must not name any.
// Nothing is written unless all pass.
void write_ukis(const store::Repository& repo, const erofs::Image& image, std::string_view name,
                std::vector<UkiSource> ukis, const BootEntryOptions& options, BootEntry& entry) {
  if (!options.kernel_arguments.empty())
    throw Error(escape_for_log(name) +
                ": the image boots through unified kernel images, whose command line is sealed "
                "in them; --cmdline cannot be added");
  size_t kernels = std::count_if(ukis.begin(), ukis.end(), [](auto& u) { return !u.addon; });
  if (kernels == 0)
    throw Error(escape_for_log(name) + ": the image carries UKI addons (" +
                escape_for_log(ukis.front().path) + ") but no unified kernel image");
  if (options.entry_id) {
    if (kernels != 1)
      throw Error(escape_for_log(name) + ": --entry-id renames the image's UKI, but it has " +
                  std::to_string(kernels));
    validate_entry_id(*options.entry_id);
    const UkiSource& uki =
        *std::find_if(ukis.begin(), ukis.end(), [](auto& u) { return !u.addon; });
    std::string old_name = uki.dest, new_name = *options.entry_id + ".efi";
    for (UkiSource& u : ukis) {
      if (u.dest == old_name)
        u.dest = new_name;
      else if (u.dest.starts_with(old_name + ".extra.d/"))
        u.dest = new_name + u.dest.substr(old_name.size());
    }
  }
  std::vector<std::string> data;
  for (const UkiSource& u : ukis) {
    std::string what = escape_for_log(name) + ": " + escape_for_log(u.path);
    require_entry_text(u.dest, what + ": file name");
    data.push_back(image_file_bytes(repo, image, u.path));
    PeFile pe(std::as_bytes(std::span(data.back())), what);
    std::optional<std::string> cmdline = pe.text_section(".cmdline");
    std::optional<ComposefsArgument> arg;
    try {
      if (cmdline) arg = composefs_argument(*cmdline);
    } catch (const Error& e) {
      throw Error(what + ": .cmdline: " + e.what());
    }
    if (u.addon) {
      if (arg)
        throw Error(what + ": the addon's .cmdline names a composefs image; only the UKI may");
      continue;
    }
    if (!cmdline) throw Error(what + ": the UKI has no .cmdline section");
    if (!arg)
      throw Error(what +
                  ": the UKI's .cmdline has no composefs.digest= argument, so it would not "
                  "boot the image");
    if (arg->image != entry.image)
      throw Error(what + ": the UKI's .cmdline boots composefs image " + arg->image.hex() +
                  ", not this image's boot image " + entry.image.hex());
  }

  struct stat st;
  if (::stat(options.bootdir.c_str(), &st) < 0 || !S_ISDIR(st.st_mode))
    throw Error(options.bootdir + ": no such directory (the boot partition's root, --bootdir)");
  UniqueFd bootdir = open_file(options.bootdir, O_RDONLY | O_DIRECTORY);
  // Addons first, the UKIs last: a boot loader never sees a UKI without its addons.
  std::vector<size_t> order(ukis.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_partition(order.begin(), order.end(), [&](size_t i) { return ukis[i].addon; });
  for (size_t i : order) {
    std::string rel = "EFI/Linux/" + ukis[i].dest;
    std::string dir_rel = rel.substr(0, rel.rfind('/'));
    UniqueFd dir =
        store::detail::make_dirs_at(bootdir.get(), dir_rel, options.bootdir + "/" + dir_rel);
    std::string dest = options.bootdir + "/" + rel;
    AtomicFile out(dest, 0644);
    write_all(out.fd(), std::as_bytes(std::span(data[i])), dest);
    out.commit();
    store::detail::fsync_or_throw(dir.get(), options.bootdir + "/" + dir_rel);
    (ukis[i].addon ? entry.addons : entry.ukis).push_back(dest);
  }
}

// ---- the image's own BLS Type 1 entries ----------------------------------------------------

constexpr std::string_view kEntriesDir = "/boot/loader/entries";
constexpr std::string_view kFileList = ".cfs-boot-files";
constexpr size_t kMaxEntrySize = 64 * 1024;

// The value of a "KEY value" line (KEY followed by at least one blank), as [start, end) in
// line without the blanks around it; nullopt for other keys.
std::optional<std::pair<size_t, size_t>> entry_value(std::string_view line, std::string_view key) {
  if (!line.starts_with(key) || line.size() == key.size() ||
      (line[key.size()] != ' ' && line[key.size()] != '\t'))
    return std::nullopt;
  size_t start = line.find_first_not_of(" \t", key.size());
  if (start == std::string_view::npos) return std::pair{line.size(), line.size()};
  size_t end = line.find_last_not_of(" \t") + 1;
  return std::pair{start, end};
}

struct RelocatedFile {
  std::string source;  // absolute path in the image
  std::string name;    // file name below BOOTDIR/<id>/
};

struct Type1Source {
  std::string conf;  // the entry file in the image
  std::string id;
  std::string text;  // the rewritten entry
  std::vector<RelocatedFile> files;
};

// Reads and rewrites one in-image entry; throws for anything it cannot relocate faithfully.
Type1Source relocate_entry(const store::Repository& repo, const erofs::Image& image,
                           std::string_view name, const std::string& conf_name,
                           const std::string& id, const std::string& karg,
                           const BootEntryOptions& options, const Digest& boot_image) {
  Type1Source out;
  out.conf = std::string(kEntriesDir) + "/" + conf_name;
  out.id = id;
  const std::string what = escape_for_log(name) + ": " + escape_for_log(out.conf);
  std::optional<erofs::InodeInfo> inode = lookup_path(image, out.conf);
  if (!inode || !inode->is_reg()) throw Error(what + " is not a regular file");
  if (inode->size > kMaxEntrySize)
    throw Error(what + " is larger than " + std::to_string(kMaxEntrySize) + " bytes");
  std::string text = image_file_bytes(repo, image, out.conf);
  if (!is_valid_utf8(text)) throw Error(what + " is not valid UTF-8");
  std::vector<std::string> lines;
  for (size_t at = 0; at < text.size();) {
    size_t nl = text.find('\n', at);
    lines.push_back(text.substr(at, nl == std::string::npos ? std::string::npos : nl - at));
    at = nl == std::string::npos ? text.size() : nl + 1;
  }
  bool kernel = false;
  std::optional<size_t> options_line;
  for (size_t i = 0; i < lines.size(); ++i) {
    std::string& line = lines[i];
    for (char c : line)
      if (c != '\t' && (static_cast<unsigned char>(c) < 0x20 || c == 0x7f))
        throw Error(what + ": line " + std::to_string(i + 1) + " holds a control character");
    if (entry_value(line, "devicetree-overlay"))
      throw Error(what + ": devicetree-overlay is not relocated by cfs");
    if (entry_value(line, "options") && !options_line) options_line = i;
    for (std::string_view key : {"linux", "initrd", "efi", "devicetree"}) {
      std::optional<std::pair<size_t, size_t>> range = entry_value(line, key);
      if (!range) continue;
      std::string path = line.substr(range->first, range->second - range->first);
      size_t slash = path.rfind('/');
      std::string file = slash == std::string::npos ? path : path.substr(slash + 1);
      if (!path.starts_with('/') || file.empty() || file == "." || file == "..")
        throw Error(what + ": " + std::string(key) + " '" + escape_for_log(path) +
                    "' is not an absolute path to a file");
      if (!is_regular(image, path))
        throw Error(what + ": " + std::string(key) + " " + escape_for_log(path) +
                    " is not a regular file in the image (paths are looked up from the "
                    "image's root)");
      for (const RelocatedFile& f : out.files)
        if (f.name == file && f.source != path)
          throw Error(what + ": " + escape_for_log(f.source) + " and " + escape_for_log(path) +
                      " would both become /" + id + "/" + escape_for_log(file));
      if (file == kFileList)
        throw Error(what + ": a file named " + std::string(kFileList) + " cannot be relocated");
      if (std::none_of(out.files.begin(), out.files.end(),
                       [&](const RelocatedFile& f) { return f.source == path; }))
        out.files.push_back({path, file});
      if (key == "linux" || key == "efi") kernel = true;
      line.replace(range->first, range->second - range->first, "/" + id + "/" + file);
    }
  }
  if (!kernel) throw Error(what + ": the entry names no kernel (linux or efi)");

  // The composefs argument, then --cmdline, into the first options line (composefs-rs'
  // add_cmdline: a word with the same key is replaced, otherwise the argument is appended).
  std::vector<std::string> args{karg};
  for (const std::string& arg : options.kernel_arguments) {
    if (arg.empty()) throw Error("a kernel argument is empty");
    require_entry_text(arg, "kernel argument");
    args.push_back(arg);
  }
  if (!options_line) {
    lines.push_back("options");
    options_line = lines.size() - 1;
  }
  {
    std::string& line = lines[*options_line];
    std::optional<std::pair<size_t, size_t>> range = entry_value(line, "options");
    std::vector<std::string> words;
    if (range) {
      std::string_view value =
          std::string_view(line).substr(range->first, range->second - range->first);
      for (size_t at = 0; at < value.size();) {
        size_t end = value.find_first_of(" \t", at);
        if (end == std::string_view::npos) end = value.size();
        if (end > at) words.emplace_back(value.substr(at, end - at));
        at = end + 1;
      }
    }
    for (const std::string& arg : args) add_kernel_argument(words, arg);
    std::string joined;
    for (const std::string& word : words) joined += (joined.empty() ? "" : " ") + word;
    line = "options " + joined;
  }
  // All options lines together must boot exactly the boot image.
  std::string cmdline;
  for (const std::string& line : lines)
    if (std::optional<std::pair<size_t, size_t>> range = entry_value(line, "options"))
      cmdline += line.substr(range->first, range->second - range->first) + " ";
  std::optional<ComposefsArgument> arg;
  try {
    arg = composefs_argument(cmdline);
  } catch (const Error& e) {
    throw Error(what + ": options: " + e.what());
  }
  if (!arg || arg->image != boot_image)
    throw Error(what + ": the entry's options would not boot the boot image " + boot_image.hex());

  out.text = "# Written by cfs for " + std::string(name) + " (composefs image " + boot_image.hex() +
             ") from " + out.conf + "\n";
  for (const std::string& line : lines) out.text += line + "\n";
  return out;
}

// Relocates every in-image entry into BOOTDIR; nothing is written unless all of them and every
// file they name check out (the files' data is verified while it goes to temporary files,
// which are renamed into place only when all are complete; the entries come last).
void write_type1_entries(const store::Repository& repo, const erofs::Image& image,
                         std::string_view name, const std::vector<std::string>& confs,
                         const BootEntryOptions& options, BootEntry& entry) {
  if (options.entry_id && confs.size() != 1)
    throw Error(escape_for_log(name) + ": --entry-id renames the image's BLS entry, but it has " +
                std::to_string(confs.size()));
  require_entry_text(name, "image name");
  const std::string karg = composefs_kernel_argument(entry.image, !repo.secure(),
                                                     image_erofs_version(repo, entry.image));
  std::vector<Type1Source> sources;
  for (const std::string& conf : confs) {
    std::string id = options.entry_id.value_or(conf.substr(0, conf.size() - 5));
    validate_entry_id(id);
    require_entry_text(id, "boot entry id");
    if (id == "loader" || id == "EFI")
      throw Error(escape_for_log(name) + ": boot entry id '" + id +
                  "' would put the entry's files into BOOTDIR/" + id);
    sources.push_back(relocate_entry(repo, image, name, conf, id, karg, options, entry.image));
  }

  struct stat st;
  if (::stat(options.bootdir.c_str(), &st) < 0 || !S_ISDIR(st.st_mode))
    throw Error(options.bootdir + ": no such directory (the boot partition's root, --bootdir)");
  UniqueFd bootdir = open_file(options.bootdir, O_RDONLY | O_DIRECTORY);
  std::deque<AtomicFile> pending;
  std::vector<UniqueFd> dirs;
  for (const Type1Source& source : sources) {
    const std::string dir = options.bootdir + "/" + source.id;
    dirs.push_back(store::detail::make_dirs_at(bootdir.get(), source.id, dir));
    // The list of what cfs put here, merged with an earlier one for the same id.
    std::set<std::string> listed;
    if (UniqueFd old = UniqueFd(::openat(dirs.back().get(), std::string(kFileList).c_str(),
                                         O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
        old) {
      std::string text = read_fd(old.get(), dir + "/" + std::string(kFileList), 1 << 20);
      for (size_t at = 0; at < text.size();) {
        size_t nl = text.find('\n', at);
        std::string line = text.substr(at, nl == std::string::npos ? std::string::npos : nl - at);
        at = nl == std::string::npos ? text.size() : nl + 1;
        if (!line.empty()) listed.insert(line);
      }
    }
    for (const RelocatedFile& f : source.files) {
      listed.insert(f.name);
      std::string dest = dir + "/" + f.name;
      AtomicFile& out = pending.emplace_back(dest, 0644);
      FdSink sink(out.fd(), dest);
      read_image_file(repo, image, *lookup_path(image, f.source), f.source, sink);
      sink.flush();
      entry.files.push_back(dest);
    }
    std::string list;
    for (const std::string& f : listed) list += f + "\n";
    AtomicFile& out = pending.emplace_back(dir + "/" + std::string(kFileList), 0644);
    write_all(out.fd(), std::as_bytes(std::span(list)), out.path());
  }
  // The lists first, so that a crash between here and the entries leaves files gc knows.
  for (size_t i = pending.size(); i-- > 0;)
    if (pending[i].path().ends_with("/" + std::string(kFileList))) pending[i].commit();
  for (AtomicFile& f : pending)
    if (!f.path().ends_with("/" + std::string(kFileList))) f.commit();
  for (size_t i = 0; i < sources.size(); ++i)
    store::detail::fsync_or_throw(dirs[i].get(), options.bootdir + "/" + sources[i].id);
  const std::string entries_dir = options.bootdir + "/loader/entries";
  UniqueFd entries_fd = store::detail::make_dirs_at(bootdir.get(), "loader/entries", entries_dir);
  for (const Type1Source& source : sources) {
    std::string path = entries_dir + "/" + source.id + ".conf";
    AtomicFile conf(path, 0644);
    write_all(conf.fd(), std::as_bytes(std::span(source.text)), path);
    conf.commit();
    entry.entries.push_back(path);
  }
  store::detail::fsync_or_throw(entries_fd.get(), entries_dir);
}

}  // namespace

BootEntry prepare_boot(const store::Repository& repo, std::string_view name,
                       const BootEntryOptions& options) {
  BootEntry entry;
  entry.image = image_id(repo, name, /*bootable=*/true, options.xattrs);
  if (options.expected_digest && *options.expected_digest != entry.image)
    throw Error(escape_for_log(name) + ": the boot image is " + entry.image.hex() +
                ", not the expected " + options.expected_digest->hex() + " (--expected-digest)");
  // The boot files: the bootable variant has /boot emptied, the plain image still has them.
  erofs::Image image =
      store::open_image_reader(repo, image_id(repo, name, false, options.xattrs).hex());
  std::vector<std::string> confs;
  for (const std::string& conf : list_dir(image, kEntriesDir))
    if (conf.ends_with(".conf")) confs.push_back(conf);
  if (!confs.empty()) {
    write_type1_entries(repo, image, name, confs, options, entry);
    return entry;
  }
  if (std::vector<UkiSource> ukis = find_ukis(image); !ukis.empty()) {
    write_ukis(repo, image, name, std::move(ukis), options, entry);
    return entry;
  }

  std::vector<std::string> kernels;
  for (const std::string& kver : list_dir(image, kModulesDir))
    if (is_regular(image, std::string(kModulesDir) + "/" + kver + "/vmlinuz"))
      kernels.push_back(kver);
  if (kernels.empty())
    throw Error(escape_for_log(name) + ": the image has no kernel (no " + std::string(kModulesDir) +
                "/<kver>/vmlinuz)");
  if (options.kernel_version) {
    if (std::find(kernels.begin(), kernels.end(), *options.kernel_version) == kernels.end())
      throw Error(escape_for_log(name) + ": no kernel " + escape_for_log(*options.kernel_version) +
                  " in " + std::string(kModulesDir) + " (the image has " +
                  escape_for_log(kernels.front()) +
                  (kernels.size() > 1 ? " and " + std::to_string(kernels.size() - 1) + " more"
                                      : std::string()) +
                  ")");
    entry.kernel_version = *options.kernel_version;
  } else {
    entry.kernel_version = kernels.front();
  }
  require_entry_text(entry.kernel_version, escape_for_log(name) + ": kernel version (" +
                                               std::string(kModulesDir) + " entry)");
  const std::string source_dir = std::string(kModulesDir) + "/" + entry.kernel_version;
  if (!is_regular(image, source_dir + "/initramfs.img"))
    throw Error(escape_for_log(name) + ": kernel " + entry.kernel_version + " has no initramfs (" +
                source_dir + "/initramfs.img)");

  const std::string id = options.entry_id.value_or(entry.kernel_version);
  validate_entry_id(id);
  require_entry_text(id, "boot entry id");
  require_entry_text(name, "image name");
  const std::string title = pretty_name(repo, image).value_or("composefs " + entry.kernel_version);
  require_entry_text(title, escape_for_log(name) + ": os-release PRETTY_NAME");

  std::vector<std::string> words{composefs_kernel_argument(entry.image, !repo.secure(),
                                                           image_erofs_version(repo, entry.image))};
  for (const std::string& arg : options.kernel_arguments) {
    if (arg.empty()) throw Error("a kernel argument is empty");
    require_entry_text(arg, "kernel argument");
    add_kernel_argument(words, arg);
  }
  for (const std::string& word : words) entry.options += (entry.options.empty() ? "" : " ") + word;

  // The boot partition must exist: a mistyped --bootdir is an error, not a new directory.
  struct stat st;
  if (::stat(options.bootdir.c_str(), &st) < 0 || !S_ISDIR(st.st_mode))
    throw Error(options.bootdir + ": no such directory (the boot partition's root, --bootdir)");
  UniqueFd bootdir = open_file(options.bootdir, O_RDONLY | O_DIRECTORY);
  const std::string files_dir = options.bootdir + "/" + id;
  const std::string entries_dir = options.bootdir + "/loader/entries";
  UniqueFd files_fd = store::detail::make_dirs_at(bootdir.get(), id, files_dir);
  UniqueFd entries_fd = store::detail::make_dirs_at(bootdir.get(), "loader/entries", entries_dir);
  entry.kernel_path = files_dir + "/vmlinuz";
  entry.initramfs_path = files_dir + "/initramfs.img";
  entry.entry_path = entries_dir + "/" + id + ".conf";
  copy_out(repo, image, source_dir + "/vmlinuz", entry.kernel_path);
  copy_out(repo, image, source_dir + "/initramfs.img", entry.initramfs_path);
  store::detail::fsync_or_throw(files_fd.get(), files_dir);

  std::string text = "# Written by cfs for " + std::string(name) + " (composefs image " +
                     entry.image.hex() + ")\n";
  text += "title " + title + "\n";
  text += "version " + entry.kernel_version + "\n";
  text += "linux /" + id + "/vmlinuz\n";
  text += "initrd /" + id + "/initramfs.img\n";
  text += "options " + entry.options + "\n";
  AtomicFile conf(entry.entry_path, 0644);
  write_all(conf.fd(), std::as_bytes(std::span(text)), entry.entry_path);
  conf.commit();
  store::detail::fsync_or_throw(entries_fd.get(), entries_dir);
  return entry;
}

}  // namespace cfs::oci
