# Build stage: modules first, so code changes reuse the download layer. The
# root go.mod is the server's alone (the tests and tools are modules of their
# own), so the download fetches only what the server needs. GOWORK=off: the
# build reads that go.mod, not the go.work that ties in the tools' modules.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOWORK=off go build -trimpath -ldflags="-s -w" -o /epoxy-extensions .

# Final stage: the static binary alone. It starts as root, as M-Lab's
# systemd unit expects (it mounts /etc/kubernetes, whose admin.conf is root's
# with mode 0600, and passes KUBECONFIG and -bin-dir /opt/bin): the server
# reads the kubeconfig, copies it into a folder only uid 65532 can read, and
# then runs as 65532:65532 for good (RUN_AS, the -run-as flag), with kubectl
# (from /opt/bin) run as that user too. `--env RUN_AS=` keeps root; `--user
# 65532:65532` starts unprivileged, with a kubeconfig that user can read.
FROM gcr.io/distroless/static-debian12
COPY --from=build /epoxy-extensions /epoxy-extensions
USER 0:0
ENV RUN_AS=65532:65532
EXPOSE 8800
ENTRYPOINT ["/epoxy-extensions"]
