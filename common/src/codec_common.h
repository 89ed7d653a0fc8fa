// Readers and writers for the types in common.capnp (private to common/src).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "codec_util.h"
#include "common.capnp.h"
#include "stagefarm/common/layer_ref.h"
#include "stagefarm/common/remote_file.h"

namespace stagefarm::codec {

inline void Write(schema::Digest::Builder b, const Digest& d) {
  b.setHex(d.hex);
  b.setSize(d.size);
}

inline StatusOr<Digest> ReadDigest(schema::Digest::Reader r) {
  if (r.getHex().size() == 0) return Digest{};
  return Digest::FromHex(std::string_view(r.getHex().cStr(), r.getHex().size()), r.getSize());
}

inline void Write(schema::LayerRef::Builder b, const LayerRef& l) {
  Write(b.initDiffId(), l.diff_id);
  Write(b.initToc(), l.toc);
}

inline StatusOr<LayerRef> ReadLayerRef(schema::LayerRef::Reader r) {
  LayerRef l;
  SF_ASSIGN_OR_RETURN(l.diff_id, ReadDigest(r.getDiffId()));
  SF_ASSIGN_OR_RETURN(l.toc, ReadDigest(r.getToc()));
  return l;
}

template <typename ListBuilder>
void WriteRemoteFiles(ListBuilder b, const std::vector<RemoteFile>& files) {
  for (size_t i = 0; i < files.size(); ++i) {
    b[i].setUrl(files[i].url);
    Write(b[i].initDigest(), files[i].digest);
    b[i].setMtime(files[i].mtime);
    b[i].setCommit(files[i].commit);
    b[i].setKeepGitDir(files[i].keep_git_dir);
  }
}

template <typename ListReader>
StatusOr<std::vector<RemoteFile>> ReadRemoteFiles(ListReader r) {
  std::vector<RemoteFile> out;
  for (auto f : r) {
    RemoteFile file;
    file.url = Str(f.getUrl());
    SF_ASSIGN_OR_RETURN(file.digest, ReadDigest(f.getDigest()));
    file.mtime = f.getMtime();
    file.commit = Str(f.getCommit());
    file.keep_git_dir = f.getKeepGitDir();
    out.push_back(std::move(file));
  }
  return out;
}

template <typename ListBuilder>
void WriteStrings(ListBuilder b, const std::vector<std::string>& v) {
  for (size_t i = 0; i < v.size(); ++i) b.set(i, v[i]);
}

template <typename ListReader>
std::vector<std::string> ReadStrings(ListReader r) {
  std::vector<std::string> out;
  out.reserve(r.size());
  for (auto s : r) out.push_back(Str(s));
  return out;
}

template <typename ListBuilder>
void WriteMap(ListBuilder b, const std::map<std::string, std::string>& m) {
  size_t i = 0;
  for (const auto& [k, v] : m) {
    b[i].setKey(k);
    b[i].setValue(v);
    ++i;
  }
}

template <typename ListReader>
std::map<std::string, std::string> ReadMap(ListReader r) {
  std::map<std::string, std::string> out;
  for (auto kv : r) out[Str(kv.getKey())] = Str(kv.getValue());
  return out;
}

// Build secrets: id -> value (any bytes).
template <typename ListBuilder>
void WriteSecrets(ListBuilder b, const std::map<std::string, std::string>& m) {
  size_t i = 0;
  for (const auto& [id, value] : m) {
    b[i].setId(id);
    b[i].setValue(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(value.data()), value.size()));
    ++i;
  }
}

template <typename ListReader>
std::map<std::string, std::string> ReadSecrets(ListReader r) {
  std::map<std::string, std::string> out;
  for (auto s : r) out[Str(s.getId())] = Bytes(s.getValue());
  return out;
}

}  // namespace stagefarm::codec
