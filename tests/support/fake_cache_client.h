// An in-memory CacheClient for tests of code that uses the cache (never for tests of the cache).
#pragma once

#include <map>
#include <memory>
#include <mutex>

#include "stagefarm/common/cache_client.h"

namespace stagefarm::testing {

class FakeCacheClient : public CacheClient {
 public:
  StatusOr<std::vector<Digest>> FindMissing(const std::vector<Digest>& digests) override {
    std::lock_guard lock(mu_);
    std::vector<Digest> missing;
    for (const auto& d : digests) {
      if (!blobs_.count(d.hex)) missing.push_back(d);
    }
    return missing;
  }
  Status Put(const Digest& digest, const ByteSource& source) override {
    std::string bytes;
    char buf[65536];
    for (;;) {
      SF_ASSIGN_OR_RETURN(size_t n, source(buf, sizeof buf));
      if (n == 0) break;
      bytes.append(buf, n);
    }
    if (!(Digest::Of(bytes) == digest)) return DataLossError("digest mismatch");
    std::lock_guard lock(mu_);
    blobs_[digest.hex] = std::move(bytes);
    ++puts;
    return Status();
  }
  StatusOr<std::unique_ptr<BlobUpload>> StartUpload() override {
    if (!streamed_failure.ok()) return streamed_failure;
    class Upload : public BlobUpload {
     public:
      explicit Upload(FakeCacheClient& c) : c_(c) {}
      Status Write(std::string_view bytes) override {
        bytes_.append(bytes);
        return Status();
      }
      Status Commit(const Digest& digest) override {
        if (!(Digest::Of(bytes_) == digest)) return DataLossError("digest mismatch");
        std::lock_guard lock(c_.mu_);
        c_.blobs_[digest.hex] = std::move(bytes_);
        ++c_.streamed_puts;
        return Status();
      }

     private:
      FakeCacheClient& c_;
      std::string bytes_;
    };
    return std::unique_ptr<BlobUpload>(new Upload(*this));
  }
  Status Read(const Digest& digest, uint64_t offset, uint64_t length,
              const ByteSink& sink) override {
    std::string bytes;
    {
      std::lock_guard lock(mu_);
      auto it = blobs_.find(digest.hex);
      if (it == blobs_.end()) return NotFoundError("blob " + digest.str());
      bytes = it->second;
    }
    if (offset > bytes.size()) return OutOfRangeError("offset past end");
    std::string_view v(bytes);
    v = v.substr(offset, length == 0 ? std::string_view::npos : length);
    return sink(v);
  }
  StatusOr<std::optional<ActionResult>> GetAction(const std::string& key) override {
    std::lock_guard lock(mu_);
    auto it = actions_.find(key);
    if (it == actions_.end()) return std::optional<ActionResult>();
    return std::optional<ActionResult>(it->second);
  }
  Status PutAction(const std::string& key, const ActionResult& result) override {
    std::lock_guard lock(mu_);
    actions_[key] = result;
    return Status();
  }
  StatusOr<std::optional<Digest>> GetRef(const std::string& name) override {
    std::lock_guard lock(mu_);
    auto it = refs_.find(name);
    if (it == refs_.end()) return std::optional<Digest>();
    return std::optional<Digest>(it->second);
  }
  Status PutRef(const std::string& name, const Digest& manifest) override {
    std::lock_guard lock(mu_);
    refs_[name] = manifest;
    return Status();
  }
  StatusOr<std::vector<std::pair<std::string, Digest>>> ListRefs() override {
    std::lock_guard lock(mu_);
    return std::vector<std::pair<std::string, Digest>>(refs_.begin(), refs_.end());
  }

  int puts = 0;
  int streamed_puts = 0;
  Status streamed_failure;  // StartUpload fails with this when set (as a server down would)

 private:
  std::mutex mu_;
  std::map<std::string, std::string> blobs_;
  std::map<std::string, ActionResult> actions_;
  std::map<std::string, Digest> refs_;
};

}  // namespace stagefarm::testing
