// FileWriter: chunks land where they were asked to, failures reach the upload, and what was
// synced in the background leaves the page cache.
#include "stagefarm/cache/file_writer.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "cache_test_util.h"
#include "stagefarm/common/unique_fd.h"

namespace stagefarm::cache {
namespace {

using testing::RandomBytes;
using testing::TempDir;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

UniqueFd Create(const std::string& path) {
  return UniqueFd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
}

TEST(FileWriter, ChunksOfSeveralFilesLandAtTheirOffsets) {
  TempDir dir;
  FileWriter writer(/*threads=*/2, /*max_bytes=*/3 << 20);
  constexpr int kFiles = 3;
  constexpr size_t kChunk = 1 << 20;
  // Unequal sizes, none a multiple of the chunk, one under a chunk; more than kSyncBytes for two.
  const size_t sizes[kFiles] = {FileWriter::kSyncBytes * 2 + 12345, 777,
                                FileWriter::kSyncBytes + kChunk - 1};
  std::vector<std::string> want;
  std::vector<UniqueFd> fds;
  std::vector<std::shared_ptr<FileWrites>> tracks;
  for (int f = 0; f < kFiles; ++f) {
    want.push_back(RandomBytes(sizes[f], f));
    fds.push_back(Create(dir.path() + "/" + std::to_string(f)));
    ASSERT_TRUE(fds.back()) << strerror(errno);
    tracks.push_back(std::make_shared<FileWrites>());
  }
  // The files' chunks interleaved, as concurrent uploads send them.
  for (size_t off = 0; off < sizes[0]; off += kChunk) {
    for (int f = 0; f < kFiles; ++f) {
      if (off >= sizes[f]) continue;
      Frame chunk(std::string_view(want[f]).substr(off, kChunk));
      writer.Write(fds[f].get(), off, std::move(chunk), tracks[f], /*max_writes=*/2);
    }
  }
  for (int f = 0; f < kFiles; ++f) {
    Status s = tracks[f]->Wait();
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_TRUE(ReadAll(dir.path() + "/" + std::to_string(f)) == want[f]) << "file " << f;
  }
}

TEST(FileWriter, AFailedWriteEndsTheFileAndIsReported) {
  TempDir dir;
  const std::string path = dir.path() + "/blob";
  ASSERT_TRUE(Create(path));
  // Open for reading only: every write fails with EBADF.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd);
  FileWriter writer(1, 4 << 20);
  auto track = std::make_shared<FileWrites>();
  writer.Write(fd.get(), 0, Frame(std::string(1000, 'a')), track, 2);
  Status s = track->Wait();
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.ToString().find("blob file"), std::string::npos) << s.ToString();
  EXPECT_EQ(track->Error().code(), s.code());

  // Another file is not affected by that one's failure.
  UniqueFd good = Create(dir.path() + "/other");
  auto other = std::make_shared<FileWrites>();
  writer.Write(good.get(), 0, Frame(std::string(1000, 'b')), other, 2);
  ASSERT_TRUE(other->Wait().ok());
  EXPECT_EQ(ReadAll(dir.path() + "/other"), std::string(1000, 'b'));
}

// One file to write, fresh for each test.
class OneFile : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(fd) << strerror(errno); }

  TempDir dir;
  const std::string path = dir.path() + "/blob";
  UniqueFd fd = Create(path);
  std::shared_ptr<FileWrites> track = std::make_shared<FileWrites>();
};

TEST_F(OneFile, WritesAfterAFailureAreSkipped) {
  FileWriter writer(1, 4 << 20);
  writer.Write(fd.get(), 0, Frame(std::string(100, 'a')), track, 1);
  ASSERT_TRUE(track->Wait().ok());
  // A write past what any file may hold fails (EFBIG or EINVAL); the one queued behind it must
  // not reach the file.
  writer.Write(fd.get(), uint64_t{1} << 62, Frame(std::string(100, 'b')), track, 1);
  writer.Write(fd.get(), 100, Frame(std::string(100, 'c')), track, 1);
  EXPECT_FALSE(track->Wait().ok());
  EXPECT_EQ(ReadAll(path), std::string(100, 'a'));
}

// How many of the file's pages are in the page cache, by mincore on a mapping of it.
size_t ResidentPages(const std::string& path, size_t size) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return 0;
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED) return 0;
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> vec((size + page - 1) / page);
  size_t resident = 0;
  if (::mincore(p, size, vec.data()) == 0) {
    for (unsigned char v : vec) resident += v & 1;
  }
  ::munmap(p, size);
  return resident;
}

TEST_F(OneFile, SyncedBytesLeaveThePageCache) {
  FileWriter writer(1, 4 << 20);
  constexpr size_t kChunk = 1 << 20;
  const size_t size = 4 * FileWriter::kSyncBytes;
  const std::string bytes = RandomBytes(kChunk, 9);
  for (size_t off = 0; off < size; off += kChunk) {
    writer.Write(fd.get(), off, Frame(bytes), track, 2);
  }
  ASSERT_TRUE(track->Wait().ok());
  // Every kSyncBytes written queue a sync that drops what is on disk from the cache; at most
  // the last stretch, written after the last sync began, may still be cached.
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  const size_t resident = ResidentPages(path, size);
  EXPECT_LE(resident * page, 2 * FileWriter::kSyncBytes)
      << resident << " of " << size / page << " pages still cached";
  struct stat st;
  ASSERT_EQ(::fstat(fd.get(), &st), 0);
  EXPECT_EQ(static_cast<size_t>(st.st_size), size);
}

TEST_F(OneFile, DestructionFinishesQueuedWrites) {
  const std::string bytes = RandomBytes(3 << 20, 4);
  {
    FileWriter writer(2, 8 << 20);
    for (size_t off = 0; off < bytes.size(); off += 1 << 20) {
      writer.Write(fd.get(), off, Frame(std::string_view(bytes).substr(off, 1 << 20)), track, 4);
    }
  }
  ASSERT_TRUE(track->Wait().ok());
  EXPECT_TRUE(ReadAll(path) == bytes);
}

// Its threads carry names, so that `top -H` tells the server's writers and syncer apart.
TEST(FileWriter, ThreadsAreNamed) {
  auto names = [] {
    std::multiset<std::string> out;
    for (const auto& t : std::filesystem::directory_iterator("/proc/self/task")) {
      std::ifstream comm(t.path() / "comm");
      std::string name;
      std::getline(comm, name);
      out.insert(name);
    }
    return out;
  };
  const size_t writers_before = names().count("sf-cache-write");
  const size_t syncers_before = names().count("sf-cache-sync");
  {
    FileWriter writer(3, 1 << 20);
    std::multiset<std::string> now = names();
    EXPECT_EQ(now.count("sf-cache-write"), writers_before + 3);
    EXPECT_EQ(now.count("sf-cache-sync"), syncers_before + 1);
  }
  EXPECT_EQ(names().count("sf-cache-write"), writers_before);
}

}  // namespace
}  // namespace stagefarm::cache
