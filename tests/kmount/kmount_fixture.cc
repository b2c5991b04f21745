#include "kmount_fixture.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "cfs/erofs/scan.h"
#include "cfs/erofs/writer.h"
#include "cfs/error.h"
#include "cfs/fd.h"
#include "cfs/output.h"

namespace fs = std::filesystem;

namespace cfs::test {

void enter_private_mount_namespace() {
  if (::unshare(CLONE_NEWNS) < 0) throw_errno("unshare(CLONE_NEWNS)");
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) < 0)
    throw_errno("making / private");
}

void PrivilegedMountTest::SetUpTestSuite() {
  if (::geteuid() == 0) enter_private_mount_namespace();
}

void PrivilegedMountTest::SetUp() {
  if (::geteuid() != 0) GTEST_SKIP() << "kernel mounts need root";
}

void PrivilegedMountTest::TearDown() {
  if (::geteuid() == 0) detach_all_below(dir.path());
}

void populate_source_tree(const std::string& src) {
  for (const char* dir : {"", "/dir", "/dir/nested", "/etc", "/var", "/sysroot", "/usr/bin"})
    fs::create_directories(src + dir);
  write_file(src + "/small", "inline content\n");
  write_file(src + "/empty", "");
  std::string big;
  for (int i = 0; i < 3000; i++) big += "line " + std::to_string(i) + "\n";
  write_file(src + "/big", big);                              // external
  write_file(src + "/dir/nested/other", big + "tail\n");      // external
  write_file(src + "/usr/bin/tool", std::string(9000, 'x'));  // external
  write_file(src + "/etc/app.conf", "setting = 1\n");
  write_file(src + "/etc/hostname", "image\n");
  fs::create_symlink("../big", src + "/dir/link");
  ::chmod((src + "/usr/bin/tool").c_str(), 0755);
  ::chmod((src + "/dir/nested").c_str(), 0700);
}

BuiltImage build_image(const std::string& src, const std::string& objects,
                       const std::string& image) {
  fs::create_directories(objects);
  auto sink = [&](int fd, uint64_t, const std::string& path) {
    Digest d = fsverity_digest_fd(fd, HashAlgorithm::sha256, path);
    if (::lseek(fd, 0, SEEK_SET) < 0) throw_errno(path);
    std::string dest = objects + "/" + d.object_path();
    fs::create_directories(fs::path(dest).parent_path());
    write_file(dest, read_fd(fd, path));
    return d;
  };
  erofs::Tree tree = erofs::scan_directory(src, {}, sink);
  UniqueFd out = open_file(image, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  FdSink file(out.get(), image);
  erofs::WriteResult result = erofs::write_image(tree, file);
  file.flush();
  return {image, objects, result.digest.value()};
}

std::map<std::string, std::string> describe_tree(const std::string& root) {
  std::map<std::string, std::string> out;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator();
       ++it) {
    std::string path = it->path().string();
    struct stat st {};
    if (::lstat(path.c_str(), &st) < 0) throw_errno(path);
    std::ostringstream d;
    d << std::oct << st.st_mode << std::dec << " " << st.st_uid << ":" << st.st_gid;
    d << " mtime " << st.st_mtim.tv_sec;
    if (S_ISREG(st.st_mode)) d << " " << read_file(path);
    if (S_ISLNK(st.st_mode)) d << " -> " << fs::read_symlink(path).string();
    out[path.substr(root.size())] = d.str();
  }
  return out;
}

std::vector<std::string> mounts_below(const std::string& prefix) {
  std::vector<std::string> found;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, dev, root, mountpoint;
    fields >> id >> parent >> dev >> root >> mountpoint;
    if (mountpoint == prefix || mountpoint.starts_with(prefix + "/")) found.push_back(line);
  }
  return found;
}

std::vector<std::string> loop_devices_for(const std::string& path) {
  std::vector<std::string> found;
  std::string wanted = fs::weakly_canonical(path).string();
  for (const auto& entry : fs::directory_iterator("/sys/block")) {
    std::string name = entry.path().filename().string();
    if (!name.starts_with("loop")) continue;
    std::ifstream in(entry.path() / "loop" / "backing_file");
    std::string backing;
    if (std::getline(in, backing) && backing == wanted) found.push_back(name);
  }
  return found;
}

std::vector<std::string> leftover_temp_dirs() {
  std::vector<std::string> found;
  for (const char* base : {"/run", "/tmp"}) {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(base, ec))
      if (entry.path().filename().string().starts_with(".cfs-"))
        found.push_back(entry.path().string());
  }
  return found;
}

void detach_all_below(const std::string& prefix) {
  for (int round = 0; round < 64; round++) {
    std::vector<std::string> mounts = mounts_below(prefix);
    if (mounts.empty()) return;
    std::istringstream fields(mounts.back());
    std::string id, parent, dev, root, mountpoint;
    fields >> id >> parent >> dev >> root >> mountpoint;
    ::umount2(mountpoint.c_str(), MNT_DETACH);
  }
}

std::string binary_path(const std::string& name) {
  return std::string(CFS_BINDIR) + "/" + name;
}

RunResult run_tool(const std::string& args, const std::string& env, const std::string& program) {
  RunResult r;
  r.status =
      run(env + (env.empty() ? "" : " ") + binary_path(program) + " " + args + " 2>&1", &r.output);
  return r;
}

}  // namespace cfs::test
