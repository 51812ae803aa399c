# Build stage: modules first, so code changes reuse the download layer.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /epoxy-extensions .

# Final stage: the static binary alone, as a non-root user. kubeadm and
# kubectl come from the host or a volume (-bin-dir), and the kubeconfig they
# use (-kubeconfig) must be readable by uid 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /epoxy-extensions /epoxy-extensions
USER 65532:65532
EXPOSE 8800
ENTRYPOINT ["/epoxy-extensions"]
