// composefs-dump(5) writer and the C tools' escaping.
#include "cfs/erofs/dumpfile.h"

#include <charconv>
#include <unordered_map>

namespace cfs::erofs {

namespace {

bool is_graph(unsigned char c) {
  return c > 0x20 && c < 0x7f;
}

// ---------------------------------------------------------------------------------------------
// Escaping

// The C tools' escaping: backslash and \n \r \t by name, bytes keep() refuses as \xHH.
template <typename Keep>
void escape_bytes(std::string& out, std::string_view bytes, Keep keep) {
  static constexpr char digits[] = "0123456789abcdef";
  for (unsigned char c : bytes) {
    switch (c) {
      case '\\':
        out += "\\\\";
        continue;
      case '\n':
        out += "\\n";
        continue;
      case '\r':
        out += "\\r";
        continue;
      case '\t':
        out += "\\t";
        continue;
      default:
        break;
    }
    if (keep(c)) {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += digits[c >> 4];
      out += digits[c & 15];
    }
  }
}

}  // namespace

void append_escaped(std::string& out, std::string_view bytes, bool xattr) {
  escape_bytes(out, bytes,
               [xattr](unsigned char c) { return is_graph(c) && !(xattr && c == '='); });
}

void append_listing_escaped(std::string& out, std::string_view bytes) {
  escape_bytes(out, bytes, [](unsigned char c) { return c >= 0x20 && c < 0x7f; });
}

void append_field(std::string& out, std::string_view bytes) {
  if (bytes.empty()) {
    out += '-';
  } else if (bytes == "-") {
    out += "\\x2d";
  } else {
    append_escaped(out, bytes, false);
  }
}

// ---------------------------------------------------------------------------------------------
// Writer

void append_number(std::string& out, uint64_t v, int base) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v, base);
  out.append(buf, end);
}

void append_dump_entry(std::string& out, std::string_view path, const Inode& inode, uint32_t nlink,
                       const std::string* hardlink_target, std::string_view content) {
  append_escaped(out, path, false);
  out += ' ';
  append_number(out, inode.is_symlink() ? inode.payload.size() : inode.size);
  out += ' ';
  if (hardlink_target) out += '@';
  append_number(out, inode.mode, 8);
  out += ' ';
  append_number(out, nlink);
  out += ' ';
  append_number(out, inode.uid);
  out += ' ';
  append_number(out, inode.gid);
  out += ' ';
  append_number(out, inode.is_device() ? inode.rdev : 0);
  out += ' ';
  if (inode.mtime_sec < 0) {
    out += '-';
    append_number(out, 0 - static_cast<uint64_t>(inode.mtime_sec));
  } else {
    append_number(out, static_cast<uint64_t>(inode.mtime_sec));
  }
  out += '.';
  append_number(out, inode.mtime_nsec);
  out += ' ';
  if (hardlink_target) {
    append_field(out, *hardlink_target);
    out += " - -";
  } else {
    append_field(
        out, inode.is_symlink() || inode.is_external() ? inode.payload.view() : std::string_view());
    out += ' ';
    append_field(out, inode.is_reg() ? content : std::string_view());
    out += ' ';
    if (inode.is_external() && inode.digest) {
      out += inode.digest->hex();
    } else {
      out += '-';
    }
  }
  for (const Xattr& x : inode.xattrs) {
    out += ' ';
    append_escaped(out, x.name, true);
    out += '=';
    append_escaped(out, x.value, true);
  }
  out += '\n';
}

void write_dumpfile(const Tree& tree, OutputSink& out) {
  // Hardlinked inodes: the full line goes to the inode's home (the dirent not marked as a
  // link, else the first name), the other names become '@' lines, as the parser (and C)
  // read them back. '@' lines may precede their target.
  struct Home {
    std::string path;
    bool marked_link;
  };
  std::unordered_map<const Inode*, Home> home;
  walk(tree, [&](const WalkEntry& e) {
    if (!e.shared) return;
    auto [it, inserted] = home.try_emplace(&e.inode, Home{e.path, e.link});
    if (!inserted && it->second.marked_link && !e.link) it->second = {e.path, false};
  });
  std::string buf;
  std::string content_buf;
  walk(tree, [&](const WalkEntry& e) {
    const std::string* target = nullptr;
    if (e.shared) {
      const std::string& home_path = home.at(&e.inode).path;
      if (home_path != e.path) target = &home_path;
    }
    const Inode& inode = e.inode;
    append_dump_entry(
        buf, e.path, inode, inode.is_dir() ? directory_nlink(inode) : inode.nlink, target,
        inode.is_reg() ? tree.inline_content(inode, content_buf) : std::string_view());
    if (buf.size() >= (1 << 20)) {
      out.write(buf);
      buf.clear();
    }
  });
  out.write(buf);
}

std::string dumpfile_to_string(const Tree& tree) {
  StringSink sink;
  write_dumpfile(tree, sink);
  return std::move(sink.str());
}

}  // namespace cfs::erofs
