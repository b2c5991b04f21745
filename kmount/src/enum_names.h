// One table per enum for its command-line and report names, so printing and parsing cannot
// disagree (internal).
#pragma once

#include <array>
#include <cstddef>
#include <optional>
#include <string_view>
#include <utility>

namespace cfs::kmount::detail {

template <typename E, size_t N>
struct EnumNames {
  std::array<std::pair<E, std::string_view>, N> entries;

  constexpr std::string_view name(E value) const {
    for (const auto& [e, n] : entries)
      if (e == value) return n;
    return "?";
  }
  constexpr std::optional<E> parse(std::string_view text) const {
    for (const auto& [e, n] : entries)
      if (n == text) return e;
    return std::nullopt;
  }
};

template <typename E, typename... Names>
constexpr auto enum_names(std::pair<E, Names>... entries) {
  return EnumNames<E, sizeof...(Names)>{{std::pair<E, std::string_view>(entries)...}};
}

}  // namespace cfs::kmount::detail
