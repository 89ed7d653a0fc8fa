#include "frontend/unicode_util.h"

#include <cstdio>

namespace stagefarm::frontend::internal {

char32_t DecodeRuneSlow(std::string_view s, size_t pos, size_t* width) {
  auto byte = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  unsigned char c = byte(pos);
  *width = 1;
  if (c < 0x80) return c;
  int n = 0;
  char32_t r = 0;
  char32_t min = 0;
  if ((c & 0xE0) == 0xC0) {
    n = 1, r = c & 0x1F, min = 0x80;
  } else if ((c & 0xF0) == 0xE0) {
    n = 2, r = c & 0x0F, min = 0x800;
  } else if ((c & 0xF8) == 0xF0) {
    n = 3, r = c & 0x07, min = 0x10000;
  } else {
    return 0xFFFD;
  }
  for (int i = 1; i <= n; ++i) {
    if (pos + i >= s.size()) return 0xFFFD;
    unsigned char cc = byte(pos + i);
    if ((cc & 0xC0) != 0x80) return 0xFFFD;
    r = (r << 6) | (cc & 0x3F);
  }
  if (r < min || r > 0x10FFFF || (r >= 0xD800 && r <= 0xDFFF)) return 0xFFFD;
  *width = n + 1;
  return r;
}

std::vector<char32_t> DecodeAll(std::string_view s) {
  std::vector<char32_t> out;
  out.reserve(s.size());
  for (size_t pos = 0; pos < s.size();) {
    size_t w;
    out.push_back(DecodeRune(s, pos, &w));
    pos += w;
  }
  return out;
}

void AppendRuneSlow(std::string* out, char32_t r) {
  if (r < 0x80) {
    out->push_back(static_cast<char>(r));
  } else if (r < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (r >> 6)));
    out->push_back(static_cast<char>(0x80 | (r & 0x3F)));
  } else if (r < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (r >> 12)));
    out->push_back(static_cast<char>(0x80 | ((r >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (r & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (r >> 18)));
    out->push_back(static_cast<char>(0x80 | ((r >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((r >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (r & 0x3F)));
  }
}

bool IsSpaceRuneSlow(char32_t r) {
  switch (r) {
    case ' ':
    case '\t':
    case '\n':
    case '\v':
    case '\f':
    case '\r':
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return r >= 0x2000 && r <= 0x200A;
  }
}

bool IsLetterRune(char32_t r) {
  if (r < 0x80) return (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z');
  if (r == 0xAA || r == 0xB5 || r == 0xBA) return true;
  if (r < 0xC0 || r == 0xD7 || r == 0xF7) return false;
  if (IsSpaceRune(r)) return false;
  if (r >= 0x2000 && r <= 0x2BFF) return false;  // punctuation, symbols, arrows, boxes
  if (r >= 0x3000 && r <= 0x303F) return false;  // CJK punctuation
  if (r >= 0xFF00 && r <= 0xFF20) return false;  // full-width punctuation and digits
  if (r >= 0xFE30 && r <= 0xFE6F) return false;
  if (r >= 0x1F000 && r <= 0x1FAFF) return false;  // emoji and pictographs
  if (r == 0xFFFD) return false;
  return true;
}

std::string_view TrimSpace(std::string_view s) {
  size_t begin = 0;
  while (begin < s.size()) {
    size_t w;
    char32_t r = DecodeRune(s, begin, &w);
    if (!IsSpaceRune(r)) break;
    begin += w;
  }
  size_t end = s.size();
  while (end > begin) {
    // Step back to the start of the last rune.
    size_t start = end - 1;
    while (start > begin && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80 &&
           end - start < 4) {
      --start;
    }
    size_t w;
    char32_t r = DecodeRune(s, start, &w);
    if (start + w != end) {  // not a whole rune: treat the last byte alone
      start = end - 1;
      r = DecodeRune(s, start, &w);
    }
    if (!IsSpaceRune(r)) break;
    end = start;
  }
  return s.substr(begin, end - begin);
}

std::string ToLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string ToUpper(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  return out;
}

std::string GoQuote(std::string_view s) {
  std::string out = "\"";
  char buf[16];
  for (size_t pos = 0; pos < s.size();) {
    size_t w;
    char32_t r = DecodeRune(s, pos, &w);
    if (r == 0xFFFD && w == 1 && !(s.size() >= pos + 3 && s.substr(pos, 3) == "\xEF\xBF\xBD")) {
      std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned char>(s[pos]));
      out += buf;
      pos += 1;
      continue;
    }
    pos += w;
    switch (r) {
      case '"':
        out += "\\\"";
        continue;
      case '\\':
        out += "\\\\";
        continue;
      case '\a':
        out += "\\a";
        continue;
      case '\b':
        out += "\\b";
        continue;
      case '\f':
        out += "\\f";
        continue;
      case '\n':
        out += "\\n";
        continue;
      case '\r':
        out += "\\r";
        continue;
      case '\t':
        out += "\\t";
        continue;
      case '\v':
        out += "\\v";
        continue;
      default:
        break;
    }
    if (r < 0x20 || r == 0x7F) {
      std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned>(r));
      out += buf;
    } else if ((r >= 0x80 && r < 0xA0) || r == 0xAD || r == 0xFEFF ||
               (r >= 0x200B && r <= 0x200F) || (r >= 0x2028 && r <= 0x202E) ||
               (r >= 0x2060 && r <= 0x206F)) {
      if (r < 0x10000) {
        std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(r));
      } else {
        std::snprintf(buf, sizeof buf, "\\U%08x", static_cast<unsigned>(r));
      }
      out += buf;
    } else {
      AppendRune(&out, r);
    }
  }
  out += '"';
  return out;
}

std::string GoQuoteRune(int64_t r) {
  if (r < 0 || r > 0x10FFFF || (r >= 0xD800 && r <= 0xDFFF)) r = 0xFFFD;
  if (r == '\'') return "'\\''";
  if (r == '"') return "'\"'";
  // A rune is quoted as a one-rune string would be, but between single quotes.
  std::string utf8;
  AppendRune(&utf8, static_cast<char32_t>(r));
  std::string quoted = GoQuote(utf8);
  return "'" + quoted.substr(1, quoted.size() - 2) + "'";
}

}  // namespace stagefarm::frontend::internal
