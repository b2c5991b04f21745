// The in-memory filesystem tree that every cfs producer (dumpfile parser, directory scan,
// OCI layer merge) builds and every consumer (EROFS writer, dumpfile writer) reads.
//
// Hardlinks are shared inodes: several Dirents hold the same InodePtr. Directories own
// their children sorted by name (bytewise), never containing "." or "..".
#pragma once

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <iosfwd>
#include <memory>
#include <new>
#include <optional>
#include <ostream>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cfs/digest.h"

namespace cfs::erofs {

struct Xattr {
  std::string name;   // full name, e.g. "user.foo" (arbitrary bytes, no NUL)
  std::string value;  // arbitrary bytes
  friend bool operator==(const Xattr&, const Xattr&) = default;
};

struct Inode;

// Shared ownership of an Inode (a hardlinked inode is held by several Dirents), one pointer
// wide: the count sits in the inode's own allocation, with no control block and no second
// pointer as std::shared_ptr has (the tree holds one per entry). Counting is atomic, as
// shared_ptr's is.
class InodePtr {
 public:
  InodePtr() noexcept = default;
  InodePtr(std::nullptr_t) noexcept {}  // NOLINT: implicit, as shared_ptr's
  InodePtr(const InodePtr& other) noexcept : box_(other.box_) { acquire(); }
  InodePtr(InodePtr&& other) noexcept : box_(std::exchange(other.box_, nullptr)) {}
  InodePtr& operator=(const InodePtr& other) noexcept {
    InodePtr(other).swap(*this);
    return *this;
  }
  InodePtr& operator=(InodePtr&& other) noexcept {
    InodePtr(std::move(other)).swap(*this);
    return *this;
  }
  ~InodePtr() { release(); }

  inline Inode* get() const noexcept;
  Inode& operator*() const noexcept { return *get(); }
  Inode* operator->() const noexcept { return get(); }
  explicit operator bool() const noexcept { return box_ != nullptr; }
  // How many InodePtrs share the inode (1: not a hardlink); 0 for a null pointer.
  inline long use_count() const noexcept;
  void reset() noexcept { InodePtr().swap(*this); }
  void swap(InodePtr& other) noexcept { std::swap(box_, other.box_); }

  friend bool operator==(const InodePtr& a, const InodePtr& b) noexcept { return a.box_ == b.box_; }
  friend bool operator==(const InodePtr& a, std::nullptr_t) noexcept { return !a.box_; }

 private:
  struct Box;
  friend InodePtr make_inode(uint32_t mode);
  explicit InodePtr(Box* box) noexcept : box_(box) {}
  inline void acquire() const noexcept;
  inline void release() noexcept;
  Box* box_ = nullptr;
};

// Inline content of a regular file left in the dumpfile the tree was parsed from (see
// DumpfileParseOptions::reference_content) instead of being copied into memory: the byte
// range of its escaped CONTENT field. Unescaped, it is Inode::size bytes. length 0: none.
// Offsets below 2^47 (InlineContent keeps a tag bit beside them), escaped lengths below 2^16
// (inline content is at most kInlineContentMax bytes, 4 escaped characters each).
struct ContentRef {
  static constexpr uint64_t kMaxOffset = (uint64_t{1} << 47) - 1;
  static constexpr uint32_t kMaxLength = UINT16_MAX;
  uint64_t offset : 48 = 0;
  uint64_t length : 16 = 0;
};
static_assert(sizeof(ContentRef) == 8);

// A regular file's inline content, one word wide (the tree holds one per entry, and most
// have none): nothing, the bytes held in memory, or a ContentRef into the tree's
// content_source. For the bytes held in memory it has the interface of
// std::optional<std::string> (which Inode::content was): operator bool, * and -> see only
// those. Copies are deep.
class InlineContent {
 public:
  InlineContent() = default;
  InlineContent(std::nullopt_t) noexcept {}  // NOLINT: implicit, as optional's
  InlineContent(std::string bytes) {         // NOLINT
    hold(std::make_unique<std::string>(std::move(bytes)));
  }
  InlineContent(const char* bytes) : InlineContent(std::string(bytes)) {}  // NOLINT
  InlineContent(std::optional<std::string> bytes) {                        // NOLINT
    if (bytes) hold(std::make_unique<std::string>(std::move(*bytes)));
  }
  InlineContent(const InlineContent& other) { copy_from(other); }
  InlineContent(InlineContent&& other) noexcept : word_(std::exchange(other.word_, 0)) {}
  InlineContent& operator=(const InlineContent& other) {
    if (this != &other) {
      reset();
      copy_from(other);
    }
    return *this;
  }
  InlineContent& operator=(InlineContent&& other) noexcept {
    if (this != &other) {
      reset();
      word_ = std::exchange(other.word_, 0);
    }
    return *this;
  }
  ~InlineContent() { reset(); }

  explicit operator bool() const noexcept { return bytes() != nullptr; }
  bool has_value() const noexcept { return bytes() != nullptr; }
  // Precondition, as for optional: has_value().
  std::string& operator*() noexcept { return *bytes(); }
  const std::string& operator*() const noexcept { return *bytes(); }
  std::string* operator->() noexcept { return bytes(); }
  const std::string* operator->() const noexcept { return bytes(); }
  template <typename... Args>
  std::string& emplace(Args&&... args) {
    hold(std::make_unique<std::string>(std::forward<Args>(args)...));
    return *bytes();
  }
  // Drops the bytes or the reference.
  void reset() noexcept {
    std::unique_ptr<std::string> owned(bytes());
    word_ = 0;
  }

  // Where the content sits in the tree's content_source; length 0 when it is not there.
  ContentRef ref() const noexcept {
    if (!(word_ & kRefTag)) return {};
    ContentRef r;
    r.offset = word_ >> 17;
    r.length = (word_ >> 1) & 0xffff;
    return r;
  }
  // Replaces the bytes or reference; a length of 0 leaves nothing. Precondition:
  // ref.offset <= ContentRef::kMaxOffset.
  void set_ref(ContentRef r) noexcept {
    reset();
    if (r.length > 0) word_ = uint64_t{r.offset} << 17 | uint64_t{r.length} << 1 | kRefTag;
  }
  // Bytes held or a reference.
  bool present() const noexcept { return word_ != 0; }

  friend bool operator==(const InlineContent& a, const InlineContent& b) {
    if (a.bytes() && b.bytes()) return *a.bytes() == *b.bytes();
    return a.word_ == b.word_;
  }
  friend bool operator==(const InlineContent& a, std::string_view b) {
    return a.bytes() && *a.bytes() == b;
  }
  friend bool operator==(const InlineContent& a, const std::string& b) {
    return a == std::string_view(b);
  }
  friend bool operator==(const InlineContent& a, const char* b) { return a == std::string_view(b); }
  friend bool operator==(const InlineContent& a, std::nullopt_t) noexcept { return !a.bytes(); }

 private:
  // Bit 0 tells a reference (offset << 17 | length << 1 | 1) from a std::string*, whose
  // alignment keeps that bit clear.
  static constexpr uint64_t kRefTag = 1;
  static_assert(alignof(std::string) > 1);

  std::string* bytes() const noexcept {
    return word_ & kRefTag ? nullptr : reinterpret_cast<std::string*>(word_);
  }
  void hold(std::unique_ptr<std::string> bytes) noexcept {
    reset();
    word_ = reinterpret_cast<uint64_t>(bytes.release());
  }
  void copy_from(const InlineContent& other) {
    if (const std::string* b = other.bytes())
      hold(std::make_unique<std::string>(*b));
    else
      word_ = other.word_;
  }
  uint64_t word_ = 0;
};
static_assert(sizeof(InlineContent) == 8);

// The read-only std::string interface the tree's users need, for the compact strings below
// (InodeString, DirentName): everything derives from Derived::view().
template <typename Derived>
class StringLike {
 public:
  operator std::string_view() const noexcept { return v(); }  // NOLINT: implicit, as string's
  explicit operator std::string() const { return str(); }
  std::string str() const { return std::string(v()); }
  size_t size() const noexcept { return v().size(); }
  size_t length() const noexcept { return size(); }
  const char* data() const noexcept { return v().data(); }
  auto begin() const noexcept { return v().begin(); }
  auto end() const noexcept { return v().end(); }
  char operator[](size_t i) const noexcept { return v()[i]; }
  size_t find(char c, size_t pos = 0) const noexcept { return v().find(c, pos); }
  size_t find(std::string_view s, size_t pos = 0) const noexcept { return v().find(s, pos); }
  bool starts_with(std::string_view s) const noexcept { return v().starts_with(s); }
  bool starts_with(char c) const noexcept { return v().starts_with(c); }
  bool ends_with(std::string_view s) const noexcept { return v().ends_with(s); }
  size_t find_first_of(std::string_view s, size_t pos = 0) const noexcept {
    return v().find_first_of(s, pos);
  }
  size_t rfind(char c, size_t pos = std::string_view::npos) const noexcept {
    return v().rfind(c, pos);
  }
  std::string_view substr(size_t pos, size_t n = std::string_view::npos) const {
    return v().substr(pos, n);
  }
  int compare(std::string_view s) const noexcept { return v().compare(s); }

  friend bool operator==(const Derived& a, const Derived& b) noexcept {
    return a.view() == b.view();
  }
  friend bool operator==(const Derived& a, std::string_view b) noexcept { return a.view() == b; }
  friend bool operator==(const Derived& a, const std::string& b) noexcept {
    return a.view() == std::string_view(b);
  }
  friend bool operator==(const Derived& a, const char* b) noexcept {
    return a.view() == std::string_view(b);
  }
  friend auto operator<=>(const Derived& a, const Derived& b) noexcept {
    return a.view() <=> b.view();
  }
  friend auto operator<=>(const Derived& a, std::string_view b) noexcept { return a.view() <=> b; }
  friend auto operator<=>(const Derived& a, const std::string& b) noexcept {
    return a.view() <=> std::string_view(b);
  }
  friend auto operator<=>(const Derived& a, const char* b) noexcept {
    return a.view() <=> std::string_view(b);
  }
  friend std::string operator+(std::string_view a, const Derived& b) {
    std::string out(a);
    out += b.view();
    return out;
  }
  friend std::string operator+(const Derived& a, std::string_view b) {
    std::string out(a.view());
    out += b;
    return out;
  }
  friend std::string operator+(const char* a, const Derived& b) { return std::string_view(a) + b; }
  friend std::string operator+(const std::string& a, const Derived& b) {
    return std::string_view(a) + b;
  }
  friend std::string operator+(const Derived& a, const char* b) { return a + std::string_view(b); }
  friend std::string operator+(const Derived& a, const std::string& b) {
    return a + std::string_view(b);
  }
  friend std::string operator+(const Derived& a, char b) {
    std::string out(a.view());
    out += b;
    return out;
  }
  friend std::string& operator+=(std::string& a, const Derived& b) { return a += b.view(); }
  friend std::ostream& operator<<(std::ostream& out, const Derived& s) { return out << s.view(); }

 private:
  std::string_view v() const noexcept { return static_cast<const Derived&>(*this).view(); }
};

// Inode::payload: a byte string with the interface of the std::string it was (as far as the
// tree's users need it), one pointer wide: empty is a null pointer, anything else one heap
// block holding the length and the bytes (the tree holds one per entry, most of them empty).
class InodeString : public StringLike<InodeString> {
 public:
  InodeString() = default;
  InodeString(std::string_view bytes) { assign(bytes); }  // NOLINT: implicit, as string's
  InodeString(const std::string& bytes) : InodeString(std::string_view(bytes)) {}  // NOLINT
  InodeString(const char* bytes) : InodeString(std::string_view(bytes)) {}         // NOLINT
  InodeString(const InodeString& other) : InodeString(other.view()) {}
  InodeString(InodeString&&) noexcept = default;
  InodeString& operator=(const InodeString& other) {
    if (this != &other) assign(other.view());
    return *this;
  }
  InodeString& operator=(InodeString&&) noexcept = default;
  InodeString& operator=(std::string_view bytes) {
    assign(bytes);
    return *this;
  }
  InodeString& operator=(const std::string& bytes) { return *this = std::string_view(bytes); }
  InodeString& operator=(const char* bytes) { return *this = std::string_view(bytes); }

  std::string_view view() const noexcept {
    if (!block_) return {};
    uint32_t n;
    std::memcpy(&n, block_.get(), sizeof n);
    return {block_.get() + sizeof n, n};
  }
  bool empty() const noexcept { return !block_; }
  // NUL-terminated, as std::string's.
  const char* c_str() const noexcept { return block_ ? block_.get() + sizeof(uint32_t) : ""; }
  void clear() noexcept { block_.reset(); }

 private:
  void assign(std::string_view bytes) {
    if (bytes.empty()) {
      block_.reset();
      return;
    }
    if (bytes.size() > UINT32_MAX) throw std::length_error("InodeString: too long");
    auto block = std::make_unique_for_overwrite<char[]>(sizeof(uint32_t) + bytes.size() + 1);
    const auto n = static_cast<uint32_t>(bytes.size());
    std::memcpy(block.get(), &n, sizeof n);
    std::memcpy(block.get() + sizeof n, bytes.data(), bytes.size());
    block[sizeof n + bytes.size()] = '\0';
    block_ = std::move(block);
  }
  std::unique_ptr<char[]> block_;
};

// An external regular file's fs-verity digest: the interface of std::optional<Digest> (which
// Inode::digest was), one pointer wide. Most entries have none, and one that has it keeps
// only the algorithm and the digest's own bytes on the heap (33 bytes for SHA-256 rather
// than Digest's 65). Dereferencing yields a Digest by value; copies are deep.
class InodeDigest {
 public:
  InodeDigest() = default;
  InodeDigest(std::nullopt_t) noexcept {}             // NOLINT: implicit, as optional's
  InodeDigest(const Digest& digest) { set(digest); }  // NOLINT
  InodeDigest(const std::optional<Digest>& digest) {  // NOLINT
    if (digest) set(*digest);
  }
  InodeDigest(const InodeDigest& other) {
    if (other) set(*other);
  }
  InodeDigest(InodeDigest&&) noexcept = default;
  InodeDigest& operator=(const InodeDigest& other) {
    if (this != &other) {
      if (other)
        set(*other);
      else
        bytes_.reset();
    }
    return *this;
  }
  InodeDigest& operator=(InodeDigest&&) noexcept = default;

  explicit operator bool() const noexcept { return bytes_ != nullptr; }
  bool has_value() const noexcept { return bytes_ != nullptr; }
  // Precondition, as for optional: has_value().
  Digest operator*() const { return Digest(algorithm(), bytes()); }
  Digest value() const { return **this; }
  // The algorithm and the digest's bytes, held by this object (unlike a dereferenced Digest,
  // which is a copy): views of them stay valid as long as the digest is not reassigned.
  // Precondition: has_value().
  HashAlgorithm algorithm() const noexcept { return static_cast<HashAlgorithm>(bytes_[0]); }
  std::span<const uint8_t> bytes() const noexcept {
    return {bytes_.get() + 1, digest_size(algorithm())};
  }
  // `digest->hex()`: the Digest lives in the returned proxy for the full expression.
  struct Arrow {
    Digest digest;
    const Digest* operator->() const noexcept { return &digest; }
  };
  Arrow operator->() const { return {**this}; }
  operator std::optional<Digest>() const {  // NOLINT: implicit, for optional<Digest> users
    if (!bytes_) return std::nullopt;
    return **this;
  }
  void reset() noexcept { bytes_.reset(); }

  friend bool operator==(const InodeDigest& a, const InodeDigest& b) {
    return a ? b && *a == *b : !b;
  }
  friend bool operator==(const InodeDigest& a, const Digest& b) { return a && *a == b; }
  friend bool operator==(const InodeDigest& a, const std::optional<Digest>& b) {
    return a ? b && *a == *b : !b;
  }
  friend bool operator==(const InodeDigest& a, std::nullopt_t) noexcept { return !a; }

 private:
  void set(const Digest& digest) {
    auto bytes = std::make_unique_for_overwrite<uint8_t[]>(1 + digest.size());
    bytes[0] = static_cast<uint8_t>(digest.algorithm());
    std::copy(digest.bytes().begin(), digest.bytes().end(), bytes.get() + 1);
    bytes_ = std::move(bytes);
  }
  std::unique_ptr<uint8_t[]> bytes_;
};

// A vector one pointer wide (Inode::xattrs, Inode::children): empty is a null pointer,
// anything else one heap block holding size, capacity and the elements. The tree holds two
// per entry and most of them are empty. The interface is std::vector's, as far as the tree's
// users need it; iterators are pointers, copies are deep.
template <typename T>
class CompactVector {
  static_assert(alignof(T) <= alignof(std::max_align_t));
  struct Header {
    uint32_t size;
    uint32_t capacity;
  };
  static constexpr size_t kOffset = (sizeof(Header) + alignof(T) - 1) / alignof(T) * alignof(T);

 public:
  using value_type = T;
  using size_type = size_t;
  using difference_type = std::ptrdiff_t;
  using reference = T&;
  using const_reference = const T&;
  using pointer = T*;
  using const_pointer = const T*;
  using iterator = T*;
  using const_iterator = const T*;

  CompactVector() = default;
  CompactVector(std::initializer_list<T> items) {
    reserve(items.size());
    for (const T& item : items) push_back(item);
  }
  CompactVector(std::vector<T>&& items) {  // NOLINT: implicit, from the vector it was
    reserve(items.size());
    for (T& item : items) push_back(std::move(item));
  }
  CompactVector(const std::vector<T>& items) {  // NOLINT
    reserve(items.size());
    for (const T& item : items) push_back(item);
  }
  CompactVector(const CompactVector& other) {
    reserve(other.size());
    for (const T& item : other) push_back(item);
  }
  CompactVector(CompactVector&& other) noexcept : block_(std::exchange(other.block_, nullptr)) {}
  CompactVector& operator=(const CompactVector& other) {
    if (this != &other) {
      CompactVector copy(other);
      swap(copy);
    }
    return *this;
  }
  CompactVector& operator=(CompactVector&& other) noexcept {
    if (this != &other) {
      CompactVector gone(std::move(*this));
      swap(other);
    }
    return *this;
  }
  CompactVector& operator=(std::vector<T>&& items) {
    return *this = CompactVector(std::move(items));
  }
  CompactVector& operator=(const std::vector<T>& items) { return *this = CompactVector(items); }
  ~CompactVector() {
    if (!block_) return;
    std::destroy(begin(), end());
    ::operator delete(block_);
  }
  void swap(CompactVector& other) noexcept { std::swap(block_, other.block_); }

  size_t size() const noexcept { return block_ ? header()->size : 0; }
  size_t capacity() const noexcept { return block_ ? header()->capacity : 0; }
  bool empty() const noexcept { return size() == 0; }
  T* data() noexcept {
    return block_ ? std::launder(reinterpret_cast<T*>(block_ + kOffset)) : nullptr;
  }
  const T* data() const noexcept {
    return block_ ? std::launder(reinterpret_cast<const T*>(block_ + kOffset)) : nullptr;
  }
  T* begin() noexcept { return data(); }
  T* end() noexcept { return data() + size(); }
  const T* begin() const noexcept { return data(); }
  const T* end() const noexcept { return data() + size(); }
  const T* cbegin() const noexcept { return begin(); }
  const T* cend() const noexcept { return end(); }
  T& operator[](size_t i) noexcept { return data()[i]; }
  const T& operator[](size_t i) const noexcept { return data()[i]; }
  T& front() noexcept { return *begin(); }
  const T& front() const noexcept { return *begin(); }
  T& back() noexcept { return end()[-1]; }
  const T& back() const noexcept { return end()[-1]; }

  void reserve(size_t n) {
    if (n <= capacity()) return;
    if (n > UINT32_MAX) throw std::length_error("CompactVector: too many elements");
    auto* block = static_cast<std::byte*>(::operator new(kOffset + n * sizeof(T)));
    auto* items = reinterpret_cast<T*>(block + kOffset);
    const size_t count = size();
    if (block_) {
      std::uninitialized_move(begin(), end(), items);
      std::destroy(begin(), end());
      ::operator delete(block_);
    }
    block_ = block;
    *header() = {static_cast<uint32_t>(count), static_cast<uint32_t>(n)};
  }
  template <typename... Args>
  T& emplace_back(Args&&... args) {
    if (size() == capacity()) {
      // Built from a value first: args may refer to an element that growing moves.
      T value(std::forward<Args>(args)...);
      grow();
      return append(std::move(value));
    }
    return append(std::forward<Args>(args)...);
  }
  void push_back(const T& value) { emplace_back(value); }
  void push_back(T&& value) { emplace_back(std::move(value)); }
  void pop_back() noexcept {
    std::destroy_at(end() - 1);
    --header()->size;
  }
  T* insert(const T* pos, T value) {
    const size_t i = static_cast<size_t>(pos - begin());
    emplace_back(std::move(value));
    std::rotate(begin() + i, end() - 1, end());
    return begin() + i;
  }
  T* erase(const T* first, const T* last) {
    T* out = begin() + (first - begin());
    const size_t n = static_cast<size_t>(last - first);
    if (n == 0) return out;
    std::move(out + n, end(), out);
    std::destroy(end() - n, end());
    header()->size -= static_cast<uint32_t>(n);
    return out;
  }
  T* erase(const T* pos) { return erase(pos, pos + 1); }
  void resize(size_t n) {
    while (size() > n) pop_back();
    reserve(n);
    while (size() < n) emplace_back();
  }
  // Destroys the elements and keeps the capacity, as std::vector's.
  void clear() noexcept {
    if (!block_) return;
    std::destroy(begin(), end());
    header()->size = 0;
  }

  // Removes the elements pred accepts (std::erase_if's meaning); returns how many.
  template <typename Pred>
  friend size_t erase_if(CompactVector& v, Pred pred) {
    T* kept = std::remove_if(v.begin(), v.end(), pred);
    const auto n = static_cast<size_t>(v.end() - kept);
    v.erase(kept, v.end());
    return n;
  }

  friend bool operator==(const CompactVector& a, const CompactVector& b) {
    return std::equal(a.begin(), a.end(), b.begin(), b.end());
  }

 private:
  Header* header() const noexcept { return reinterpret_cast<Header*>(block_); }
  template <typename... Args>
  T& append(Args&&... args) {
    T* item = std::construct_at(end(), std::forward<Args>(args)...);
    ++header()->size;
    return *item;
  }
  void grow() {
    const size_t n = capacity();
    reserve(n < 4 ? n + 1 : n + n / 2);
  }
  std::byte* block_ = nullptr;
};

// Dirent::name: a byte string with the interface of the std::string it was (as far as the
// tree's users need it) in 15 bytes, so that a Dirent is 24: names up to 14 bytes are held
// inline (most are), longer ones in one heap block. Copies are deep.
class DirentName : public StringLike<DirentName> {
 public:
  static constexpr size_t kInlineMax = 14;

  DirentName() noexcept { bytes_[kTag] = 0; }
  DirentName(std::string_view name) { set(name); }  // NOLINT: implicit, as string's
  DirentName(const std::string& name) : DirentName(std::string_view(name)) {}  // NOLINT
  DirentName(const char* name) : DirentName(std::string_view(name)) {}         // NOLINT
  DirentName(const DirentName& other) : DirentName(other.view()) {}
  DirentName(DirentName&& other) noexcept {
    std::memcpy(bytes_, other.bytes_, sizeof bytes_);
    other.bytes_[kTag] = 0;
  }
  DirentName& operator=(const DirentName& other) {
    if (this != &other) *this = DirentName(other);
    return *this;
  }
  DirentName& operator=(DirentName&& other) noexcept {
    if (this != &other) {
      release();
      std::memcpy(bytes_, other.bytes_, sizeof bytes_);
      other.bytes_[kTag] = 0;
    }
    return *this;
  }
  DirentName& operator=(std::string_view name) { return *this = DirentName(name); }
  DirentName& operator=(const std::string& name) { return *this = std::string_view(name); }
  DirentName& operator=(const char* name) { return *this = std::string_view(name); }
  ~DirentName() { release(); }

  std::string_view view() const noexcept {
    if (!heap()) return {reinterpret_cast<const char*>(bytes_), bytes_[kTag]};
    return {heap_pointer(), heap_length()};
  }
  bool empty() const noexcept { return size() == 0; }

 private:
  // bytes_[kTag]: the inline length (0..kInlineMax), or kHeap with the heap block's address
  // in bytes_[0..7] and the length in bytes_[8..11].
  static constexpr size_t kTag = kInlineMax;
  static constexpr uint8_t kHeap = 0xff;
  bool heap() const noexcept { return bytes_[kTag] == kHeap; }
  char* heap_pointer() const noexcept {
    char* p;
    std::memcpy(&p, bytes_, sizeof p);
    return p;
  }
  uint32_t heap_length() const noexcept {
    uint32_t n;
    std::memcpy(&n, bytes_ + sizeof(char*), sizeof n);
    return n;
  }
  void set(std::string_view name) {
    if (name.size() <= kInlineMax) {
      std::memcpy(bytes_, name.data(), name.size());
      bytes_[kTag] = static_cast<uint8_t>(name.size());
      return;
    }
    if (name.size() > UINT32_MAX) throw std::length_error("DirentName: too long");
    auto block = std::make_unique_for_overwrite<char[]>(name.size());
    std::memcpy(block.get(), name.data(), name.size());
    char* p = block.release();
    const auto n = static_cast<uint32_t>(name.size());
    std::memcpy(bytes_, &p, sizeof p);
    std::memcpy(bytes_ + sizeof p, &n, sizeof n);
    bytes_[kTag] = kHeap;
  }
  void release() noexcept {
    if (heap()) std::unique_ptr<char[]>(heap_pointer()).reset();
    bytes_[kTag] = 0;
  }
  uint8_t bytes_[kInlineMax + 1];
};
static_assert(sizeof(DirentName) == 15 && alignof(DirentName) == 1);

// Reads back the content a tree references (Tree::content_source).
class ContentSource {
 public:
  virtual ~ContentSource() = default;
  // Replaces out with the size bytes of ref; throws cfs::Error if the source changed.
  virtual void read(const ContentRef& ref, uint64_t size, std::string& out) const = 0;
};

struct Dirent {
  Dirent() = default;
  Dirent(DirentName name, InodePtr inode, bool link = false) noexcept
      : name(std::move(name)), link(link), inode(std::move(inode)) {}

  DirentName name;
  // A further name of a hardlinked inode whose home is another dirent (a dumpfile '@' line).
  // C mkcomposefs places the inode at its target's dirent, not at its first name in sorted
  // order, so the writer needs to know which one that is. Trees without marks (directory
  // scans, images) place a hardlinked inode at its first name in DFS order.
  bool link = false;
  InodePtr inode;
};
static_assert(sizeof(Dirent) == 24, "the tree holds one Dirent per entry");

struct Inode {
  uint32_t mode = 0;   // st_mode: file type bits + permissions
  uint32_t nlink = 1;  // stored as given for non-directories; directories are recomputed
  uint32_t uid = 0;
  uint32_t gid = 0;
  // Character/block devices only. 32 bits, as C's lcfs_inode_s and EROFS keep it: a 64-bit
  // device number is truncated where it enters the tree, so a device whose low 32 bits are
  // zero is a whiteout everywhere (escaped by the writer), exactly as C mkcomposefs sees it.
  uint32_t rdev = 0;
  uint32_t mtime_nsec = 0;
  int64_t mtime_sec = 0;  // signed: before 1970 is negative, as in struct timespec
  uint64_t size = 0;      // regular files: data size; symlinks: target length; directories: unused
  // Symlink target, or for externally stored regular files the backing path relative to
  // the object directory ("ab/cdef…"). Empty otherwise.
  InodeString payload;
  // Regular files stored inline in the image: the bytes, or where they sit in the tree's
  // content_source (content.ref().length > 0; *content is then absent). See has_content().
  InlineContent content;
  CompactVector<Xattr> xattrs;     // kept sorted by name (see sort_xattrs)
  CompactVector<Dirent> children;  // directories only; sorted by name
  // fs-verity digest of an external regular file's data (goes into the metacopy xattr).
  InodeDigest digest;

  uint32_t type() const noexcept { return mode & S_IFMT; }
  bool is_dir() const noexcept { return type() == S_IFDIR; }
  bool is_reg() const noexcept { return type() == S_IFREG; }
  bool is_symlink() const noexcept { return type() == S_IFLNK; }
  bool is_device() const noexcept { return type() == S_IFCHR || type() == S_IFBLK; }
  // An overlay whiteout in the source tree: a character device with rdev 0.
  bool is_whiteout() const noexcept { return type() == S_IFCHR && rdev == 0; }
  // A regular file whose data lives outside the image (in the object store).
  bool is_external() const noexcept { return is_reg() && !has_content() && size > 0; }
  // Whether a regular file's data is inline (held in content or referenced by it).
  bool has_content() const noexcept { return content.present(); }

  // Child lookup by name (binary search), nullptr if absent.
  Inode* find(std::string_view name) const;
  // Insert or replace the child called name, keeping children sorted. Returns the inode.
  const InodePtr& set_child(std::string name, InodePtr inode);
  // Remove a child; returns false if absent.
  bool remove_child(std::string_view name);

  const Xattr* find_xattr(std::string_view name) const;
  // Set (replace) an xattr, keeping xattrs sorted.
  void set_xattr(std::string name, std::string value);
  bool remove_xattr(std::string_view name);
  void sort_xattrs();
};

struct InodePtr::Box {
  std::atomic<uint32_t> count{1};
  Inode inode;
};
Inode* InodePtr::get() const noexcept {
  return box_ ? &box_->inode : nullptr;
}
long InodePtr::use_count() const noexcept {
  return box_ ? box_->count.load(std::memory_order_relaxed) : 0;
}
void InodePtr::acquire() const noexcept {
  if (box_) box_->count.fetch_add(1, std::memory_order_relaxed);
}
void InodePtr::release() noexcept {
  if (box_ && box_->count.fetch_sub(1, std::memory_order_acq_rel) == 1)
    std::unique_ptr<Box> last(box_);
  box_ = nullptr;
}

InodePtr make_inode(uint32_t mode);

// A whole filesystem tree; root is always a directory.
struct Tree {
  InodePtr root = make_inode(S_IFDIR | 0755);
  // Where inodes' content_ref point; null when every inline content is held in memory.
  std::shared_ptr<const ContentSource> content_source;

  // A regular file's inline content: *inode.content, or read from content_source into buf.
  std::string_view inline_content(const Inode& inode, std::string& buf) const;

  // Resolve an absolute path ("/", "/a/b"); nullptr if any component is missing.
  Inode* lookup(std::string_view path) const;
};

// Depth-first pre-order walk over sorted children (the dumpfile order).
struct WalkEntry {
  const std::string& path;  // absolute, "/" for the root
  const Inode& inode;
  bool first_visit;   // false for the second and later dirents of a hardlinked inode
  bool shared;        // the inode is referenced by more than one dirent (a hardlink)
  bool link = false;  // the dirent is marked as a further name (Dirent::link)
};
using WalkFn = std::function<void(const WalkEntry&)>;
void walk(const Tree& tree, const WalkFn& fn);

// Directory nlink as composefs computes it: 2 + number of subdirectories.
uint32_t directory_nlink(const Inode& dir);

}  // namespace cfs::erofs
