// libarchive ownership and paths inside archives, shared by the layer writer/extractor and the
// image importer (private to common/src).
#pragma once

#include <archive.h>
#include <archive_entry.h>

#include <memory>
#include <string>
#include <string_view>

namespace stagefarm::archive_util {

struct ArchiveWriteDeleter {
  void operator()(struct archive* a) const { archive_write_free(a); }
};
struct ArchiveReadDeleter {
  void operator()(struct archive* a) const { archive_read_free(a); }
};
struct EntryDeleter {
  void operator()(archive_entry* e) const { archive_entry_free(e); }
};
using ArchiveWritePtr = std::unique_ptr<struct archive, ArchiveWriteDeleter>;
using ArchiveReadPtr = std::unique_ptr<struct archive, ArchiveReadDeleter>;
using EntryPtr = std::unique_ptr<archive_entry, EntryDeleter>;

// libarchive's last error for `a`, or `fallback` when it has none.
inline std::string ArchiveMessage(struct archive* a, const char* fallback) {
  const char* msg = archive_error_string(a);
  return msg ? msg : fallback;
}

// "/a//./b/" -> "a/b". Returns false if a component is "..".
inline bool NormalizeRelative(std::string_view path, std::string* out) {
  out->clear();
  size_t i = 0;
  while (i <= path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    std::string_view comp = path.substr(i, j - i);
    if (comp == "..") return false;
    if (!comp.empty() && comp != ".") {
      if (!out->empty()) out->push_back('/');
      out->append(comp);
    }
    i = j + 1;
  }
  return true;
}

}  // namespace stagefarm::archive_util
