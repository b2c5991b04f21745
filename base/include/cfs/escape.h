// Strings that come from images, layers, registries or repository directories (file names,
// tar paths, redirects, tags, xattr names, os-release fields) are untrusted: written raw to a
// terminal or syslog they can carry escape sequences, fake log lines or bytes that break
// UTF-8 consumers. Every error or log message that embeds one goes through escape_for_log.
#pragma once

#include <string>
#include <string_view>

namespace cfs {

// s with every byte that could mislead a reader written as \xNN: C0 controls, DEL, the
// backslash itself (so the escaping is unambiguous), bytes that are not part of well-formed
// UTF-8, and the UTF-8 encodings of the C1 controls (U+0080..U+009F, which some terminals
// obey). Printable ASCII and other well-formed UTF-8 pass unchanged.
std::string escape_for_log(std::string_view s);

// Whether s is well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF).
bool is_valid_utf8(std::string_view s);

// Whether s holds a C0 control, DEL or a C1 control (as UTF-8, or as a raw byte 0x80..0x9f).
bool has_control_chars(std::string_view s);

}  // namespace cfs
