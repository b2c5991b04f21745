// lcfs_write_to and lcfs_load_node_*: images are written by cfs's EROFS writer and read by
// its strict reader (in the C-compatible mode the composefs-info drop-in uses).
#include <endian.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <span>
#include <string>
#include <unordered_set>

#include "cfs/erofs/reader.h"
#include "cfs/erofs/writer.h"
#include "cfs/output.h"
#include "convert.h"
#include "guard.h"
#include "libcomposefs/lcfs-erofs.h"

namespace cfs::lcfs {
namespace {

// Hands the image to the caller's write callback, retrying short writes as C does.
class CallbackSink : public OutputSink {
 public:
  CallbackSink(void* file, lcfs_write_cb cb) : file_(file), cb_(cb) {}
  void write(std::span<const std::byte> data) override {
    if (cb_ == nullptr) return;
    while (!data.empty()) {
      errno = EIO;  // a callback that returns 0 or -1 without errno still fails
      ssize_t n = cb_(file_, const_cast<std::byte*>(data.data()), data.size());
      if (n <= 0) throw_errno(errno, "libcomposefs: write callback");
      data = data.subspan(static_cast<size_t>(n));
    }
  }

 private:
  void* file_;
  lcfs_write_cb cb_;
};

// The format version the image needs: 1 when a whiteout (chr 0/0) appears and max allows.
bool has_whiteout(lcfs_node_s* node) {
  const InodeHead& in = node->head.inode;
  if ((in.st_mode & S_IFMT) == S_IFCHR && in.st_rdev == 0) return true;
  return std::any_of(node->children.begin(), node->children.end(), [](lcfs_node_s* child) {
    return child->head.link_to == nullptr && has_whiteout(child);
  });
}

lcfs_node_s* load(std::span<const uint8_t> bytes, const lcfs_read_options_s* opts) {
  auto image = erofs::Image::from_bytes(
      std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()), "image",
      erofs::ReaderOptions::compat());
  erofs::Tree tree = image.to_tree();
  if (opts != nullptr && opts->toplevel_entries != nullptr) {
    std::unordered_set<std::string_view> keep;
    for (const char* const* it = opts->toplevel_entries; *it != nullptr; ++it) keep.insert(*it);
    erase_if(tree.root->children, [&](const erofs::Dirent& d) { return !keep.contains(d.name); });
  }
  return from_tree(tree);
}

// A read-only private mapping of a whole file, unmapped on every path.
class Mapping {
 public:
  explicit Mapping(int fd) {
    struct stat st {};
    if (fstat(fd, &st) < 0) throw_errno("libcomposefs: fstat");
    size_ = static_cast<size_t>(st.st_size);
    if (size_ == 0) return;
    void* p = mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) throw_errno("libcomposefs: mmap");
    data_ = static_cast<const uint8_t*>(p);
  }
  ~Mapping() {
    if (data_ != nullptr) munmap(const_cast<uint8_t*>(data_), size_);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  std::span<const uint8_t> bytes() const noexcept { return {data_, data_ ? size_ : 0}; }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace
}  // namespace cfs::lcfs

using cfs::lcfs::with_errno;

extern "C" {

int lcfs_write_to(lcfs_node_s* root, lcfs_write_options_s* options) {
  if ((options->flags & ~LCFS_FLAGS_MASK) != 0 || options->version > LCFS_VERSION_MAX ||
      options->max_version > LCFS_VERSION_MAX || options->format != LCFS_FORMAT_EROFS) {
    errno = EINVAL;
    return -1;
  }
  if (options->max_version < options->version) options->max_version = options->version;
  // C reports the version it settled on back through the options.
  if (options->version < 1 && options->max_version >= 1 && cfs::lcfs::has_whiteout(root))
    options->version = 1;
  return with_errno(
      [&] {
        cfs::erofs::Tree tree = cfs::lcfs::to_tree(root);
        cfs::lcfs::CallbackSink sink(options->file, options->file_write_cb);
        cfs::erofs::WriterOptions wo{options->version, options->max_version};
        wo.compute_digest = options->digest_out != nullptr;
        cfs::erofs::WriteResult result = cfs::erofs::write_image(tree, sink, wo);
        if (result.digest)
          std::memcpy(options->digest_out, result.digest->bytes().data(), LCFS_DIGEST_SIZE);
        return 0;
      },
      -1);
}

lcfs_node_s* lcfs_load_node_from_image_ext(const uint8_t* image_data, size_t image_data_size,
                                           const lcfs_read_options_s* opts) {
  return with_errno(
      [&] {
        return cfs::lcfs::load({image_data, image_data_size}, opts);
      },
      static_cast<lcfs_node_s*>(nullptr));
}

lcfs_node_s* lcfs_load_node_from_image(const uint8_t* image_data, size_t image_data_size) {
  return lcfs_load_node_from_image_ext(image_data, image_data_size, nullptr);
}

lcfs_node_s* lcfs_load_node_from_fd_ext(int fd, const lcfs_read_options_s* opts) {
  return with_errno(
      [&] {
        cfs::lcfs::Mapping map(fd);
        return cfs::lcfs::load(map.bytes(), opts);
      },
      static_cast<lcfs_node_s*>(nullptr));
}

lcfs_node_s* lcfs_load_node_from_fd(int fd) {
  return lcfs_load_node_from_fd_ext(fd, nullptr);
}

int lcfs_version_from_fd(int fd) {
  lcfs_erofs_header_s header{};
  ssize_t n = pread(fd, &header, sizeof header, 0);
  if (n < 0) return -1;
  if (n != sizeof header || le32toh(header.magic) != LCFS_EROFS_MAGIC ||
      le32toh(header.version) != LCFS_EROFS_VERSION) {
    errno = EINVAL;
    return -1;
  }
  return static_cast<int>(le32toh(header.composefs_version));
}

}  // extern "C"
