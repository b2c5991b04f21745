// Naming objects: images/<id>, streams/<content-id> and the refs below images/refs/ and
// streams/refs/.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <map>

#include "cfs/error.h"
#include "cfs/escape.h"
#include "cfs/fd.h"
#include "cfs/repo_layout.h"
#include "cfs/store/refs.h"
#include "repository_state.h"

namespace cfs::store {

void Repository::State::set_ref(const std::string& namespace_dir, std::string_view name,
                                const std::string& entry_rel) {
  require_writable();
  const std::string link = namespace_dir + "/refs/" + std::string(name);
  auto slash = link.rfind('/');
  UniqueFd parent = detail::make_dirs_at(dir.get(), link.substr(0, slash), what(link));
  replace_symlink_at(parent.get(), link.substr(slash + 1), relative_symlink_target(link, entry_rel),
                     what(link));
  // Covers the new ref and any directories created for it.
  detail::syncfs_or_throw(dir.get(), path);
}

// ---- images

void Repository::link_image(const Digest& image) {
  State& s = *state_;
  s.require_writable();
  if (!has_object(image)) throw Error(s.path + ": image object " + image.hex() + " is not stored");
  s.publish_barrier();
  UniqueFd images = detail::open_dir_at(s.dir.get(), "images", s.what("images"));
  replace_symlink_at(images.get(), image.hex(), repo_layout::object_link_target(image),
                     s.what(repo_layout::image_entry(image)));
  detail::fsync_or_throw(images.get(), s.what("images"));
}

void Repository::set_image_ref(std::string_view name, const Digest& image) {
  State& s = *state_;
  validate_ref_name(name, "image ref");
  const std::string entry = repo_layout::image_entry(image);
  if (!detail::lstat_at(s.dir.get(), entry, s.what(entry)))
    throw Error(s.what(entry) + ": no such image to name '" + escape_for_log(name) + "'");
  s.set_ref("images", name, entry);
}

std::optional<Digest> Repository::resolve_image(std::string_view name) const {
  const State& s = *state_;
  if (auto id = Digest::from_hex(name, s.meta.algorithm)) {
    if (detail::lstat_at(s.dir.get(), repo_layout::image_entry(*id), s.what("images"))) return id;
  }
  try {
    validate_ref_name(name, "image ref");
  } catch (const Error&) {
    return std::nullopt;
  }
  auto entry = s.resolve_ref(repo_layout::image_ref(name));
  if (!entry || !entry->starts_with("images/")) return std::nullopt;
  auto id = Digest::from_hex(entry->substr(7), s.meta.algorithm);
  if (!id || !detail::lstat_at(s.dir.get(), *entry, s.what(*entry))) return std::nullopt;
  return id;
}

UniqueFd Repository::open_image(std::string_view name) const {
  auto id = resolve_image(name);
  if (!id) throw Error(state_->path + ": no image named '" + escape_for_log(name) + "'");
  return open_object(*id);
}

std::vector<ImageInfo> Repository::list_images() const {
  const State& s = *state_;
  std::map<Digest, ImageInfo> images;
  UniqueFd dir = detail::open_dir_if_exists(s.dir.get(), "images", s.what("images"));
  if (!dir) return {};
  detail::for_each_entry(dir.get(), s.what("images"), [&](const std::string& name, unsigned char) {
    auto id = Digest::from_hex(name, s.meta.algorithm);
    if (!id) return;
    ImageInfo info;
    info.id = *id;
    if (auto size = s.stored_size(*id)) info.size = *size;
    images.emplace(*id, std::move(info));
  });
  s.walk_refs("images", [&](const std::string& ref, const std::string& link) {
    auto entry = s.resolve_ref(link);
    if (!entry || !entry->starts_with("images/")) return;
    auto id = Digest::from_hex(entry->substr(7), s.meta.algorithm);
    if (!id) return;
    if (auto it = images.find(*id); it != images.end()) it->second.refs.push_back(ref);
  });
  std::vector<ImageInfo> out;
  for (auto& [id, info] : images) {
    std::sort(info.refs.begin(), info.refs.end());
    out.push_back(std::move(info));
  }
  return out;
}

// ---- streams

Digest Repository::write_stream(SplitStreamWriter& writer, std::string_view content_id,
                                std::optional<std::string_view> ref) {
  validate_entry_name(content_id, "stream content id");
  if (ref) validate_ref_name(*ref, "stream ref");
  Digest id = write_stream_object(writer);
  link_stream(id, content_id, ref);
  return id;
}

Digest Repository::write_stream_object(SplitStreamWriter& writer) {
  State& s = *state_;
  s.require_writable();
  if (writer.algorithm() != s.meta.algorithm)
    throw Error(s.path + ": splitstream uses another hash algorithm than the repository");
  ObjectWriter w = write_object();
  writer.finish(w);
  return w.commit();
}

void Repository::link_stream(const Digest& id, std::string_view content_id,
                             std::optional<std::string_view> ref) {
  State& s = *state_;
  s.require_writable();
  validate_entry_name(content_id, "stream content id");
  if (ref) validate_ref_name(*ref, "stream ref");
  s.publish_barrier();
  UniqueFd streams = detail::open_dir_at(s.dir.get(), "streams", s.what("streams"));
  replace_symlink_at(streams.get(), std::string(content_id), repo_layout::object_link_target(id),
                     s.what(repo_layout::stream_entry(content_id)));
  detail::fsync_or_throw(streams.get(), s.what("streams"));
  if (ref) set_stream_ref(*ref, content_id);
}

void Repository::set_stream_ref(std::string_view name, std::string_view content_id) {
  State& s = *state_;
  validate_ref_name(name, "stream ref");
  validate_entry_name(content_id, "stream content id");
  const std::string entry = repo_layout::stream_entry(content_id);
  if (!detail::lstat_at(s.dir.get(), entry, s.what(entry)))
    throw Error(s.what(entry) + ": no such stream to name '" + escape_for_log(name) + "'");
  s.set_ref("streams", name, entry);
}

std::optional<Digest> Repository::resolve_stream(std::string_view name) const {
  const State& s = *state_;
  try {
    validate_ref_name(name, "stream name");
  } catch (const Error&) {
    return std::nullopt;
  }
  if (name.find('/') == std::string_view::npos) {
    if (auto id = s.entry_object(repo_layout::stream_entry(name))) return id;
  }
  auto entry = s.resolve_ref(repo_layout::stream_ref(name));
  if (!entry || !entry->starts_with("streams/")) return std::nullopt;
  return s.entry_object(*entry);
}

SplitStreamReader Repository::open_stream(std::string_view name) const {
  auto id = resolve_stream(name);
  if (!id) throw Error(state_->path + ": no stream named '" + escape_for_log(name) + "'");
  UniqueFd fd = open_object(*id);
  return SplitStreamReader::from_fd(
      fd.get(), algorithm(),
      "stream '" + std::string(name) + "' (" + state_->what(object_repo_path(*id)) + ")");
}

void Repository::cat_stream(std::string_view name, OutputSink& out) const {
  SplitStreamReader reader = open_stream(name);
  uint64_t total = 0;
  std::vector<std::byte> buf(kWriteBuffer);
  reader.for_each_chunk(
      [&](std::span<const std::byte> data) {
        out.write(data);
        total += data.size();
      },
      [&](const Digest& object) {
        UniqueFd fd = open_object(object);
        const std::string what = state_->what(object_repo_path(object));
        while (size_t n = read_some(fd.get(), buf, what)) {
          out.write(std::span<const std::byte>(buf.data(), n));
          total += n;
        }
      });
  if (total != reader.stream_size()) {
    throw Error(state_->path + ": stream '" + escape_for_log(name) + "' reassembles to " +
                std::to_string(total) + " bytes, its header says " +
                std::to_string(reader.stream_size()));
  }
  out.flush();
}

}  // namespace cfs::store
