# syntax=docker/dockerfile:1
#
# Sluice's images, from one build stage:
#   docker build -t sluice .                                  # `sluice` target (the default, last stage)
#   docker build --target demoapi -t sluice-demoapi .          # the demo API of the compose stack
#   docker build --build-arg VERSION=$(git describe --tags --always) -t sluice .
#
# Both final images are distroless/static as the nonroot user: no shell, no package manager.
# Their health check is cmd/healthprobe (a GET that exits 0 on 2xx), since there is no curl.
# deploy/dockerfile_test.go checks this file: the Go version matches go.mod, the build context
# (.dockerignore) holds every file the build needs, and a binary built with these flags is
# static and reports VERSION. Pin the base images by digest (FROM image:tag@sha256:...) when
# you release; this repository's CI cannot pull images to resolve them.

# Keep in step with go.mod's `go` line (the test checks).
ARG GO_VERSION=1.26.8

# The build runs on the builder's own platform and cross-compiles (CGO_ENABLED=0), so
# `docker buildx build --platform linux/amd64,linux/arm64` needs no emulation.
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOTOOLCHAIN=local
# Modules first, in a cache mount: source edits do not re-download them.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=bind,source=go.mod,target=go.mod \
    --mount=type=bind,source=go.sum,target=go.sum \
    go mod download
ARG TARGETOS TARGETARCH
ARG VERSION=dev
# -trimpath: no build paths in the binary; -s -w: no symbol table or DWARF;
# -X main.version: what `sluice version` and the sluice_build_info metric report;
# -tags vtprotobuf: go-control-plane's generated marshalers for Envoy's messages (internal/grpccodec).
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    --mount=type=bind,target=. \
    GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -tags vtprotobuf -ldflags="-s -w -X main.version=${VERSION}" -o /out/ \
      ./cmd/sluice ./cmd/demoapi ./cmd/healthprobe

# The demo contacts API (docker-compose.yaml's `app`; envoy.yaml's `app` cluster).
FROM gcr.io/distroless/static-debian12:nonroot AS demoapi
ARG VERSION=dev
LABEL org.opencontainers.image.title="sluice-demoapi" \
      org.opencontainers.image.description="Sluice's demo contacts API (in-memory)" \
      org.opencontainers.image.source="https://github.com/sluicehq/sluice" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/demoapi /out/healthprobe /usr/local/bin/
USER 65532:65532
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/healthprobe", "http://127.0.0.1:8000/healthz"]
ENTRYPOINT ["/usr/local/bin/demoapi"]
CMD ["-listen", ":8000"]

# Sluice: gRPC (ext_proc, rate limit service, health) on 8081, admin HTTP (/metrics, /healthz,
# /readyz, /debug) on 9091. Mount the config at /etc/sluice (see docker-compose.yaml).
FROM gcr.io/distroless/static-debian12:nonroot AS sluice
ARG VERSION=dev
LABEL org.opencontainers.image.title="sluice" \
      org.opencontainers.image.description="Rate limits, caching and batching beside Envoy (ext_proc + ratelimit gRPC)" \
      org.opencontainers.image.source="https://github.com/sluicehq/sluice" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/sluice /out/healthprobe /usr/local/bin/
# 65532 is distroless's `nonroot`; numeric, so Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
EXPOSE 8081 9091
# /readyz: rules loaded and Redis answered once (a later Redis outage does not flip it).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/healthprobe", "http://127.0.0.1:9091/readyz"]
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["serve"]
