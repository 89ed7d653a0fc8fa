#include "stagefarm/common/file_mode.h"

namespace stagefarm {
namespace {

constexpr uint32_t kUser = 04700, kGroup = 02070, kOther = 00007, kSticky = 01000;

// The bits of class `c` ('u', 'g', 'o') of `mode`, spread to all three classes.
uint32_t ClassBits(uint32_t mode, char c) {
  uint32_t rwx = c == 'u' ? (mode >> 6) & 7 : c == 'g' ? (mode >> 3) & 7 : mode & 7;
  return rwx * 0111;
}

}  // namespace

StatusOr<FileModeChange> FileModeChange::Parse(std::string_view text) {
  FileModeChange change;
  const std::string shown(text);
  if (!text.empty() && text.find_first_not_of("0123456789") == std::string_view::npos) {
    uint64_t v = 0;
    bool octal = text.size() <= 12;
    for (char c : text) {
      octal = octal && c <= '7';
      v = v * 8 + static_cast<uint64_t>(c - '0');
    }
    if (!octal || v > 07777) {
      return InvalidArgumentError("invalid chmod parameter: '" + shown +
                                  "'. it should be octal string and between 0 and 07777");
    }
    change.octal_ = static_cast<uint32_t>(v);
    return change;
  }
  auto bad = [&] { return InvalidArgumentError("invalid chmod parameter: '" + shown + "'"); };
  // clause := [ugoa]* (op perms)+ ; perms := [rwxXst]* | one of u g o
  size_t i = 0;
  while (true) {
    uint32_t who = 0;
    for (; i < text.size() && std::string_view("ugoa").find(text[i]) != std::string_view::npos;
         ++i) {
      who |= text[i] == 'u'   ? kUser
             : text[i] == 'g' ? kGroup
             : text[i] == 'o' ? kOther
                              : kUser | kGroup | kOther | kSticky;
    }
    if (who == 0) who = kUser | kGroup | kOther | kSticky;
    if (i == text.size() || std::string_view("+-=").find(text[i]) == std::string_view::npos) {
      return bad();
    }
    while (i < text.size() && std::string_view("+-=").find(text[i]) != std::string_view::npos) {
      Clause c;
      c.who = who;
      c.op = text[i++];
      if (i < text.size() && std::string_view("ugo").find(text[i]) != std::string_view::npos) {
        c.copy_from = text[i++];
      } else {
        for (;
             i < text.size() && std::string_view("rwxXst").find(text[i]) != std::string_view::npos;
             ++i) {
          switch (text[i]) {
            case 'r':
              c.bits |= 0444;
              break;
            case 'w':
              c.bits |= 0222;
              break;
            case 'x':
              c.bits |= 0111;
              break;
            case 'X':
              c.exec_if_dir_or_exec = true;
              break;
            case 's':
              c.bits |= 06000;
              break;
            case 't':
              c.bits |= kSticky;
              break;
          }
        }
      }
      change.clauses_.push_back(c);
    }
    if (i == text.size()) break;
    if (text[i] != ',' || ++i == text.size()) return bad();
  }
  return change;
}

uint32_t FileModeChange::Apply(uint32_t mode, bool is_dir) const {
  if (clauses_.empty()) return octal_;
  mode &= 07777;
  for (const Clause& c : clauses_) {
    uint32_t bits = c.copy_from ? ClassBits(mode, c.copy_from) : c.bits;
    if (c.exec_if_dir_or_exec && (is_dir || (mode & 0111) != 0)) bits |= 0111;
    bits &= c.who;
    if (c.op == '+') {
      mode |= bits;
    } else if (c.op == '-') {
      mode &= ~bits;
    } else {
      mode = (mode & ~c.who) | bits;
    }
  }
  return mode;
}

}  // namespace stagefarm
