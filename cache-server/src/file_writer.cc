#include "stagefarm/cache/file_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "stagefarm/common/fd_io.h"
#include "stagefarm/common/thread_name.h"

namespace stagefarm::cache {

Status FileWrites::Wait() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return in_flight_ == 0; });
  return error_;
}

Status FileWrites::Error() {
  std::lock_guard lock(mu_);
  return error_;
}

FileWriter::FileWriter(int threads, size_t max_bytes) : max_bytes_(max_bytes) {
  SF_CHECK(threads > 0 && max_bytes > 0);
  for (int i = 0; i < threads; ++i) queues_.push_back(std::make_unique<WriterQueue>());
  for (auto& q : queues_) {
    writers_.emplace_back([this, &q = *q] { RunWriter(q); });
    NameThread(writers_.back(), "sf-cache-write");
  }
  syncer_ = std::thread([this] { RunSyncer(); });
  NameThread(syncer_, "sf-cache-sync");
}

FileWriter::~FileWriter() {
  // Writers first: the last of their jobs may still queue a sync.
  {
    std::lock_guard lock(mu_);
    stop_writers_ = true;
  }
  for (auto& q : queues_) q->cv.notify_all();
  for (auto& t : writers_) t.join();
  {
    std::lock_guard lock(mu_);
    stop_syncer_ = true;
  }
  sync_cv_.notify_all();
  syncer_.join();
}

void FileWriter::Write(int fd, uint64_t offset, Frame bytes,
                       const std::shared_ptr<FileWrites>& track, int max_writes) {
  {
    std::unique_lock lock(track->mu_);
    track->cv_.wait(lock, [&] { return track->writes_ < max_writes; });
    ++track->in_flight_;
    ++track->writes_;
  }
  const size_t size = bytes.size();
  WriterQueue& queue = *queues_[static_cast<size_t>(fd) % queues_.size()];
  {
    std::unique_lock lock(mu_);
    // One write larger than the bound still goes, alone.
    room_cv_.wait(lock, [&] { return queued_bytes_ == 0 || queued_bytes_ + size <= max_bytes_; });
    queued_bytes_ += size;
    queue.jobs.push_back(Job{fd, offset, std::move(bytes), track});
  }
  queue.cv.notify_one();
}

void FileWriter::Finish(FileWrites& track, const Status& s, bool write) {
  {
    std::lock_guard lock(track.mu_);
    if (track.error_.ok()) track.error_ = s;
    --track.in_flight_;
    if (write) --track.writes_;
  }
  track.cv_.notify_all();
}

void FileWriter::RunWriter(WriterQueue& queue) {
  std::unique_lock lock(mu_);
  for (;;) {
    queue.cv.wait(lock, [&] { return stop_writers_ || !queue.jobs.empty(); });
    if (queue.jobs.empty()) return;  // stopping, and nothing left to write
    Job job = std::move(queue.jobs.front());
    queue.jobs.pop_front();
    lock.unlock();

    FileWrites& track = *job.track;
    // After a failure the file is abandoned: the rest of its writes are skipped.
    Status s = track.Error();
    if (s.ok()) s = PwriteAll(job.fd, job.bytes, job.offset, "blob file");
    const size_t size = job.bytes.size();
    job.bytes = Frame();  // the chunk's memory goes before room is made for more

    bool sync = false;
    {
      std::lock_guard track_lock(track.mu_);
      track.written_ += size;
      if (s.ok() && track.error_.ok() && !track.sync_queued_ && track.written_ >= kSyncBytes) {
        // Counted before this write's own end, so Wait() never sees the file idle in between.
        track.sync_queued_ = true;
        track.written_ = 0;
        ++track.in_flight_;
        sync = true;
      }
    }
    Finish(track, s, /*write=*/true);

    lock.lock();
    queued_bytes_ -= size;
    room_cv_.notify_all();
    if (sync) {
      syncs_.emplace_back(job.fd, std::move(job.track));
      sync_cv_.notify_one();
    }
  }
}

void FileWriter::RunSyncer() {
  std::unique_lock lock(mu_);
  for (;;) {
    sync_cv_.wait(lock, [&] { return stop_syncer_ || !syncs_.empty(); });
    if (syncs_.empty()) return;  // stopping, and nothing left to sync
    auto [fd, track] = std::move(syncs_.front());
    syncs_.pop_front();
    lock.unlock();
    {
      std::lock_guard track_lock(track->mu_);
      track->sync_queued_ = false;  // writes from here on count toward the next sync
    }
    Status s = track->Error();
    if (s.ok() && ::fdatasync(fd) != 0) s = ErrnoError("sync blob file", errno);
    // What is on disk leaves the page cache, whose pages the next writes then reuse: on this
    // project's VMs, memory is slow to touch the first time, and writing 1 GiB into new pages
    // took 1.9-2.5 s against 0.15 s into reused ones. Only a hint; a failure changes nothing.
    if (s.ok()) ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    Finish(*track, s, /*write=*/false);
    lock.lock();
  }
}

}  // namespace stagefarm::cache
