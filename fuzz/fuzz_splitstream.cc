// libFuzzer target: the splitstream reader on arbitrary bytes (layer, config and manifest
// streams are read back from the repository, which another process may have damaged).
//  * construction and for_each_chunk may only ever throw cfs::Error;
//  * a stream that reads completely is rewritten by SplitStreamWriter and read again: refs,
//    named refs, content type and the chunk sequence must survive unchanged.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "cfs/error.h"
#include "cfs/output.h"
#include "cfs/store/splitstream.h"

namespace {

using namespace cfs;
using namespace cfs::store;

struct Chunk {
  bool external;
  std::string bytes;  // inline bytes, or the object's hex digest
  bool operator==(const Chunk&) const = default;
};

std::vector<Chunk> chunks_of(const SplitStreamReader& reader) {
  std::vector<Chunk> chunks;
  reader.for_each_chunk(
      [&](std::span<const std::byte> data) {
        // Adjacent inline writes merge in the writer, so compare them merged.
        std::string_view text(reinterpret_cast<const char*>(data.data()), data.size());
        if (!chunks.empty() && !chunks.back().external)
          chunks.back().bytes += text;
        else
          chunks.push_back({false, std::string(text)});
      },
      [&](const Digest& object) {
        chunks.push_back({true, object.hex()});
      });
  std::erase_if(chunks, [](const Chunk& c) { return !c.external && c.bytes.empty(); });
  return chunks;
}

void check(std::vector<std::byte> bytes, HashAlgorithm alg) {
  std::optional<SplitStreamReader> reader;
  std::vector<Chunk> chunks;
  try {
    reader.emplace(SplitStreamReader::from_bytes(std::move(bytes), alg, "fuzz"));
    chunks = chunks_of(*reader);
  } catch (const Error&) {
    return;
  }
  // Rewrite. External chunk sizes are not stored in the stream; any size will do.
  SplitStreamWriter writer(alg, reader->content_type());
  for (const Digest& ref : reader->stream_refs()) (void)writer.add_stream_ref(ref);
  for (const NamedRef& named : reader->named_refs()) writer.add_named_ref(named.name, named.target);
  for (const Chunk& c : chunks) {
    if (c.external)
      writer.write_external(*Digest::from_hex(c.bytes, alg), 1);
    else
      writer.write_inline(std::string_view(c.bytes));
  }
  StringSink out;
  writer.finish(out);
  std::string again = std::move(out.str());
  std::vector<std::byte> again_bytes(
      reinterpret_cast<const std::byte*>(again.data()),
      reinterpret_cast<const std::byte*>(again.data()) + again.size());
  SplitStreamReader reread = SplitStreamReader::from_bytes(std::move(again_bytes), alg, "again");
  if (reread.content_type() != reader->content_type()) std::abort();
  if (chunks_of(reread) != chunks) std::abort();
  // A repeated name is kept once (the writer replaces it), with the last record's target.
  std::map<std::string, Digest> names;
  for (const NamedRef& named : reader->named_refs())
    names.insert_or_assign(named.name, named.target);
  if (reread.named_refs().size() != names.size()) std::abort();
  for (const auto& entry : names) {
    const std::string& name = entry.first;
    const Digest& target = entry.second;
    const Digest* found = reread.find_named_ref(name);
    if (!found) std::abort();
    bool unique = std::count_if(reader->named_refs().begin(), reader->named_refs().end(),
                                [&](const NamedRef& n) { return n.name == name; }) == 1;
    if (unique && *found != target) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto* begin = reinterpret_cast<const std::byte*>(data);
  check(std::vector<std::byte>(begin, begin + size), HashAlgorithm::sha256);
  check(std::vector<std::byte>(begin, begin + size), HashAlgorithm::sha512);
  return 0;
}
