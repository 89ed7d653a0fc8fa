# stagefarm's own image: one binary for every role (cache, coordinator, worker, build, health).
#
#   stagefarm build -t stagefarm .        (or docker build -t stagefarm .)
#
# With stagefarm, import a Debian 12 base first as debian:bookworm (an OCI layout from
# scripts/make-debian-image: stagefarm image import DIR debian:bookworm). The RUN steps use apt,
# so the workers need their default network policy.
# --- builder: the toolchain and the -dev packages (the list in scripts/install-deps) -----------
FROM debian:bookworm AS builder
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends \
      build-essential cmake pkg-config ca-certificates \
      libzmq3-dev cppzmq-dev librocksdb-dev libcapnp-dev capnproto libssl-dev prometheus-cpp-dev \
      libarchive-dev nlohmann-json3-dev libcli11-dev \
      libcurl4-openssl-dev libzstd-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only the sources the binary needs: a change to tests, docs or the chart rebuilds nothing.
COPY CMakeLists.txt ./
COPY cmake cmake
COPY common common
COPY cache-server cache-server
COPY worker worker
COPY coordinator coordinator
COPY cli cli
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release \
      -DSTAGEFARM_BUILD_TESTS=OFF -DSTAGEFARM_BUILD_BENCH=OFF \
 && cmake --build /build --target stagefarm -j"$(nproc)" \
 && strip /build/cli/stagefarm \
 && install -D -m 0755 /build/cli/stagefarm /out/usr/local/bin/stagefarm

# --- runtime: the shared libraries stagefarm links, crun for the workers' sandboxes -----------
FROM debian:bookworm
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends \
      ca-certificates crun \
      libzmq5 librocksdb7.8 libcapnp-0.9.2 libssl3 libprometheus-cpp-core1.0 \
      libprometheus-cpp-pull1.0 libarchive13 libcurl4 libzstd1 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 stagefarm \
 && useradd --system --uid 65532 --gid 65532 --home-dir /var/lib/stagefarm --create-home stagefarm
COPY --from=builder /out/ /
# The coordinator and the cache server run as this user (the Helm chart sets it too); a worker
# needs root and a privileged container for its sandboxes.
USER 65532:65532
ENV STAGEFARM_HOME=/var/lib/stagefarm
VOLUME /var/lib/stagefarm
EXPOSE 7700 7701 9102
ENTRYPOINT ["stagefarm"]
CMD ["--help"]
