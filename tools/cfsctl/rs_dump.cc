#include "rs_dump.h"

#include <functional>
#include <unordered_map>

#include "cfs/erofs/dumpfile.h"

namespace cfs::cli {

void append_rs_entry(std::string& out, std::string_view path, const RsDumpEntry& e) {
  erofs::append_field(out, path);
  out += ' ';
  erofs::append_number(out, e.size);
  out += ' ';
  erofs::append_number(out, e.mode, 8);
  out += ' ';
  erofs::append_number(out, e.nlink);
  out += ' ';
  erofs::append_number(out, e.uid);
  out += ' ';
  erofs::append_number(out, e.gid);
  out += ' ';
  erofs::append_number(out, e.rdev);
  out += ' ';
  if (e.mtime_sec < 0) out += '-';
  erofs::append_number(out, e.mtime_sec < 0 ? 0 - static_cast<uint64_t>(e.mtime_sec)
                                            : static_cast<uint64_t>(e.mtime_sec));
  out += '.';
  erofs::append_number(out, e.mtime_nsec);
  out += ' ';
  erofs::append_field(out, e.payload);
  out += ' ';
  erofs::append_field(out, e.content);
  out += ' ';
  out += e.digest ? *e.digest : std::string("-");
  for (const erofs::Xattr& x : e.xattrs) {
    out += ' ';
    erofs::append_escaped(out, x.name, true);
    out += '=';
    erofs::append_escaped(out, x.value, true);
  }
  out += '\n';
}

void append_rs_hardlink(std::string& out, std::string_view path, std::string_view target) {
  erofs::append_field(out, path);
  out += " 0 @120000 - - - - 0.0 ";
  erofs::append_field(out, target);
  out += " - -\n";
}

void append_rs_subtree(std::string& out, const erofs::Tree& tree, const erofs::Inode& top,
                       const std::string& shown) {
  std::unordered_map<const erofs::Inode*, std::string> first_name;
  std::string content_buf;
  std::function<void(const erofs::Inode&, const std::string&)> visit =
      [&](const erofs::Inode& inode, const std::string& path) {
        if (!inode.is_dir() && inode.nlink > 1) {
          auto [it, inserted] = first_name.try_emplace(&inode, path);
          if (!inserted) return append_rs_hardlink(out, path, it->second);
        }
        RsDumpEntry e;
        e.mode = inode.mode;
        e.nlink = inode.is_dir() ? erofs::directory_nlink(inode) : inode.nlink;
        e.uid = inode.uid;
        e.gid = inode.gid;
        e.rdev = inode.is_device() ? inode.rdev : 0;
        e.mtime_sec = inode.mtime_sec;
        e.mtime_nsec = inode.mtime_nsec;
        if (inode.is_reg()) {
          e.size = inode.size;
          if (inode.has_content()) {
            e.content = tree.inline_content(inode, content_buf);
          } else if (!inode.payload.empty()) {
            e.payload = inode.payload;
            if (inode.digest) e.digest = inode.digest->hex();
          }
        } else if (inode.is_symlink()) {
          e.size = inode.payload.size();
          e.payload = inode.payload;
        }
        e.xattrs.assign(inode.xattrs.begin(), inode.xattrs.end());
        append_rs_entry(out, path, e);
        if (!inode.is_dir()) return;
        std::string prefix = path.ends_with('/') ? path : path + "/";
        for (const erofs::Dirent& d : inode.children) visit(*d.inode, prefix + d.name);
      };
  visit(top, shown);
}

}  // namespace cfs::cli
