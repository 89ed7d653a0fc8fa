// Small UTF-8 helpers shared by the Dockerfile parser and the shell lexer. They follow Go's
// unicode package where the frontend's behaviour depends on it (white space, letters).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace stagefarm::frontend::internal {

// The multi-byte cases of the inline functions below (ASCII is handled inline: it is nearly all
// of a Dockerfile).
char32_t DecodeRuneSlow(std::string_view s, size_t pos, size_t* width);
void AppendRuneSlow(std::string* out, char32_t r);
bool IsSpaceRuneSlow(char32_t r);

// Decodes UTF-8; an invalid byte becomes U+FFFD and advances one byte (as Go does).
// `*width` receives the number of bytes consumed.
inline char32_t DecodeRune(std::string_view s, size_t pos, size_t* width) {
  unsigned char c = static_cast<unsigned char>(s[pos]);
  if (c < 0x80) {
    *width = 1;
    return c;
  }
  return DecodeRuneSlow(s, pos, width);
}
std::vector<char32_t> DecodeAll(std::string_view s);
inline void AppendRune(std::string* out, char32_t r) {
  if (r < 0x80) {
    out->push_back(static_cast<char>(r));
  } else {
    AppendRuneSlow(out, r);
  }
}

// Go's unicode.IsSpace.
inline bool IsSpaceRune(char32_t r) {
  if (r < 0x80) return r == ' ' || (r >= '\t' && r <= '\r');
  return IsSpaceRuneSlow(r);
}
// Go's unicode.IsSpace applied to a single byte taken as a Latin-1 rune (BuildKit's flag
// splitter and HEALTHCHECK splitter look at bytes, not runes).
inline bool IsSpaceByte(unsigned char c) {
  return c == ' ' || (c >= '\t' && c <= '\r') || c == 0x85 || c == 0xA0;
}
// Go's unicode.IsLetter, approximated outside Latin-1: code points of letter-bearing blocks count
// as letters, punctuation and symbol blocks do not.
bool IsLetterRune(char32_t r);
inline bool IsDigitRune(char32_t r) { return r >= '0' && r <= '9'; }

// strings.TrimSpace (Unicode white space at both ends).
std::string_view TrimSpace(std::string_view s);
std::string ToLower(std::string_view s);
std::string ToUpper(std::string_view s);

// strconv.Quote: a double-quoted string with Go's escapes, printable non-ASCII kept.
std::string GoQuote(std::string_view s);
// strconv.QuoteRune, as fmt's %q prints an integer: 'A', '\x02', '\''; a value that is no
// Unicode code point (a surrogate, above U+10FFFF, negative) prints as U+FFFD.
std::string GoQuoteRune(int64_t r);

}  // namespace stagefarm::frontend::internal
