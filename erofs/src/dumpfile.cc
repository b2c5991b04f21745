// composefs-dump(5) parser.
#include "cfs/erofs/dumpfile.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <cstring>
#include <unordered_map>

#include "cfs/error.h"
#include "cfs/escape.h"
#include "cfs/fd.h"

namespace cfs::erofs {

namespace {

constexpr uint32_t kValidTypes[] = {S_IFREG, S_IFDIR, S_IFLNK, S_IFBLK, S_IFCHR, S_IFSOCK, S_IFIFO};

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Appends the unescaped bytes of a dumpfile field to out; returns what is wrong with it
// ("... in " + the field's name completes the message), nullptr if nothing.
// *bad is set to the position of the offending byte.
const char* unescape_field(std::string_view field, std::string& out, size_t* bad = nullptr) {
  out.reserve(out.size() + field.size());
  for (size_t i = 0; i < field.size(); i++) {
    const char c = field[i];
    if (c == '\0') return "NUL byte in ";
    if (c != '\\') {
      // Runs of plain bytes are copied at once.
      size_t end = i + 1;
      while (end < field.size() && field[end] != '\\' && field[end] != '\0') end++;
      out.append(field.data() + i, end - i);
      i = end - 1;
      continue;
    }
    if (++i >= field.size()) return "unterminated escape in ";
    switch (field[i]) {
      case '\\':
        out += '\\';
        break;
      case 'n':
        out += '\n';
        break;
      case 'r':
        out += '\r';
        break;
      case 't':
        out += '\t';
        break;
      case 'x': {
        int hi = i + 1 < field.size() ? hex_digit(field[i + 1]) : -1;
        int lo = i + 2 < field.size() ? hex_digit(field[i + 2]) : -1;
        if (hi < 0 || lo < 0) return "invalid \\x escape in ";
        out += static_cast<char>(hi << 4 | lo);
        i += 2;
        break;
      }
      default:
        if (bad) *bad = i;
        return "invalid escape in ";
    }
  }
  return nullptr;
}

// The dumpfile a tree's content_ref point into, kept open (a duplicate of the parser's fd).
class DumpfileContent final : public ContentSource {
 public:
  DumpfileContent(UniqueFd fd, std::string filename)
      : fd_(std::move(fd)), filename_(std::move(filename)) {}

  void read(const ContentRef& ref, uint64_t size, std::string& out) const override {
    raw_.resize(ref.length);
    pread_exact(fd_.get(), std::as_writable_bytes(std::span(raw_)), ref.offset, filename_);
    out.clear();
    if (unescape_field(raw_, out) || out.size() != size)
      throw Error(escape_for_log(filename_) + ": inline content at byte " +
                  std::to_string(ref.offset) + " changed after the file was parsed");
  }

 private:
  UniqueFd fd_;
  std::string filename_;
  mutable std::string raw_;  // scratch: one read at a time
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Parser

struct DumpfileParser::State {
  std::string filename;
  DumpfileParseOptions options;
  size_t lineno = 0;
  // File offset of the line being parsed when inline content is left in the file, else -1.
  int64_t line_offset = -1;
  std::string_view line_start;  // the line being parsed (offsets of its fields)
  std::string scratch;
  Tree tree;
  bool have_root = false;

  // The directory the previous entry was added to: consecutive lines usually share it.
  std::string cached_dir_path;
  Inode* cached_dir = nullptr;

  struct PendingLink {
    Inode* parent;
    std::string name;
    std::string path;
    std::string target;
    size_t lineno;
  };
  std::vector<PendingLink> links;
  std::unordered_map<const Inode*, size_t> placeholders;  // placeholder inode -> links index

  [[noreturn]] void fail(const std::string& reason) const { fail_at(lineno, reason); }
  [[noreturn]] void fail_at(size_t line, const std::string& reason) const {
    // Reasons quote fields of the (untrusted) dumpfile: escaped once here for all of them.
    throw Error(filename + ":" + std::to_string(line) + ": " + escape_for_log(reason));
  }

  // Unescapes a field; '-' means empty when dash_is_empty.
  std::string unescape(std::string_view field, const char* what, bool dash_is_empty) const {
    std::string out;
    if (dash_is_empty && field == "-") return out;
    unescape_to(field, what, out);
    return out;
  }

  void unescape_to(std::string_view field, const char* what, std::string& out) const {
    out.clear();
    size_t bad = 0;
    if (const char* problem = unescape_field(field, out, &bad)) {
      if (std::string_view(problem) == "invalid escape in ")
        fail(std::string("invalid escape '\\") + field[bad] + "' in " + what);
      fail(std::string(problem) + what);
    }
  }

  template <typename T>
  T number(std::string_view field, const char* what, int base = 10) const {
    T value{};
    auto [end, ec] = std::from_chars(field.data(), field.data() + field.size(), value, base);
    if (field.empty() || ec != std::errc() || end != field.data() + field.size())
      fail(std::string("invalid ") + what + " '" + std::string(field.substr(0, 64)) + "'");
    return value;
  }

  // Signed seconds. The C parser reads them with strtoull into a signed time_t, so "-100"
  // and its two's complement "18446744073709551516" both mean 100 s before 1970.
  int64_t seconds(std::string_view field) const {
    if (field.starts_with('-')) {
      auto magnitude = number<uint64_t>(field.substr(1), "mtime seconds");
      if (magnitude > uint64_t{1} << 63)
        fail("mtime seconds '" + std::string(field) + "' out of range");
      return static_cast<int64_t>(0 - magnitude);
    }
    return static_cast<int64_t>(number<uint64_t>(field, "mtime seconds"));
  }

  // DIGEST: 64 hex digits (SHA-256, what the C tools write) or 128 (SHA-512). C would take a
  // malformed field partially or not at all, silently giving a file without the digest the
  // producer meant; refusing it is the only safe reading.
  std::optional<Digest> digest(std::string_view field) const {
    if (field == "-") return std::nullopt;
    std::string text = unescape(field, "digest", false);
    auto digest = Digest::from_hex(text);
    if (!digest)
      fail("invalid digest '" + detail_printable(text.substr(0, 130)) +
           "': expected 64 (SHA-256) or 128 (SHA-512) hexadecimal digits");
    return digest;
  }

  static std::string detail_printable(std::string_view bytes) {
    std::string out;
    append_escaped(out, bytes, false);
    return out;
  }

  Inode* lookup_dir(std::string_view dir_path) {
    if (cached_dir && dir_path == cached_dir_path) return cached_dir;
    Inode* dir = tree.lookup(dir_path);
    if (!dir) fail("parent directory '" + std::string(dir_path) + "' does not exist");
    if (!dir->is_dir()) fail("parent '" + std::string(dir_path) + "' is not a directory");
    cached_dir_path.assign(dir_path);
    cached_dir = dir;
    return dir;
  }

  // Canonicalises an absolute path: repeated '/' collapse, '.' and '..' are rejected.
  std::string canonical_path(const std::string& raw) const {
    if (raw.empty() || raw[0] != '/') fail("path '" + raw.substr(0, 256) + "' is not absolute");
    if (raw.size() > kPathMax) fail("path longer than " + std::to_string(kPathMax) + " bytes");
    std::string out;
    out.reserve(raw.size());
    size_t pos = 0;
    while (pos < raw.size()) {
      while (pos < raw.size() && raw[pos] == '/') pos++;
      size_t end = raw.find('/', pos);
      if (end == std::string::npos) end = raw.size();
      if (end == pos) break;
      std::string_view name(raw.data() + pos, end - pos);
      if (name == "." || name == "..")
        fail("path '" + raw + "' has a '" + std::string(name) + "' component");
      if (name.size() > kNameMax)
        fail("name '" + std::string(name.substr(0, 32)) + "...' longer than 255 bytes");
      out += '/';
      out += name;
      pos = end;
    }
    return out.empty() ? "/" : out;
  }

  void parse_xattrs(Inode& inode, std::string_view rest) {
    if (rest.size() > kXattrLineMax)
      fail("xattrs of one entry exceed " + std::to_string(kXattrLineMax) + " bytes");
    size_t budget = 0;
    while (!rest.empty()) {
      size_t sp = rest.find(' ');
      std::string_view field = rest.substr(0, sp);
      rest = sp == std::string_view::npos ? std::string_view() : rest.substr(sp + 1);
      if (field.empty()) {
        if (options.strict) fail("empty xattr field (double space)");
        continue;
      }
      size_t eq = field.find('=');
      if (eq == std::string_view::npos)
        fail("xattr '" + std::string(field.substr(0, 64)) + "' has no '='");
      std::string key = unescape(field.substr(0, eq), "xattr name", false);
      std::string value = unescape(field.substr(eq + 1), "xattr value", false);
      if (key.empty()) fail("empty xattr name");
      if (key.size() > xattr_name_max(key))
        fail("xattr name '" + key.substr(0, 32) + "...' longer than " +
             std::to_string(xattr_name_max(key)) + " bytes" +
             (key.size() <= kXattrNameMax ? " (trusted.overlay.* names grow by 8 when stored)"
                                          : ""));
      if (key.find('\0') != std::string::npos) fail("xattr name contains a NUL byte");
      if (value.size() > kXattrValueMax)
        fail("xattr '" + key + "' value longer than " + std::to_string(kXattrValueMax) + " bytes");
      budget += 7 + key.size() + value.size();
      if (budget + sizeof(XattrIbodyHeader) > kXattrBudgetCompat)
        fail("xattrs of one entry exceed the 32767-byte inode budget");
      inode.set_xattr(std::move(key), std::move(value));  // later duplicates replace
    }
  }

  static constexpr int kFields =
      11;  // PATH SIZE MODE NLINK UID GID RDEV MTIME PAYLOAD CONTENT DIGEST

  // Splits off the 11 fixed fields; returns the rest (the xattrs).
  std::string_view split_fields(std::string_view line, std::string_view (&fields)[kFields]) const {
    std::string_view rest = line;
    for (int i = 0; i < kFields; i++) {
      size_t sp = rest.find(' ');
      if (sp == std::string_view::npos) {
        // The C parser treats missing trailing CONTENT/DIGEST as '-'; only strict mode refuses.
        if (i < kFields - 1 && (options.strict || i < 8))
          fail("expected 11 fields, found " + std::to_string(i + 1));
        fields[i] = rest;
        for (int j = i + 1; j < kFields; j++) fields[j] = "-";
        return {};
      }
      fields[i] = rest.substr(0, sp);
      rest = rest.substr(sp + 1);
    }
    return rest;
  }

  uint32_t parse_mode(std::string_view field) const {
    auto mode = number<uint32_t>(field, "mode", 8);
    uint32_t type = mode & S_IFMT;
    if (std::find(std::begin(kValidTypes), std::end(kValidTypes), type) == std::end(kValidTypes))
      fail("mode " + std::string(field) + " has no valid file type");
    if (mode & ~(S_IFMT | 07777)) {
      // EROFS stores 16 mode bits; the C tools silently drop the rest.
      if (options.strict) fail("mode " + std::string(field) + " has bits beyond the file type");
      mode &= S_IFMT | 07777;
    }
    return mode;
  }

  // SIZE, NLINK, UID, GID, RDEV (returned whole, the inode keeps 32 bits) and MTIME.
  uint64_t parse_stat(Inode& inode, const std::string_view (&fields)[kFields]) const {
    inode.size = number<uint64_t>(fields[1], "size");
    inode.nlink = number<uint32_t>(fields[3], "nlink");
    inode.uid = number<uint32_t>(fields[4], "uid");
    inode.gid = number<uint32_t>(fields[5], "gid");
    const auto rdev = number<uint64_t>(fields[6], "rdev");
    // Truncated to 32 bits, as C does (strtoull into a uint32_t st_rdev): a device whose low
    // bits are zero is then a whiteout, escaped as one, not an unescaped 0:0 in the image.
    inode.rdev = static_cast<uint32_t>(rdev);
    size_t dot = fields[7].find('.');
    if (dot == std::string_view::npos)
      fail("mtime '" + std::string(fields[7]) + "' is not SEC.NSEC");
    inode.mtime_sec = seconds(fields[7].substr(0, dot));
    inode.mtime_nsec = number<uint32_t>(fields[7].substr(dot + 1), "mtime nanoseconds");
    if (inode.mtime_nsec >= 1000000000u && options.strict) fail("mtime nanoseconds out of range");
    return rdev;
  }

  // PAYLOAD, CONTENT and DIGEST, checked with RDEV against the file type.
  void parse_data(Inode& inode, const std::string_view (&fields)[kFields], uint64_t rdev) {
    std::string payload = unescape(fields[8], "payload", true);
    bool has_content = fields[9] != "-";
    // Referenced content is unescaped into scratch only to check it and learn its length.
    const bool reference =
        has_content && line_offset >= 0 && inode.is_reg() &&
        fields[9].size() <= std::min<size_t>(kInlineContentMax * 4, ContentRef::kMaxLength) &&
        static_cast<uint64_t>(line_offset) + line_start.size() <= ContentRef::kMaxOffset;
    std::string content;
    if (reference)
      unescape_to(fields[9], "content", scratch);
    else
      content = unescape(fields[9], "content", true);
    const size_t content_size = reference ? scratch.size() : content.size();
    std::optional<Digest> file_digest = digest(fields[10]);

    if (!inode.is_device() && rdev != 0) {
      if (options.strict) fail("rdev set on a non-device entry");
      inode.rdev = 0;
    }

    switch (inode.type()) {
      case S_IFDIR:
        inode.size = 0;
        inode.nlink = 2;
        break;
      case S_IFLNK:
        if (payload.empty()) fail("symlink without a target");
        if (payload.size() > options.max_symlink)
          fail("symlink target longer than " + std::to_string(options.max_symlink) + " bytes");
        if (options.strict && inode.size != payload.size())
          fail("symlink size " + std::to_string(inode.size) + " differs from target length " +
               std::to_string(payload.size()));
        if (options.strict && has_content) fail("symlink with inline content");
        inode.size = payload.size();
        inode.payload = std::move(payload);
        break;
      case S_IFREG:
        if (has_content) {
          if (content_size > kInlineContentMax)
            fail("inline content longer than " + std::to_string(kInlineContentMax) + " bytes");
          if (content_size != inode.size)
            fail("inline content length " + std::to_string(content_size) + " differs from size " +
                 std::to_string(inode.size));
          if (reference && content_size > 0) {
            ContentRef ref;
            ref.offset = static_cast<uint64_t>(line_offset) +
                         static_cast<uint64_t>(fields[9].data() - line_start.data());
            ref.length = static_cast<uint32_t>(fields[9].size());
            inode.content.set_ref(ref);
          } else {
            inode.content = std::move(content);
          }
        } else if (inode.size > 0) {
          if (inode.size > kFileSizeMax)
            fail("file size " + std::to_string(inode.size) + " exceeds the 8 PiB EROFS limit");
          inode.payload = std::move(payload);
          inode.digest = file_digest;
        }
        break;
      default:
        if (options.strict && has_content) fail("inline content on a non-regular file");
        break;
    }
  }

  void parse_line(std::string_view line) {
    lineno++;
    line_start = line;
    if (line.empty()) {
      if (options.strict) fail("empty line");
      return;
    }
    std::string_view fields[kFields];
    const std::string_view xattrs = split_fields(line, fields);

    std::string path = canonical_path(unescape(fields[0], "path", false));
    std::string_view mode_field = fields[2];
    bool hardlink = !mode_field.empty() && mode_field[0] == '@';
    if (hardlink) mode_field.remove_prefix(1);

    if (!have_root) {
      if (path != "/") fail("the first entry must be the root directory '/'");
    } else if (path == "/") {
      fail("duplicate root directory entry");
    }

    if (hardlink) {
      if (path == "/") fail("the root cannot be a hardlink");
      std::string target = unescape(fields[8], "hardlink target", true);
      if (target.empty()) fail("hardlink without a target path");
      target = canonical_path(target);
      add_placeholder(path, std::move(target));
      return;
    }

    InodePtr inode = make_inode(parse_mode(mode_field));
    parse_data(*inode, fields, parse_stat(*inode, fields));
    parse_xattrs(*inode, xattrs);

    if (path == "/") {
      if (!inode->is_dir()) fail("the root entry must be a directory");
      tree.root = std::move(inode);
      have_root = true;
      cached_dir = nullptr;
      return;
    }
    insert(path, std::move(inode));
  }

  std::pair<std::string_view, std::string_view> split(const std::string& path) const {
    size_t slash = path.rfind('/');
    std::string_view dir(path.data(), slash == 0 ? 1 : slash);
    return {dir, std::string_view(path).substr(slash + 1)};
  }

  Inode* insert(const std::string& path, InodePtr inode) {
    auto [dir_path, name] = split(path);
    Inode* dir = lookup_dir(dir_path);
    if (!dir->children.empty() && std::string_view(dir->children.back().name) >= name &&
        dir->find(name))
      fail("duplicate entry '" + path + "'");
    Inode* raw = inode.get();
    dir->set_child(std::string(name), std::move(inode));
    return raw;
  }

  Dirent* find_dirent(Inode& dir, std::string_view name) {
    auto it = std::lower_bound(dir.children.begin(), dir.children.end(), name,
                               [](const Dirent& d, std::string_view n) { return d.name < n; });
    return it != dir.children.end() && it->name == name ? &*it : nullptr;
  }

  void add_placeholder(const std::string& path, std::string target) {
    // The placeholder keeps the name's place (and duplicate detection) until finish().
    Inode* placeholder = insert(path, make_inode(S_IFREG));
    auto [dir_path, name] = split(path);
    // The '@' line names the inode, the target line is its home (where C places it).
    find_dirent(*cached_dir, name)->link = true;
    placeholders.emplace(placeholder, links.size());
    links.push_back({cached_dir, std::string(name), path, std::move(target), lineno});
  }

  // Returns the dirent slot holding path's inode, nullptr if missing.
  InodePtr* lookup_slot(const std::string& path) {
    Inode* dir = tree.root.get();
    InodePtr* slot = &tree.root;
    size_t pos = 1;
    while (pos < path.size()) {
      size_t end = path.find('/', pos);
      if (end == std::string::npos) end = path.size();
      if (!dir || !dir->is_dir()) return nullptr;
      std::string_view name(path.data() + pos, end - pos);
      auto it = std::lower_bound(dir->children.begin(), dir->children.end(), name,
                                 [](const Dirent& d, std::string_view n) { return d.name < n; });
      if (it == dir->children.end() || it->name != name) return nullptr;
      slot = &it->inode;
      dir = slot->get();
      pos = end + 1;
    }
    return slot;
  }

  void resolve_links() {
    std::vector<uint8_t> state(links.size(), 0);  // 0 todo, 1 in progress, 2 done
    for (size_t i = 0; i < links.size(); i++) resolve(i, state);
  }

  void resolve(size_t i, std::vector<uint8_t>& state) {
    if (state[i] == 2) return;
    const PendingLink& link = links[i];
    if (state[i] == 1) fail_at(link.lineno, "hardlink cycle through '" + link.path + "'");
    state[i] = 1;
    if (link.target == link.path)
      fail_at(link.lineno, "hardlink '" + link.path + "' points to itself");
    InodePtr* target = lookup_slot(link.target);
    if (!target)
      fail_at(link.lineno,
              "hardlink target '" + link.target + "' of '" + link.path + "' does not exist");
    if (auto it = placeholders.find(target->get()); it != placeholders.end()) {
      resolve(it->second, state);
      target = lookup_slot(link.target);
    }
    if ((*target)->is_dir())
      fail_at(link.lineno,
              "hardlink '" + link.path + "' points to directory '" + link.target + "'");
    InodePtr shared = *target;
    InodePtr* slot = lookup_slot(link.path);
    *slot = std::move(shared);
    state[i] = 2;
  }
};

DumpfileParser::DumpfileParser(std::string filename, DumpfileParseOptions options)
    : state_(std::make_unique<State>()) {
  state_->filename = std::move(filename);
  state_->options = options;
}
DumpfileParser::~DumpfileParser() = default;
DumpfileParser::DumpfileParser(DumpfileParser&&) noexcept = default;

void DumpfileParser::parse_line(std::string_view line) {
  state_->parse_line(line);
}

Tree DumpfileParser::finish(bool final_newline) {
  State& s = *state_;
  if (!s.have_root) s.fail_at(s.lineno, "no root directory entry");
  if (s.options.strict && !final_newline) s.fail_at(s.lineno, "missing newline at end of file");
  s.resolve_links();
  return std::move(s.tree);
}

Tree parse_dumpfile(std::string_view text, std::string filename,
                    const DumpfileParseOptions& options) {
  DumpfileParser parser(std::move(filename), options);
  while (!text.empty()) {
    size_t nl = text.find('\n');
    if (nl == std::string_view::npos) {
      parser.parse_line(text);
      return parser.finish(false);
    }
    parser.parse_line(text.substr(0, nl));
    text.remove_prefix(nl + 1);
  }
  return parser.finish(true);
}

Tree parse_dumpfile_fd(int fd, std::string filename, const DumpfileParseOptions& options) {
  DumpfileParser parser(filename, options);
  DumpfileParser::State& state = *parser.state_;
  std::shared_ptr<const ContentSource> source;
  struct stat st;
  if (options.reference_content && ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
      ::lseek(fd, 0, SEEK_CUR) == 0) {
    UniqueFd dup(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
    if (!dup) throw_errno(filename);
    source = std::make_shared<DumpfileContent>(std::move(dup), filename);
  }
  // One buffer holds the unparsed bytes, buf[start, end). It grows past a read's size only
  // for a line longer than that: the parse keeps no more of the file in memory.
  constexpr size_t kReadSize = 64 * 1024;
  uint64_t consumed = 0;  // file offset of buf[0]
  std::string buf;
  size_t start = 0;
  size_t end = 0;
  for (;;) {
    if (start > 0) {
      std::memmove(buf.data(), buf.data() + start, end - start);
      end -= start;
      consumed += start;
      start = 0;
    }
    if (buf.size() < end + kReadSize) buf.resize(end + kReadSize);
    ssize_t n = ::read(fd, buf.data() + end, kReadSize);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(filename);
    }
    if (n == 0) break;
    end += static_cast<size_t>(n);
    const std::string_view data(buf.data(), end);
    for (;;) {
      size_t nl = data.find('\n', start);
      if (nl == std::string_view::npos) break;
      if (source) state.line_offset = static_cast<int64_t>(consumed + start);
      parser.parse_line(data.substr(start, nl - start));
      start = nl + 1;
    }
  }
  buf.resize(end);
  if (start < buf.size()) {
    if (source) state.line_offset = static_cast<int64_t>(consumed + start);
    parser.parse_line(std::string_view(buf).substr(start));
    Tree tree = parser.finish(false);
    tree.content_source = std::move(source);
    return tree;
  }
  Tree tree = parser.finish(true);
  tree.content_source = std::move(source);
  return tree;
}

}  // namespace cfs::erofs
