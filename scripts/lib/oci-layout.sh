# Sourced by the make-*-image scripts: writes a one-layer OCI image layout from a rootfs directory.
#
#   write_oci_layout ROOTFS DEST NAME CONFIG_JSON CREATED_BY [--gzip]
#
# ROOTFS is tarred with byte-sorted entries, fixed mtimes and numeric owners, so the layer depends
# only on the content; the tar format is $OCI_TAR_FORMAT (default posix; ustar is enough for
# small trees with short names). CONFIG_JSON is the image config's "config" object (Env, Cmd, ...);
# the architecture is this machine's; CREATED_BY is the layer's history entry. index.json names
# the image NAME. With --gzip the layer blob is gzip-compressed (gzip -n: no name or time in the
# header). Prints the manifest digest.

oci_sha() { sha256sum "$1" | cut -d' ' -f1; }
oci_size() { stat -c %s "$1"; }

write_oci_layout() {
  local root=$1 dest=$2 name=$3 config_obj=$4 created_by=$5 gzip_layer=0
  [[ ${6:-} == --gzip ]] && gzip_layer=1
  local arch
  case $(uname -m) in
    x86_64) arch=amd64 ;;
    aarch64) arch=arm64 ;;
    *) arch=$(uname -m) ;;
  esac
  local work
  work=$(mktemp -d "${TMPDIR:-/tmp}/oci-layout.XXXXXX")

  local layer=$work/layer.tar
  local format=${OCI_TAR_FORMAT:-posix} pax=()
  # PAX headers named without the process id and without access or change times.
  [[ $format == posix ]] && pax=(--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime)
  (cd "$root" && tar --format="$format" "${pax[@]}" --sort=name --mtime=@0 --owner=0 --group=0 \
    --numeric-owner -cf "$layer" -- *)
  local diff_id layer_blob=$layer layer_media=application/vnd.oci.image.layer.v1.tar
  diff_id=$(oci_sha "$layer")
  if ((gzip_layer)); then
    gzip -n -9 -c "$layer" >"$work/layer.tar.gz"
    layer_blob=$work/layer.tar.gz
    layer_media=application/vnd.oci.image.layer.v1.tar+gzip
  fi
  mkdir -p "$dest/blobs/sha256"
  local layer_digest layer_size
  layer_digest=$(oci_sha "$layer_blob")
  layer_size=$(oci_size "$layer_blob")
  mv "$layer_blob" "$dest/blobs/sha256/$layer_digest"

  local config=$work/config.json
  printf '%s' '{"architecture":"'"$arch"'","config":'"$config_obj"',"history":[{"created_by":"'"$created_by"'"}],"os":"linux","rootfs":{"diff_ids":["sha256:'"$diff_id"'"],"type":"layers"}}' >"$config"
  local config_digest
  config_digest=$(oci_sha "$config")
  cp "$config" "$dest/blobs/sha256/$config_digest"

  local manifest=$work/manifest.json
  printf '%s' '{"config":{"digest":"sha256:'"$config_digest"'","mediaType":"application/vnd.oci.image.config.v1+json","size":'"$(oci_size "$config")"'},"layers":[{"digest":"sha256:'"$layer_digest"'","mediaType":"'"$layer_media"'","size":'"$layer_size"'}],"mediaType":"application/vnd.oci.image.manifest.v1+json","schemaVersion":2}' >"$manifest"
  local manifest_digest
  manifest_digest=$(oci_sha "$manifest")
  cp "$manifest" "$dest/blobs/sha256/$manifest_digest"

  printf '%s' '{"imageLayoutVersion":"1.0.0"}' >"$dest/oci-layout"
  printf '%s' '{"manifests":[{"annotations":{"org.opencontainers.image.ref.name":"'"$name"'"},"digest":"sha256:'"$manifest_digest"'","mediaType":"application/vnd.oci.image.manifest.v1+json","size":'"$(oci_size "$manifest")"'}],"mediaType":"application/vnd.oci.image.index.v1+json","schemaVersion":2}' >"$dest/index.json"
  rm -rf "$work"
  echo "sha256:$manifest_digest"
}
