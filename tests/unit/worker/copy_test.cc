// COPY and ADD as BuildKit v0.24 does them (worker/src/copy.cc): ApplyCopy straight onto a
// directory for the copy rules, and through the executor (overlayfs, crun) where a step's layer
// matters (--link). Each expectation was checked against BuildKit with the same inputs.
#include "stagefarm/worker/copy.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "stagefarm/common/toc.h"
#include "stagefarm/worker/executor.h"
#include "worker_fixture.h"

namespace stagefarm::worker {
namespace {

namespace fs = std::filesystem;

void Write(const std::string& path, const std::string& text, mode_t mode = 0644) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path) << text;
  ::chmod(path.c_str(), mode);
}

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// "f 644 0:0", "d 755 1000:1000", "l ->target", "p 644 0:0", "c 1,3", or "-" when absent.
std::string Describe(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return "-";
  char mode[8];
  std::snprintf(mode, sizeof mode, "%o", st.st_mode & 07777);
  std::string owner = std::to_string(st.st_uid) + ":" + std::to_string(st.st_gid);
  if (S_ISLNK(st.st_mode)) return "l ->" + fs::read_symlink(path).string();
  if (S_ISCHR(st.st_mode)) {
    return "c " + std::to_string(major(st.st_rdev)) + "," + std::to_string(minor(st.st_rdev));
  }
  const char* type = S_ISREG(st.st_mode)    ? "f"
                     : S_ISDIR(st.st_mode)  ? "d"
                     : S_ISFIFO(st.st_mode) ? "p"
                                            : "?";
  return std::string(type) + " " + mode + " " + owner;
}

// Every path under `root`, sorted, with Describe().
std::string Tree(const std::string& root) {
  std::vector<std::string> lines;
  if (!fs::exists(fs::symlink_status(root))) return "";
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator();
       ++it) {
    std::string rel = it->path().string().substr(root.size() + 1);
    lines.push_back(rel + " " + Describe(it->path().string()));
  }
  std::sort(lines.begin(), lines.end());
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

class CopyTest : public WorkerFixture {
 protected:
  void SetUp() override {
    WorkerFixture::SetUp();
    if (HasFatalFailure()) return;
    ctx_ = tmp_.path() + "/ctx";
    rootfs_ = tmp_.path() + "/rootfs";
    fs::create_directories(ctx_);
    fs::create_directories(rootfs_ + "/etc");
    Write(rootfs_ + "/etc/passwd", "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/:/bin/sh\n");
    Write(rootfs_ + "/etc/group", "root:x:0:\napp:x:1000:\n");
  }

  // Copies from the context directory as it is now (hashed into the fake cache).
  Status CopyFromContext(CopyRequest req) {
    Digest root = PutContextDir(ctx_, cache_);
    auto source = MakeContextSource(cache_, root);
    if (req.scratch_dir.empty()) req.scratch_dir = Scratch();
    return ApplyCopy(req, *source, rootfs_);
  }
  Status CopyFromDir(const std::string& dir, CopyRequest req) {
    auto source = MakeDirSource(dir);
    if (!source.ok()) return source.status();
    if (req.scratch_dir.empty()) req.scratch_dir = Scratch();
    return ApplyCopy(req, **source, rootfs_);
  }
  std::string Scratch() {
    std::string dir = tmp_.path() + "/scratch-" + std::to_string(++scratches_);
    fs::create_directories(dir);
    return dir;
  }
  static CopyRequest Req(std::vector<std::string> sources, std::string dest) {
    CopyRequest r;
    r.sources = std::move(sources);
    r.dest = std::move(dest);
    return r;
  }

  std::string ctx_, rootfs_;
  int scratches_ = 0;
};

// ---- COPY --parents -----------------------------------------------------------------------------

TEST_F(CopyTest, ParentsKeepTheSourcePathWithTheParentsModes) {
  Write(ctx_ + "/foo1/foo2/bar", "bar\n");
  Write(ctx_ + "/foo1/foo2/baz", "baz\n");
  Write(ctx_ + "/x/y/z", "xyz\n");
  ::chmod((ctx_ + "/foo1").c_str(), 0700);
  ::chmod((ctx_ + "/foo1/foo2").c_str(), 0750);
  CopyRequest req = Req({"foo1/foo2/bar"}, "/p1/");
  req.parents = true;
  ASSERT_TRUE(CopyFromContext(req).ok());
  EXPECT_EQ(Tree(rootfs_ + "/p1"),
            "foo1 d 700 0:0\nfoo1/foo2 d 750 0:0\nfoo1/foo2/bar f 644 0:0\n");

  // Wildcards anywhere, "**", several sources and a dest without a slash.
  req = Req({"foo1/*/ba*", "**/z"}, "/p2");
  req.parents = true;
  ASSERT_TRUE(CopyFromContext(req).ok());
  EXPECT_EQ(Tree(rootfs_ + "/p2"),
            "foo1 d 700 0:0\nfoo1/foo2 d 750 0:0\nfoo1/foo2/bar f 644 0:0\n"
            "foo1/foo2/baz f 644 0:0\nx d 755 0:0\nx/y d 755 0:0\nx/y/z f 644 0:0\n");

  // A "/./" pivot: only what follows it is kept; --chown owns the parents too.
  req = Req({"foo1/./foo2/bar"}, "/p3/");
  req.parents = true;
  req.chown = "7:8";
  ASSERT_TRUE(CopyFromContext(req).ok());
  EXPECT_EQ(Tree(rootfs_ + "/p3"), "foo2 d 750 7:8\nfoo2/bar f 644 7:8\n");
  EXPECT_EQ(Describe(rootfs_ + "/p3"), "d 755 7:8");
}

TEST_F(CopyTest, ParentsMatchesWithoutFollowingLinksAndMayMatchNothing) {
  Write(ctx_ + "/d/f", "f\n");
  fs::create_symlink("d", ctx_ + "/dlnk");
  for (const char* source : {"dlnk/f", ".", "nothere", "nothere*"}) {
    CopyRequest req = Req({source}, "/e/");
    req.parents = true;
    ASSERT_TRUE(CopyFromContext(req).ok()) << source;
    EXPECT_EQ(Tree(rootfs_ + "/e"), "") << source << ": BuildKit copies nothing";
    EXPECT_EQ(Describe(rootfs_ + "/e"), "d 755 0:0") << "the destination is made";
  }
  CopyRequest req = Req({"dlnk"}, "/l/");
  req.parents = true;
  ASSERT_TRUE(CopyFromContext(req).ok());
  EXPECT_EQ(Tree(rootfs_ + "/l"), "dlnk l ->d\n") << "a matched link is copied as a link";
  // The pivot's root is followed, and must exist.
  req = Req({"dlnk/./f"}, "/q/");
  req.parents = true;
  ASSERT_TRUE(CopyFromContext(req).ok());
  EXPECT_EQ(Tree(rootfs_ + "/q"), "f f 644 0:0\n");
  req = Req({"nothere/./x"}, "/n/");
  req.parents = true;
  EXPECT_EQ(CopyFromContext(req).code(), StatusCode::kNotFound);
}

TEST_F(CopyTest, ParentsFromAStageWithAWildcardPivotRoot) {
  const std::string stage = tmp_.path() + "/stage";
  Write(stage + "/test/a/b/c/f", "1\n");
  Write(stage + "/test/a/b2/c/g", "2\n");
  ::chmod((stage + "/test/a/b2").c_str(), 0701);
  ASSERT_EQ(::chown((stage + "/test/a/b").c_str(), 5, 6), 0);
  CopyRequest req = Req({"/test/a/b*/./c"}, "/q1/");
  req.parents = true;
  ASSERT_TRUE(CopyFromDir(stage, req).ok());
  EXPECT_EQ(Tree(rootfs_ + "/q1"), "c d 755 0:0\nc/f f 644 0:0\nc/g f 644 0:0\n");
  req = Req({"/test/a/b*/c"}, "/q2/");
  req.parents = true;
  ASSERT_TRUE(CopyFromDir(stage, req).ok());
  EXPECT_EQ(Tree(rootfs_ + "/q2"),
            "test d 755 0:0\ntest/a d 755 0:0\ntest/a/b d 755 5:6\ntest/a/b/c d 755 0:0\n"
            "test/a/b/c/f f 644 0:0\ntest/a/b2 d 701 0:0\ntest/a/b2/c d 755 0:0\n"
            "test/a/b2/c/g f 644 0:0\n");
}

// ---- --exclude ----------------------------------------------------------------------------------

TEST_F(CopyTest, ExcludeMatchesBelowEachCopiedDirectory) {
  Write(ctx_ + "/src/a.md", "1\n");
  Write(ctx_ + "/src/b.txt", "2\n");
  Write(ctx_ + "/src/sub/c.md", "3\n");
  Write(ctx_ + "/src/sub/skip/d.txt", "4\n");
  Write(ctx_ + "/top.md", "6\n");
  struct Case {
    std::vector<std::string> excludes, sources;
    std::string want;
  };
  const Case cases[] = {
      {{"*.md", "sub/skip"}, {"src"}, "b.txt f 644 0:0\nsub d 755 0:0\nsub/c.md f 644 0:0\n"},
      // A source itself is never excluded, only what is below it.
      {{"*.md"}, {"*.md"}, "top.md f 644 0:0\n"},
      // An exception below an excluded directory brings its parents back.
      {{"sub", "!sub/skip/d.txt"},
       {"src/"},
       "a.md f 644 0:0\nb.txt f 644 0:0\nsub d 755 0:0\nsub/skip d 755 0:0\n"
       "sub/skip/d.txt f 644 0:0\n"},
      {{"**/*.md", "sub/skip/"}, {"src"}, "b.txt f 644 0:0\nsub d 755 0:0\n"},
      // patternmatcher keeps a leading "/": it matches nothing.
      {{"/sub", "/a.md"},
       {"src"},
       "a.md f 644 0:0\nb.txt f 644 0:0\nsub d 755 0:0\nsub/c.md f 644 0:0\nsub/skip d 755 0:0\n"
       "sub/skip/d.txt f 644 0:0\n"},
      // Relative to each source: "src/sub/c.md" is not below src, "top*" not below top.md.
      {{"src/sub/c.md", "top*", "*/skip"},
       {"src", "top.md"},
       "a.md f 644 0:0\nb.txt f 644 0:0\nsub d 755 0:0\nsub/c.md f 644 0:0\ntop.md f 644 0:0\n"},
      {{"*"}, {"src"}, ""},
  };
  int n = 0;
  for (const Case& c : cases) {
    const std::string dest = "/e" + std::to_string(++n) + "/";
    CopyRequest req = Req(c.sources, dest);
    req.excludes = c.excludes;
    ASSERT_TRUE(CopyFromContext(req).ok()) << dest;
    EXPECT_EQ(Tree(rootfs_ + dest.substr(0, dest.size() - 1)), c.want) << dest;
  }
  CopyRequest bad = Req({"src"}, "/bad/");
  bad.excludes = {"[a"};
  Status s = CopyFromContext(bad);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("--exclude"), std::string::npos) << s.ToString();
}

TEST_F(CopyTest, ExcludeAndParentsTogether) {
  Write(ctx_ + "/foo1/foo2/bar", "bar\n");
  Write(ctx_ + "/foo1/foo2/baz", "baz\n");
  CopyRequest req = Req({"foo1"}, "/p/");
  req.parents = true;
  req.excludes = {"foo1/*/baz"};  // relative to the --parents root
  ASSERT_TRUE(CopyFromContext(req).ok());
  EXPECT_EQ(Tree(rootfs_ + "/p"), "foo1 d 755 0:0\nfoo1/foo2 d 755 0:0\nfoo1/foo2/bar f 644 0:0\n");
}

// ---- wildcards that match nothing --------------------------------------------------------------

TEST_F(CopyTest, WildcardsMatchingNothingAreNoError) {
  Write(ctx_ + "/a.txt", "A\n");
  ASSERT_TRUE(CopyFromContext(Req({"a.txt", "nomatch*"}, "/d1/")).ok());
  EXPECT_EQ(Tree(rootfs_ + "/d1"), "a.txt f 644 0:0\n");
  ASSERT_TRUE(CopyFromContext(Req({"nomatch*", "a.txt"}, "/d2/")).ok());
  EXPECT_EQ(Tree(rootfs_ + "/d2"), "a.txt f 644 0:0\n");
  // Alone, or all of them: nothing is copied, not even the destination made (BuildKit v0.24).
  ASSERT_TRUE(CopyFromContext(Req({"nomatch*"}, "/d3/")).ok());
  ASSERT_TRUE(CopyFromContext(Req({"nomatch*/x", "no?"}, "/d4/")).ok());
  EXPECT_EQ(Describe(rootfs_ + "/d3"), "-");
  EXPECT_EQ(Describe(rootfs_ + "/d4"), "-");
  // A source without wildcards must exist.
  Status s = CopyFromContext(Req({"a.txt", "missing"}, "/d5/"));
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_NE(s.message().find("file not found in build context: missing"), std::string::npos);
}

TEST_F(CopyTest, SeveralSourcesAreCopiedOneAfterTheOther) {
  Write(ctx_ + "/a.txt", "A\n");
  Write(ctx_ + "/b.md", "B\n");
  Write(ctx_ + "/dir/d", "D\n");
  // No "destination must end with /" rule in BuildKit: the last file wins ...
  ASSERT_TRUE(CopyFromContext(Req({"a.txt", "b.md"}, "/x")).ok());
  EXPECT_EQ(Read(rootfs_ + "/x"), "B\n");
  // ... and a directory made by the first source takes the next.
  ASSERT_TRUE(CopyFromContext(Req({"dir", "a.txt"}, "/z")).ok());
  EXPECT_EQ(Tree(rootfs_ + "/z"), "a.txt f 644 0:0\nd f 644 0:0\n");
  Status s = CopyFromContext(Req({"a.txt", "dir"}, "/w"));
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.ToString();
  EXPECT_NE(s.message().find("to non-directory /w"), std::string::npos) << s.ToString();
}

// ---- symlinks on the way to a source, and at the destination -----------------------------------

TEST_F(CopyTest, SymlinkedDirectoriesInASourcePathResolveInsideTheRoot) {
  Write(ctx_ + "/d/f", "f\n");
  Write(ctx_ + "/d/sub/s", "s\n");
  fs::create_symlink("d", ctx_ + "/dlnk");
  fs::create_symlink("/d", ctx_ + "/abs");
  fs::create_symlink("dlnk", ctx_ + "/dlnk2");
  ASSERT_TRUE(CopyFromContext(Req({"dlnk/f"}, "/o1")).ok());
  EXPECT_EQ(Read(rootfs_ + "/o1"), "f\n");
  ASSERT_TRUE(CopyFromContext(Req({"dlnk/*"}, "/o2/")).ok());
  EXPECT_EQ(Tree(rootfs_ + "/o2"), "f f 644 0:0\ns f 644 0:0\n");
  ASSERT_TRUE(CopyFromContext(Req({"abs/sub", "dlnk2/sub/s"}, "/o3/")).ok());
  EXPECT_EQ(Tree(rootfs_ + "/o3"), "s f 644 0:0\n");
  // Below a wildcard, BuildKit walks without following links.
  ASSERT_TRUE(CopyFromContext(Req({"dl*/f"}, "/o4/")).ok());
  EXPECT_EQ(Describe(rootfs_ + "/o4"), "-");

  const std::string stage = tmp_.path() + "/stage";
  Write(stage + "/etc/group", "root:x:0:\n");
  fs::create_symlink("/etc", stage + "/etclink");
  fs::create_symlink("../../etc", stage + "/rel");
  fs::create_symlink("/nonexist/../../etc", stage + "/esc");
  fs::create_directories(stage + "/w");
  fs::create_symlink("../etc", stage + "/w/up");
  int n = 0;
  for (const char* source : {"/etclink/group", "/rel/group", "/esc/group", "/w/up/group"}) {
    const std::string dest = "/g" + std::to_string(++n);
    ASSERT_TRUE(CopyFromDir(stage, Req({source}, dest)).ok()) << source;
    EXPECT_EQ(Read(rootfs_ + dest), "root:x:0:\n") << source;
  }
}

TEST_F(CopyTest, TheDestinationResolvesThroughTheRootfsSymlinks) {
  Write(ctx_ + "/f", "new\n");
  Write(rootfs_ + "/etc/motd", "old\n");
  fs::create_symlink("/etc/motd", rootfs_ + "/lnkfile");
  fs::create_symlink("/nowhere/file", rootfs_ + "/dangle");
  fs::create_directories(rootfs_ + "/d");
  fs::create_symlink("/etc/group", rootfs_ + "/d/f");
  ASSERT_TRUE(CopyFromContext(Req({"f"}, "/lnkfile")).ok());
  EXPECT_EQ(Read(rootfs_ + "/etc/motd"), "new\n");
  EXPECT_EQ(Describe(rootfs_ + "/lnkfile"), "l ->/etc/motd");
  ASSERT_TRUE(CopyFromContext(Req({"f"}, "/dangle")).ok());
  EXPECT_EQ(Read(rootfs_ + "/nowhere/file"), "new\n");
  // A dangling link named as a directory dest gets its target made (BuildKit's
  // testSymlinkDestination), clamped to the root.
  fs::create_symlink("../tmp/target", rootfs_ + "/symlink");
  ASSERT_TRUE(CopyFromContext(Req({"f"}, "/symlink/")).ok());
  EXPECT_EQ(Read(rootfs_ + "/tmp/target/f"), "new\n");
  // An empty dest is the workdir.
  CopyRequest empty = Req({"f"}, "");
  empty.workdir = "/var/www";
  ASSERT_TRUE(CopyFromContext(empty).ok());
  EXPECT_EQ(Read(rootfs_ + "/var/www/f"), "new\n");
  // A name joined to a directory dest is not followed: the link there is replaced.
  ASSERT_TRUE(CopyFromContext(Req({"f"}, "/d/")).ok());
  EXPECT_EQ(Describe(rootfs_ + "/d/f"), "f 644 0:0");
  EXPECT_EQ(Read(rootfs_ + "/etc/group"), "root:x:0:\napp:x:1000:\n");
}

TEST_F(CopyTest, ChmodAlsoSetsTheModeOfTheDirectoriesItMakes) {
  Write(ctx_ + "/f", "f\n");
  CopyRequest req = Req({"f"}, "/n1/sub/");
  req.chmod = "600";
  ASSERT_TRUE(CopyFromContext(req).ok());
  EXPECT_EQ(Tree(rootfs_ + "/n1"), "sub d 600 0:0\nsub/f f 600 0:0\n");
  EXPECT_EQ(Describe(rootfs_ + "/n1"), "d 600 0:0");
}

// ---- ADD: archives ------------------------------------------------------------------------------

class AddTest : public CopyTest {
 protected:
  // ctx/a.tgz holds in/ (1234:99) and in/f (0640, 1234:99).
  void MakeTgz() {
    const std::string src = tmp_.path() + "/tar-src";
    Write(src + "/in/f", "in\n", 0640);
    ASSERT_EQ(std::system(("chown -R 1234:99 " + src).c_str()), 0);
    ASSERT_EQ(
        std::system(("tar --numeric-owner -C " + src + " -czf " + ctx_ + "/a.tgz in").c_str()), 0);
  }
  static CopyRequest Add(std::vector<std::string> sources, std::string dest, bool unpack = true) {
    CopyRequest r = Req(std::move(sources), std::move(dest));
    r.instruction = "ADD";
    r.extract_archives = unpack;
    return r;
  }
};

TEST_F(AddTest, UnpackFalseCopiesTheArchiveAndChownOwnsWhatIsUnpacked) {
  MakeTgz();
  ASSERT_TRUE(CopyFromContext(Add({"a.tgz"}, "/u1/", /*unpack=*/false)).ok());
  EXPECT_EQ(Tree(rootfs_ + "/u1"), "a.tgz f 644 0:0\n");
  ASSERT_TRUE(CopyFromContext(Add({"a.tgz"}, "/u2/")).ok());
  EXPECT_EQ(Tree(rootfs_ + "/u2"), "in d 755 1234:99\nin/f f 640 1234:99\n");
  CopyRequest owned = Add({"a.tgz"}, "/u3");
  owned.chown = "7:8";
  ASSERT_TRUE(CopyFromContext(owned).ok());
  EXPECT_EQ(Tree(rootfs_ + "/u3"), "in d 755 7:8\nin/f f 640 7:8\n");
  EXPECT_EQ(Describe(rootfs_ + "/u3"), "d 755 7:8");
  // --chmod is not applied to what is unpacked, nor to the directory made for it.
  CopyRequest mode = Add({"a.tgz"}, "/u4/");
  mode.chmod = "600";
  ASSERT_TRUE(CopyFromContext(mode).ok());
  EXPECT_EQ(Tree(rootfs_ + "/u4"), "in d 755 1234:99\nin/f f 640 1234:99\n");
  EXPECT_EQ(Describe(rootfs_ + "/u4"), "d 755 0:0");
}

TEST_F(AddTest, UnpackTrueUnpacksAnArchiveFromAUrl) {
  MakeTgz();
  std::string bytes = Read(ctx_ + "/a.tgz");
  Digest d;
  ASSERT_TRUE(cache_.PutBytes(bytes, &d).ok());
  RemoteFile file;
  file.url = "http://127.0.0.1:1/a.tgz";
  file.digest = d;
  auto remote = MakeRemoteSource(cache_, {file});
  CopyRequest plain = Add({file.url}, "/r1/");
  plain.remote = remote.get();
  ASSERT_TRUE(CopyFromContext(plain).ok());
  EXPECT_EQ(Tree(rootfs_ + "/r1"), "a.tgz f 600 0:0\n") << "a URL is not unpacked by default";
  CopyRequest unpack = Add({file.url}, "/r2");
  unpack.remote = remote.get();
  unpack.extract_remote = true;
  ASSERT_TRUE(CopyFromContext(unpack).ok());
  EXPECT_EQ(Tree(rootfs_ + "/r2"), "in d 755 1234:99\nin/f f 640 1234:99\n");
}

TEST_F(AddTest, AbsoluteEntryNamesAreUnpackedBelowTheDestination) {
  ASSERT_EQ(std::system(("python3 - " + ctx_ + R"PY( <<'EOF'
import io, sys, tarfile
def add(t, name, data=b'x\n', typ=tarfile.REGTYPE, link='', mode=0o644):
    ti = tarfile.TarInfo(name); ti.type = typ; ti.mode = mode; ti.linkname = link
    if typ == tarfile.REGTYPE: ti.size = len(data)
    t.addfile(ti, io.BytesIO(data) if typ == tarfile.REGTYPE else None)
with tarfile.open(sys.argv[1] + '/abs.tar', 'w', format=tarfile.GNU_FORMAT) as t:
    add(t, '/abs/', typ=tarfile.DIRTYPE, mode=0o750)
    add(t, '/abs/file', b'abs\n')
    add(t, '/../top', b'top\n')
    add(t, '/abs/hard', typ=tarfile.LNKTYPE, link='/abs/file')
    add(t, '/abs/link', typ=tarfile.SYMTYPE, link='/etc/passwd')
with tarfile.open(sys.argv[1] + '/dotdot.tar', 'w', format=tarfile.GNU_FORMAT) as t:
    add(t, '../escape', b'esc\n')
EOF)PY")
                            .c_str()),
            0);
  ASSERT_TRUE(CopyFromContext(Add({"abs.tar"}, "/t/")).ok());
  EXPECT_EQ(Tree(rootfs_ + "/t"),
            "abs d 750 0:0\nabs/file f 644 0:0\nabs/hard f 644 0:0\nabs/link l ->/etc/passwd\n"
            "top f 644 0:0\n");
  struct stat a, b;
  ASSERT_EQ(::stat((rootfs_ + "/t/abs/file").c_str(), &a), 0);
  ASSERT_EQ(::stat((rootfs_ + "/t/abs/hard").c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino) << "the hard link's absolute target is below the dest too";
  Status s = CopyFromContext(Add({"dotdot.tar"}, "/t2/"));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("\"../escape\" goes up"), std::string::npos) << s.ToString();
  EXPECT_FALSE(fs::exists(tmp_.path() + "/escape"));
}

// ---- FIFOs, sockets and devices ---------------------------------------------------------------

TEST_F(CopyTest, SpecialFilesAreCopiedAsBuildKitDoes) {
  ASSERT_EQ(::mkfifo((ctx_ + "/fifo").c_str(), 0640), 0);
  ASSERT_EQ(::mknod((ctx_ + "/null").c_str(), S_IFCHR | 0644, makedev(1, 3)), 0);
  fs::create_directories(ctx_ + "/d");
  ASSERT_EQ(::mkfifo((ctx_ + "/d/fifo2").c_str(), 0600), 0);
  int sock = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(sock, 0);
  struct sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  const std::string sock_path = ctx_ + "/sock";
  ASSERT_LT(sock_path.size(), sizeof addr.sun_path);
  std::strcpy(addr.sun_path, sock_path.c_str());
  ASSERT_EQ(::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ::close(sock);
  ::chmod(sock_path.c_str(), 0755);

  ASSERT_TRUE(CopyFromContext(Req({"fifo"}, "/o1")).ok());
  EXPECT_EQ(Describe(rootfs_ + "/o1"), "p 640 0:0");
  ASSERT_TRUE(CopyFromContext(Req({"null"}, "/o2")).ok());
  EXPECT_EQ(Describe(rootfs_ + "/o2"), "c 1,3");
  ASSERT_TRUE(CopyFromContext(Req({"d"}, "/o3/")).ok());
  EXPECT_EQ(Tree(rootfs_ + "/o3"), "fifo2 p 600 0:0\n");
  // BuildKit's context transfer sends a socket as an empty file.
  ASSERT_TRUE(CopyFromContext(Req({"sock"}, "/o4")).ok());
  EXPECT_EQ(Describe(rootfs_ + "/o4"), "f 755 0:0");
  EXPECT_EQ(Read(rootfs_ + "/o4"), "");

  const std::string stage = tmp_.path() + "/stage";
  fs::create_directories(stage);
  ASSERT_EQ(::mkfifo((stage + "/fifo").c_str(), 0644), 0);
  ASSERT_EQ(::chown((stage + "/fifo").c_str(), 3, 4), 0);
  ASSERT_TRUE(CopyFromDir(stage, Req({"/fifo"}, "/o5")).ok());
  EXPECT_EQ(Describe(rootfs_ + "/o5"), "p 644 3:4");
}

// ---- --link
// ---------------------------------------------------------------------------------------

TEST_F(CopyTest, LinkedCopyTakesNumericOwnersOnly) {
  Write(ctx_ + "/f", "f\n");
  const std::string empty = tmp_.path() + "/layer";
  fs::create_directories(empty);
  for (const char* owner : {"app", "0:app", "1000:nobody"}) {
    CopyRequest req = Req({"f"}, "/x/");
    req.link = true;
    req.chown = owner;
    Digest root = PutContextDir(ctx_, cache_);
    auto source = MakeContextSource(cache_, root);
    Status s = ApplyCopy(req, *source, empty);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << owner;
    EXPECT_NE(s.message().find("--link --chown="), std::string::npos) << s.ToString();
  }
  for (const char* owner : {"root", "1000", "5:root", "7:8"}) {
    CopyRequest req = Req({"f"}, std::string("/") + owner + "/");
    req.link = true;
    req.chown = owner;
    Digest root = PutContextDir(ctx_, cache_);
    auto source = MakeContextSource(cache_, root);
    ASSERT_TRUE(ApplyCopy(req, *source, empty).ok()) << owner;
  }
  EXPECT_EQ(Tree(empty),
            "1000 d 755 1000:1000\n1000/f f 644 1000:1000\n5:root d 755 5:0\n5:root/f f 644 5:0\n"
            "7:8 d 755 7:8\n7:8/f f 644 7:8\nroot d 755 0:0\nroot/f f 644 0:0\n");
  EXPECT_TRUE(LinkedCopy(true, ""));
  EXPECT_FALSE(LinkedCopy(true, "600")) << "BuildKit links no copy with --chmod";
  EXPECT_FALSE(LinkedCopy(false, ""));
}

// Through the executor: a linked copy is a layer of its own, applied over the image.
class LinkTest : public WorkerFixture {
 protected:
  void SetUp() override {
    WorkerFixture::SetUp();
    if (HasFatalFailure()) return;
    const std::string rootfs = tmp_.path() + "/base";
    InstallBusybox(rootfs, {"sh", "stat", "cat", "ls"});
    fs::create_directories(rootfs + "/opt/real");
    fs::create_directories(rootfs + "/opt/r2");
    fs::create_symlink("/opt/real", rootfs + "/app");
    fs::create_symlink("/opt/r2", rootfs + "/app2");
    fs::create_directories(rootfs + "/priv");
    ::chmod((rootfs + "/priv").c_str(), 0700);
    EXPECT_EQ(::chown((rootfs + "/priv").c_str(), 1000, 1000), 0);
    Write(rootfs + "/adir/x", "old\n");
    base_ = PutLayer(rootfs, "base");
    Write(tmp_.path() + "/ctx/f", "f\n");
    context_ = PutContextDir(tmp_.path() + "/ctx", cache_);
  }
  StepSpec Copy(const std::string& dest, bool link, const std::string& chmod = "") {
    StepSpec s;
    s.key = "copy-" + dest + (link ? "-link" : "") + chmod;
    s.kind = StepKind::kCopy;
    s.line = 2;
    s.text = "COPY";
    s.sources = {"f"};
    s.dest = dest;
    s.link = link;
    s.chmod = chmod;
    s.context_root = context_;
    return s;
  }
  LayerRef base_;
  Digest context_;
};

TEST_F(LinkTest, LinkedCopyReplacesTheImagesLinksAndDirectoryModes) {
  StepSpec check;
  check.key = "check";
  check.kind = StepKind::kRun;
  check.text = "RUN stat";
  check.env = {"PATH=/bin"};
  check.argv = {"/bin/sh", "-c",
                "stat -c '%n %F %a %u:%g' /app /app/f /priv /adir /app2 /opt/r2/f; "
                "ls /opt/real; cat /adir"};
  StageTask task;
  task.task_id = "link";
  task.base_layers = {base_};
  task.steps = {Copy("/app/", true), Copy("/priv/f", true), Copy("/adir", true),
                Copy("/app2/f", true, "600"), check};
  Executor ex(options_);
  std::string log;
  TaskDone done = ex.Run(task, cache_, [&](const TaskEvent& e) {
    if (e.kind == TaskEvent::Kind::kLog) log += e.log;
  });
  ASSERT_TRUE(done.status.ok()) << done.status.ToString() << "\n" << log;
  EXPECT_EQ(log,
            "/app directory 755 0:0\n"
            "/app/f regular file 644 0:0\n"
            "/priv directory 755 0:0\n"  // the layer's /priv wins over the image's 0700 1000:1000
            "/adir regular file 644 0:0\n"
            "/app2 symbolic link 777 0:0\n"  // --chmod: an ordinary copy, through the link
            "/opt/r2/f regular file 600 0:0\n"
            "f\n")
      << "/opt/real stays empty";
  // The linked layer holds the directories it made, /app as a directory.
  auto bytes = cache_.ReadBytes(done.layers[0].toc);
  ASSERT_TRUE(bytes.ok());
  auto toc = Toc::Parse(*bytes);
  ASSERT_TRUE(toc.ok());
  std::string paths;
  for (const TocEntry& e : toc->entries) paths += e.path + ":" + static_cast<char>(e.type) + " ";
  EXPECT_EQ(paths, "app:d app/f:f ");
}

}  // namespace
}  // namespace stagefarm::worker
