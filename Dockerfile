# natsgate: a static binary on a distroless, non-root base.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The build context leaves .git out, so the toolchain cannot stamp the
# version and commit: pass them, as natsgate version and
# natsgate_build_info then show them:
#   docker build --build-arg VERSION=$(git describe --tags --always) --build-arg REVISION=$(git rev-parse HEAD) .
ARG VERSION=""
ARG REVISION=""
RUN CGO_ENABLED=0 go build -trimpath \
    -ldflags="-s -w -X github.com/natsgate/natsgate/internal/buildinfo.version=${VERSION} -X github.com/natsgate/natsgate/internal/buildinfo.revision=${REVISION}" \
    -o /out/natsgate ./cmd/natsgate \
 && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/sample-worker ./cmd/sample-worker

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/natsgate /out/sample-worker /usr/local/bin/
COPY configs/ /etc/natsgate/
USER nonroot:nonroot
# public listener, admin listener (health, metrics, dashboard), embedded NATS
EXPOSE 8080 9090 4222
# The image has no shell and no curl: natsgate health asks /readyz on the
# admin listener the config names (over HTTPS when it has admin.tls) and
# exits 0 when ready, 1 otherwise. Serving another config file? Give the
# health check the same one.
HEALTHCHECK --interval=10s --timeout=10s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/natsgate", "health", "--config", "/etc/natsgate/natsgate.yaml"]
ENTRYPOINT ["/usr/local/bin/natsgate"]
CMD ["serve", "--config", "/etc/natsgate/natsgate.yaml"]
