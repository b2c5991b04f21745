#include "cfs/store/images.h"

#include <fcntl.h>
#include <unistd.h>

#include "cfs/erofs/writer.h"
#include "cfs/error.h"
#include "cfs/escape.h"
#include "cfs/fsverity.h"
#include "cfs/store/refs.h"

namespace cfs::store {

namespace {

erofs::WriterOptions repository_writer_options() {
  return {kRepositoryErofsVersion, kRepositoryErofsVersion};
}

void check_source_dir(const std::string& src) {
  struct stat st;
  if (::stat(src.c_str(), &st) < 0) throw_errno(src);
  if (!S_ISDIR(st.st_mode)) throw Error(src + ": not a directory");
}

}  // namespace

CreateImageResult create_image(Repository& repo, const std::string& src,
                               std::optional<std::string_view> ref,
                               const erofs::ScanOptions& options,
                               const TreeTransformFn& transform) {
  repo.require_writable();
  if (ref) validate_ref_name(*ref, "image ref");
  check_source_dir(src);
  CreateImageResult result;
  erofs::Tree tree =
      erofs::scan_directory(src, options, [&](int fd, uint64_t size, const std::string& path) {
        uint64_t copied = 0;
        Digest id = repo.ensure_object_from_fd(fd, path, &copied);
        if (copied != size) {
          throw Error(path + ": file changed while being stored (" + std::to_string(copied) +
                      " bytes read, " + std::to_string(size) + " expected)");
        }
        ++result.files_stored;
        result.bytes_stored += size;
        return id;
      });
  if (transform) transform(tree);
  for (uint32_t version : repo.erofs_versions()) {
    ObjectWriter image = repo.write_object();
    erofs::WriteResult written =
        erofs::write_image(tree, image, erofs::WriterOptions::for_erofs_version(version));
    Digest id = image.commit();
    repo.link_image(id);
    if (result.images.empty()) {
      result.image_size = written.size;
      result.id = id;
    }
    result.images.emplace_back(version, id);
  }
  if (ref) repo.set_image_ref(*ref, result.id);
  return result;
}

erofs::Tree scan_image_tree(const std::string& src, HashAlgorithm alg,
                            const erofs::ScanOptions& options, const TreeTransformFn& transform) {
  check_source_dir(src);
  erofs::Tree tree = erofs::scan_directory(
      src, options,
      [&](int fd, uint64_t, const std::string& path) { return fsverity_digest_fd(fd, alg, path); });
  if (transform) transform(tree);
  return tree;
}

Digest compute_image_id(const std::string& src, HashAlgorithm alg,
                        const erofs::ScanOptions& options, const TreeTransformFn& transform) {
  erofs::Tree tree = scan_image_tree(src, alg, options, transform);
  VeritySink sink(nullptr, alg);
  erofs::write_image(tree, sink, repository_writer_options());
  return sink.finish();
}

erofs::Image open_image_reader(const Repository& repo, std::string_view name) {
  UniqueFd fd = repo.open_image(name);
  return erofs::Image::open_fd(fd.get(), repo.path() + ": image " + std::string(name));
}

std::vector<Digest> image_objects(const erofs::Image& image, HashAlgorithm alg) {
  std::vector<Digest> out;
  for (const std::string& path : image.objects()) {
    auto id = Digest::from_object_path(path);
    if (!id || id->algorithm() != alg) {
      throw Error(image.name() + ": redirect '" + escape_for_log(path) +
                  "' is not an object path of the " + std::string(algorithm_name(alg)) +
                  " repository");
    }
    out.push_back(*id);
  }
  return out;
}

}  // namespace cfs::store
