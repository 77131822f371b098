#!/usr/bin/env bash
# Builds what the test ground's real node runs (tests/testground/node.py), each into its
# own folder of the cache named by version, and links it into $cache/assets/ beside the
# control plane: kubelet and kube-proxy (from the same k8s.io/kubernetes module as the
# control plane), containerd 2.x with its runc shim and ctr, CoreDNS, the pause image
# (pause.c from that module, compiled static) and a busybox smoke-test image, both as
# docker archives for `ctr images import`. Installs the Debian packages the node needs
# (runc, CNI plugins, iptables, ...) when missing. A second run costs seconds.
#
#   scripts/build-node.sh                  # all of it
#   scripts/build-node.sh containerd pause # just these
#
# Prints the assets folder last.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The cache layout, the Go settings and the helpers (build_into, kubernetes_commands).
# shellcheck source=build-testground.sh
source "$here/build-testground.sh"

log() { printf '[node] %s\n' "$*" >&2; }

PACKAGES=(runc containernetworking-plugins iptables conntrack socat iproute2 umoci skopeo
  busybox-static gcc libc6-dev)
SMOKE_IMAGE=localhost/testground-smoke:1

build_packages() {
  local p missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    log "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

node_programs() { kubernetes_commands "$1" kubelet kube-proxy; }

containerd_programs() {
  local v=$CONTAINERD_VERSION m=github.com/containerd/containerd/v2
  log "building containerd, containerd-shim-runc-v2, ctr v$v"
  GOBIN="$1" go install \
    -ldflags "-s -w -X $m/version.Version=v$v -X $m/version.Package=$m" \
    "$m/cmd/containerd@v$v" "$m/cmd/containerd-shim-runc-v2@v$v" "$m/cmd/ctr@v$v"
}

coredns_program() {
  log "building coredns v$COREDNS_VERSION"
  GOBIN="$1" go install -ldflags "-s -w" "github.com/coredns/coredns@v$COREDNS_VERSION"
}

# An image of the files in folder $1 as a docker archive $2 named $3; the rest are
# `umoci config` options. No registry: umoci writes an OCI layout, skopeo converts it.
pack_image() {
  local rootfs=$1 archive=$2 name=$3 && shift 3
  local work layout tag=${name##*:}
  work=$(mktemp -d)
  layout="$work/oci:$tag"
  umoci init --layout "$work/oci"
  umoci new --image "$layout"
  umoci unpack --image "$layout" "$work/bundle" >/dev/null
  cp -a "$rootfs/." "$work/bundle/rootfs/"
  umoci repack --image "$layout" "$work/bundle"
  umoci config --image "$layout" --author=voice-operator-testground "$@"
  skopeo --insecure-policy copy -q "oci:$layout" "docker-archive:$archive:$name"
  rm -rf "$work"
}

# pause.c ships in the k8s.io/kubernetes module; its Makefile names the image's tag.
pause_image() {
  local src tag rootfs out=$1
  src="$(go env GOMODCACHE)/k8s.io/kubernetes@v$K8S_VERSION/build/pause"
  [[ -f $src/linux/pause.c ]] || go mod download "k8s.io/kubernetes@v$K8S_VERSION"
  tag=$(sed -n 's/^TAG ?= //p' "$src/Makefile")
  log "building the pause image localhost/pause:$tag"
  rootfs=$(mktemp -d)
  gcc -Os -Wall -Werror -static "-DVERSION=v$tag-k8s-v$K8S_VERSION" \
    -o "$rootfs/pause" "$src/linux/pause.c"
  pack_image "$rootfs" "$out/pause-image.tar" "localhost/pause:$tag" \
    --config.entrypoint=/pause --config.user=65535:65535
  rm -rf "$rootfs"
}

# What a pod's client does with in-cluster config (the ServiceAccount's token and CA, the
# kubernetes Service, or the server given): asks the apiserver who it is, prints the answer.
# busybox's own TLS cannot talk to a Go server (it signs with SHA-1 only).
IN_CLUSTER_WHOAMI='package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
)

const sa = "/var/run/secrets/kubernetes.io/serviceaccount/"

func main() {
	server := "https://" + net.JoinHostPort(os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT"))
	if len(os.Args) > 1 {
		server = os.Args[1]
	}
	token, err := os.ReadFile(sa + "token")
	check(err)
	ca, err := os.ReadFile(sa + "ca.crt")
	check(err)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		check(fmt.Errorf("no certificate in %sca.crt", sa))
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	review := `{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}`
	req, err := http.NewRequest("POST", server+"/apis/authentication.k8s.io/v1/selfsubjectreviews", strings.NewReader(review))
	check(err)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	check(err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	check(err)
	fmt.Println(strings.TrimSpace(string(body)))
	if resp.StatusCode/100 != 2 {
		os.Exit(1)
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
'

# A few MB: Debian's static busybox with its applets (sh, httpd, wget, nslookup, ...), and
# /bin/in-cluster-whoami.
smoke_image() {
  local rootfs a out=$1 src
  log "building the smoke image $SMOKE_IMAGE"
  rootfs=$(mktemp -d) src=$(mktemp -d)
  mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/www" && install -d -m 1777 "$rootfs/tmp"
  printf 'module voice-operator.local/testground/whoami\n\ngo 1.26.0\n' >"$src/go.mod"
  printf '%s' "$IN_CLUSTER_WHOAMI" >"$src/main.go"
  (cd "$src" && go build -ldflags "-s -w" -o "$rootfs/bin/in-cluster-whoami" .)
  rm -rf "$src"
  cp /bin/busybox "$rootfs/bin/busybox"
  for a in $(/bin/busybox --list); do [[ $a == busybox ]] || ln -s busybox "$rootfs/bin/$a"; done
  printf 'root:x:0:0:root:/:/bin/sh\napp:x:10001:10001:app:/tmp:/bin/sh\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\napp:x:10001:\n' >"$rootfs/etc/group"
  pack_image "$rootfs" "$out/smoke-image.tar" "$SMOKE_IMAGE" \
    --config.cmd=/bin/sh --config.user=10001:10001 --config.env=PATH=/bin
  rm -rf "$rootfs"
}

build_kubelet() {
  build_into "$cache/kubernetes-node-$K8S_VERSION" node_programs "$cache/kubernetes-node-$K8S_VERSION"
}
build_containerd() {
  build_into "$cache/containerd-$CONTAINERD_VERSION" containerd_programs \
    "$cache/containerd-$CONTAINERD_VERSION"
}
build_coredns() {
  build_into "$cache/coredns-$COREDNS_VERSION" coredns_program "$cache/coredns-$COREDNS_VERSION"
}
build_pause() { build_into "$cache/pause-k8s-$K8S_VERSION" pause_image "$cache/pause-k8s-$K8S_VERSION"; }
build_smoke() {
  # Keyed by the busybox Debian ships (an upgrade changes it) and what else goes in.
  local key
  key=$(printf '%s\n%s\n%s' "$(dpkg-query -W -f='${Version}' busybox-static)" \
    "$(go env GOVERSION)" "$IN_CLUSTER_WHOAMI" | sha256sum | cut -c1-12)
  build_into "$cache/smoke-$key" smoke_image "$cache/smoke-$key"
}

targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(packages kubelet containerd coredns pause smoke)
for t in "${targets[@]}"; do
  start=$SECONDS
  "build_$t"
  log "$t ready ($((SECONDS - start)) s)"
done
echo "$assets"
