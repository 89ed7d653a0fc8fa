// Private helpers shared by the image importer and exporters: a scoped temp dir and the sinks an
// exported image layout is written to (a tar or a directory).
#pragma once

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "archive_util.h"
#include "stagefarm/common/cache_client.h"
#include "stagefarm/common/status.h"
#include "stagefarm/common/unique_fd.h"

namespace stagefarm::image_files {

using archive_util::ArchiveMessage;
using archive_util::ArchiveWritePtr;

// A private directory under $TMPDIR, removed with its contents when the object goes away.
class ScopedTempDir {
 public:
  static StatusOr<std::unique_ptr<ScopedTempDir>> Create(const std::string& prefix) {
    // Nothing in the farm calls setenv after start-up, so reading the environment is safe.
    const char* tmp = std::getenv("TMPDIR");  // NOLINT(concurrency-mt-unsafe)
    std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/" + prefix + "-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) return ErrnoError("mkdtemp " + tmpl, errno);
    return std::unique_ptr<ScopedTempDir>(new ScopedTempDir(tmpl));
  }
  ~ScopedTempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);  // best effort: a leftover temp dir is only disk
  }
  const std::string& path() const { return path_; }

 private:
  explicit ScopedTempDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

// Where an exported layout goes: a tar or a directory.
class LayoutSink {
 public:
  virtual ~LayoutSink() = default;
  virtual Status AddDir(const std::string& name) = 0;
  // Writes `size` bytes from `produce`, which calls its sink with consecutive chunks.
  virtual Status AddFile(const std::string& name, uint64_t size,
                         const std::function<Status(const ByteSink&)>& produce) = 0;
  virtual Status Finish() = 0;
};

class TarLayoutSink : public LayoutSink {
 public:
  Status Open(const std::string& path) {
    path_ = path;
    tmp_ = path + ".tmp";
    a_.reset(archive_write_new());
    SF_CHECK(a_ != nullptr);
    if (archive_write_set_format_pax_restricted(a_.get()) != ARCHIVE_OK ||
        archive_write_open_filename(a_.get(), tmp_.c_str()) != ARCHIVE_OK) {
      return InternalError("create " + tmp_ + ": " + ArchiveMessage(a_.get(), "failed"));
    }
    return Status();
  }
  ~TarLayoutSink() override {
    if (!finished_ && !tmp_.empty()) ::unlink(tmp_.c_str());  // a half-written archive is junk
  }
  Status AddDir(const std::string& name) override { return Header(name + "/", AE_IFDIR, 0755, 0); }
  Status AddFile(const std::string& name, uint64_t size,
                 const std::function<Status(const ByteSink&)>& produce) override {
    SF_RETURN_IF_ERROR(Header(name, AE_IFREG, 0644, size));
    return produce([&](std::string_view bytes) -> Status {
      if (archive_write_data(a_.get(), bytes.data(), bytes.size()) < 0) {
        return InternalError("write " + tmp_ + ": " + ArchiveMessage(a_.get(), "failed"));
      }
      return Status();
    });
  }
  Status Finish() override {
    if (archive_write_close(a_.get()) != ARCHIVE_OK) {
      return InternalError("finish " + tmp_ + ": " + ArchiveMessage(a_.get(), "failed"));
    }
    if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
      return ErrnoError("rename " + tmp_ + " to " + path_, errno);
    }
    finished_ = true;
    return Status();
  }

 private:
  Status Header(const std::string& name, unsigned type, unsigned perm, uint64_t size) {
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, name.c_str());
    archive_entry_set_filetype(e, type);
    archive_entry_set_perm(e, perm);
    archive_entry_set_size(e, static_cast<la_int64_t>(size));
    archive_entry_set_mtime(e, 0, 0);
    int r = archive_write_header(a_.get(), e);
    archive_entry_free(e);
    if (r != ARCHIVE_OK) {
      return InternalError("write " + tmp_ + ": " + ArchiveMessage(a_.get(), "failed"));
    }
    return Status();
  }

  std::string path_, tmp_;
  ArchiveWritePtr a_;
  bool finished_ = false;
};

class DirLayoutSink : public LayoutSink {
 public:
  explicit DirLayoutSink(std::string root) : root_(std::move(root)) {}
  Status AddDir(const std::string& name) override {
    std::error_code ec;
    std::filesystem::create_directories(root_ + "/" + name, ec);
    if (ec) return InternalError("mkdir " + root_ + "/" + name + ": " + ec.message());
    return Status();
  }
  Status AddFile(const std::string& name, uint64_t size,
                 const std::function<Status(const ByteSink&)>& produce) override {
    const std::string path = root_ + "/" + name;
    struct stat st;
    // Blobs are named by digest: one of the right size is kept (index.json is not a blob).
    if (name.starts_with("blobs/") && ::stat(path.c_str(), &st) == 0 &&
        static_cast<uint64_t>(st.st_size) == size) {
      return Status();
    }
    const std::string tmp = path + ".tmp";
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd) return ErrnoError("create " + tmp, errno);
    Status s = produce([&](std::string_view b) -> Status {
      while (!b.empty()) {
        ssize_t n = ::write(fd.get(), b.data(), b.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return ErrnoError("write " + tmp, errno);
        b.remove_prefix(static_cast<size_t>(n));
      }
      return Status();
    });
    if (!s.ok()) {
      ::unlink(tmp.c_str());  // best effort: the error below is what matters
      return s;
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) return ErrnoError("rename " + tmp, errno);
    return Status();
  }
  Status Finish() override { return Status(); }

 private:
  std::string root_;
};

}  // namespace stagefarm::image_files
