// Helpers for the format tests: temp dirs, small files with chosen metadata, and tars written by
// hand.
#pragma once

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace stagefarm::testing {

// A directory removed with everything in it when the object goes away.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "sf-formats-XXXXXX").string();
    SF_CHECK(::mkdtemp(tmpl.data()) != nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);  // best effort: a leftover temp dir harms nothing
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }

 private:
  std::string path_;
};

inline void WriteFile(const std::string& path, const std::string& content, mode_t mode = 0644) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << content;
  }
  SF_CHECK(::chmod(path.c_str(), mode) == 0);
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void SetMtime(const std::string& path, time_t sec) {
  timespec ts[2] = {{sec, 0}, {sec, 0}};
  SF_CHECK(::utimensat(AT_FDCWD, path.c_str(), ts, AT_SYMLINK_NOFOLLOW) == 0);
}

// Sets every mtime under `dir` (not `dir` itself) to `sec`, children before parents.
inline void SetAllMtimes(const std::string& dir, time_t sec) {
  std::vector<std::string> paths;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    paths.push_back(e.path().string());
  }
  std::sort(paths.rbegin(), paths.rend());
  for (const auto& p : paths) SetMtime(p, sec);
}

// Runs a shell command; returns its exit status.
inline int Shell(const std::string& cmd) {
  int r = std::system(cmd.c_str());
  return WIFEXITED(r) ? WEXITSTATUS(r) : -1;
}

// A tar written by hand, for inputs WriteLayer would never produce.
class TarBuilder {
 public:
  enum Compression { kNone, kGzip, kZstd };
  explicit TarBuilder(const std::string& path, Compression c = kNone) : a_(archive_write_new()) {
    archive_write_set_format_pax_restricted(a_);
    if (c == kGzip) SF_CHECK(archive_write_add_filter_gzip(a_) == ARCHIVE_OK);
    if (c == kZstd) SF_CHECK(archive_write_add_filter_zstd(a_) == ARCHIVE_OK);
    SF_CHECK(archive_write_open_filename(a_, path.c_str()) == ARCHIVE_OK);
  }
  ~TarBuilder() { archive_write_free(a_); }
  void Add(const std::string& name, mode_t type, const std::string& data_or_link = "") {
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, name.c_str());
    archive_entry_set_filetype(e, type);
    archive_entry_set_perm(e, 0644);
    if (type == AE_IFLNK) {
      archive_entry_set_symlink(e, data_or_link.c_str());
    } else if (type == AE_IFREG) {
      archive_entry_set_size(e, static_cast<la_int64_t>(data_or_link.size()));
    }
    SF_CHECK(archive_write_header(a_, e) == ARCHIVE_OK);
    if (type == AE_IFREG) archive_write_data(a_, data_or_link.data(), data_or_link.size());
    archive_entry_free(e);
  }
  void AddHardlink(const std::string& name, const std::string& target) {
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, name.c_str());
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_hardlink(e, target.c_str());
    SF_CHECK(archive_write_header(a_, e) == ARCHIVE_OK);
    archive_entry_free(e);
  }
  void Close() { SF_CHECK(archive_write_close(a_) == ARCHIVE_OK); }

 private:
  struct archive* a_;
};

}  // namespace stagefarm::testing
