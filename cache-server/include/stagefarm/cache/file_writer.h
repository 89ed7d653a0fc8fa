// Writes the chunks of large uploads to their files on threads of its own, and makes them
// durable as they come rather than all at the commit.
//
// Measured on this project's machines (a 1 GiB upload): the server's thread that hashes the
// chunks also wrote them, and the sync at the commit took 0.4-0.6 s, because the disk (a VM's,
// whose host caches writes) writes nothing down until asked to. Now a writer thread writes each
// chunk while the next is hashed, and a sync thread calls fdatasync every kSyncBytes in the
// background, so that the commit's own sync finds almost nothing left; what is synced leaves
// the page cache, whose pages the next writes reuse (new memory is slow to touch on these VMs).
// Ingest of 1 GiB went from 390 to 920 MB/s. O_DIRECT was tried instead: it saves the copy into
// the page cache, but the disk took its writes at half the rate of the kernel's writeback.
//
// Chunks are not copied: a job holds the received frame until it is written. Memory is bounded
// by `max_bytes` for all files together.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "stagefarm/common/message.h"
#include "stagefarm/common/status.h"

namespace stagefarm::cache {

// The writes and syncs queued for one file: how many are still to finish, and the first error.
class FileWrites {
 public:
  // Waits until none of this file's writes or syncs is queued or running; returns the first
  // error.
  Status Wait();
  // The first error so far, without waiting.
  Status Error();

 private:
  friend class FileWriter;
  std::mutex mu_;
  std::condition_variable cv_;
  int in_flight_ = 0;         // writes and syncs queued or running
  int writes_ = 0;            // of which writes
  bool sync_queued_ = false;  // a background sync is queued and not yet started
  uint64_t written_ = 0;      // bytes written since the last background sync was queued
  Status error_;
};

class FileWriter {
 public:
  // A background fdatasync of a file is queued each time this many more bytes are written.
  static constexpr uint64_t kSyncBytes = 8 << 20;

  // `threads` writer threads (and one sync thread); at most `max_bytes` of chunks queued or
  // being written.
  FileWriter(int threads, size_t max_bytes);
  ~FileWriter();  // finishes the queued writes and syncs first
  FileWriter(const FileWriter&) = delete;
  FileWriter& operator=(const FileWriter&) = delete;

  // Queues the write of `bytes` at `offset` of `fd`, which must stay open until track->Wait()
  // returns. Waits while `track` has `max_writes` writes queued or running, and while the bytes
  // of all queued writes would pass max_bytes.
  void Write(int fd, uint64_t offset, Frame bytes, const std::shared_ptr<FileWrites>& track,
             int max_writes);

 private:
  struct Job {
    int fd;
    uint64_t offset;
    Frame bytes;
    std::shared_ptr<FileWrites> track;
  };

  // One queue per writer thread; a file's writes all go to one of them, since writes to one
  // file take its inode lock in turn (two threads writing one file spent a sixth of their time
  // spinning on it).
  struct WriterQueue {
    std::condition_variable cv;  // a write was queued, or stop_writers_
    std::deque<Job> jobs;
  };

  void RunWriter(WriterQueue& queue);
  void RunSyncer();
  // Ends a write or sync of `track` with `s`, waking whoever waits for it.
  static void Finish(FileWrites& track, const Status& s, bool write);

  const size_t max_bytes_;
  std::mutex mu_;
  std::condition_variable sync_cv_;  // a sync was queued, or stop_syncer_
  std::condition_variable room_cv_;  // queued_bytes_ went down
  std::vector<std::unique_ptr<WriterQueue>> queues_;
  std::deque<std::pair<int, std::shared_ptr<FileWrites>>> syncs_;
  size_t queued_bytes_ = 0;  // of writes queued or running
  bool stop_writers_ = false;
  bool stop_syncer_ = false;
  std::vector<std::thread> writers_;
  std::thread syncer_;
};

}  // namespace stagefarm::cache
