@0xc1a3f4e2b7d80002;
using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("stagefarm::schema");
# Types shared by the service schemas.

struct Digest {
  hex @0 :Text;     # 64 lowercase hex characters of a SHA-256
  size @1 :UInt64;
}

struct LayerRef {
  diffId @0 :Digest;   # the uncompressed layer tar
  toc @1 :Digest;      # its table of contents blob
}

struct KeyValue {
  key @0 :Text;
  value @1 :Text;
}

# A build secret (any bytes).
struct Secret {
  id @0 :Text;
  value @1 :Data;
}

# A file an ADD fetched from an http(s) URL, or a git repository it checked out, stored in the CAS
# (stagefarm/common/remote_file.h).
struct RemoteFile {
  url @0 :Text;
  digest @1 :Digest;  # the file, or the root of the checked-out tree (git)
  mtime @2 :Int64;    # seconds since the Unix epoch (Last-Modified, else 0; git: the commit's)
  commit @3 :Text;    # git: the commit checked out; empty for a file
  keepGitDir @4 :Bool;  # git: fetched for ADD --keep-git-dir=true
}
