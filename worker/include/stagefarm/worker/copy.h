// COPY and ADD: applying files from the build context (a tree in the CAS) or from another
// filesystem (a stage's or image's layers) onto a step's rootfs, with Docker's rules.
//
// The destination is the step's overlay merged dir, so what changes lands in the upper dir and
// becomes the step's layer. Destination paths are resolved inside that rootfs: its symlinks,
// absolute ones included, never lead outside it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "stagefarm/common/cache_client.h"
#include "stagefarm/common/digest.h"
#include "stagefarm/common/remote_file.h"
#include "stagefarm/common/status.h"

namespace stagefarm::worker {

// One file, directory or link of a copy source, as lstat would describe it.
struct SourceEntry {
  enum class Type { kFile, kDir, kSymlink, kOther };
  std::string name;
  Type type = Type::kFile;
  uint32_t mode = 0;  // permission bits incl. setuid/setgid/sticky
  // Owner and mtime are known for filesystem sources only; the build context carries neither.
  std::optional<std::pair<uid_t, gid_t>> owner;
  std::optional<struct timespec> mtime;
  std::string target;   // symlink target
  Digest digest;        // context files and directory nodes
  mode_t raw_mode = 0;  // kOther: file type bits, for mknod
  dev_t rdev = 0;       // kOther devices
  // Filesystem sources: identity of a file with several names, so hard links stay links.
  dev_t dev = 0;
  ino_t ino = 0;
  nlink_t nlink = 1;
};

// Where COPY reads from. Paths are relative to the source root ("" is the root). Not thread-safe.
class CopySource {
 public:
  virtual ~CopySource() = default;
  // "build context" or "stage": for messages.
  virtual std::string Describe() const = 0;
  // The entry at `path` without following a final symlink; nullopt if absent.
  virtual StatusOr<std::optional<SourceEntry>> Stat(const std::string& path) = 0;
  // The entries of directory `dir` (found at `path`), sorted by name.
  virtual StatusOr<std::vector<SourceEntry>> List(const std::string& path,
                                                  const SourceEntry& dir) = 0;
  // Writes the content of file `file` (found at `path`) to `out_fd`.
  virtual Status WriteContent(const std::string& path, const SourceEntry& file, int out_fd) = 0;
};

// The build context tree `root` in `cache` (borrowed; must outlive the source).
std::unique_ptr<CopySource> MakeContextSource(CacheClient& cache, const Digest& root);
// A directory on disk (e.g. a read-only overlay of a stage's layers), resolved as a root.
StatusOr<std::unique_ptr<CopySource>> MakeDirSource(const std::string& dir);

// The path below `dir` that `path` names when its symlinks are resolved inside `dir` as COPY
// resolves a source (copy_sources.h, the rule the keys follow too): "" for `dir` itself.
// NotFound when nothing is there, unless `may_be_missing` (WORKDIR through a dangling link
// names the directory it is to make).
StatusOr<std::string> ResolveSourceInDir(const std::string& dir, const std::string& path,
                                         bool may_be_missing = false);
// ADD's http(s) sources, fetched by the client into `cache` (borrowed): Stat(url) is a file named
// after the URL (RemoteFileName), mode 0600, mtime from Last-Modified (BuildKit's http source);
// a git repository is a directory (0755) holding the checked-out tree, its paths "<url>/<path>",
// every entry with the commit's time. A URL not in `files` is absent.
std::unique_ptr<CopySource> MakeRemoteSource(CacheClient& cache, std::vector<RemoteFile> files);

struct CopyRequest {
  // As written; each is copied in turn, as BuildKit does (one copy per source): wildcards (*, ?,
  // [..]) match per component, symlinks on a source's path are followed inside the source root.
  std::vector<std::string> sources;
  std::string dest;  // absolute, or relative to workdir; a trailing '/' (or "/.") = a dir
  std::string workdir = "/";
  std::string chown;  // --chown, resolved in the destination's /etc/passwd and /etc/group
  // --chmod, octal: the mode of what is copied, and (BuildKit's) of the directories it makes.
  std::string chmod;
  // The mtime of files whose source has none (the build context's): 0, or SOURCE_DATE_EPOCH
  // when the task sets one, so a layer never depends on when or where it was built.
  int64_t default_mtime = 0;
  std::string instruction = "COPY";  // for messages
  // COPY --parents: a source keeps its path (below a "/./" pivot, if it has one; see
  // copy_sources.h SplitParents), its parent directories made with their own modes and owners.
  bool parents = false;
  // --exclude: entries below a copied directory that match one of these patterns (relative to
  // it, .dockerignore syntax) are left out; a source itself is never excluded (BuildKit's rule).
  std::vector<std::string> excludes;
  // ADD: a source file that is a tar (plain, gzip, bzip2, xz or zstd, told by its content, not
  // its name) is unpacked into dest (a directory) instead of copied: `extract_archives` for
  // sources from the context or a stage (ADD's default; not with --unpack=false),
  // `extract_remote` for http(s) sources (only with --unpack=true). Entries keep the modes,
  // mtimes and owners of the tar (--chown, as BuildKit's, owns them all; --chmod is not applied);
  // names starting with "/" are taken below dest, ".." is refused; entries named ".wh.*" are
  // plain files. Needs `scratch_dir`, an empty directory outside the rootfs.
  bool extract_archives = false;
  bool extract_remote = false;
  std::string scratch_dir;
  // ADD: where sources that are http(s) URLs come from (MakeRemoteSource; borrowed). Such a file
  // is never unpacked; --chown and --chmod apply to it. Null: a URL source is an error.
  CopySource* remote = nullptr;
  // --link (when LinkedCopy): the rootfs given to ApplyCopy is an empty tree that becomes the
  // step's layer on its own (BuildKit's merge op), not the image: the destination never resolves
  // through the image's symlinks nor sees its files, and the directories the copy makes replace
  // the image's (their modes and owners) where the layer is applied. --chown then takes numeric
  // ids and "root" only: BuildKit does not read the image's /etc/passwd for a linked copy.
  bool link = false;
};

// Whether a COPY/ADD with these flags is a linked copy as above: --link without --chmod
// (BuildKit falls back to an ordinary copy when --chmod is given).
bool LinkedCopy(bool link, const std::string& chmod);

// Copies per BuildKit's rules, each source in turn: a directory source copies its contents into
// dest; a file goes to dest/<name> when dest ends with '/' or is (then) a directory, else to dest
// itself, replacing what is there. The destination is resolved in the rootfs (its symlinks
// followed inside it); missing directories are made, with --chmod's mode (else 0755) and
// --chown's owner. Owners are --chown's, else the source's own (filesystem sources) or 0:0 (the
// context). A missing source is NotFound: "COPY failed: file not found in build context: foo";
// a wildcard that matches nothing copies nothing and is no error (BuildKit's). FIFOs and device
// nodes are made as such. Files hard-linked together in a filesystem source stay hard-linked in
// one copy (as BuildKit does): the first name met is copied, the others are linked to it.
// An http(s) source is read from `request.remote` and goes to dest/<name> or dest as a file does;
// a git repository's tree goes to dest as a directory source does.
Status ApplyCopy(const CopyRequest& request, CopySource& source, const std::string& rootfs);

}  // namespace stagefarm::worker
