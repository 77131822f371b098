#!/usr/bin/env bash
# Builds the test ground's programs from their Go modules at the versions pinned in
# versions.env, each into its own folder of the cache (outside the repo) named by
# version, then points $cache/assets/ at them. A second run costs seconds.
#
#   scripts/build-testground.sh            # all programs
#   scripts/build-testground.sh kwok helm  # just these
#   scripts/build-testground.sh minio      # the S3 server of tests/fetch
#
# Prints the assets folder last (the envtest convention: one folder of binaries).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache=${VOICE_OPERATOR_CACHE:-$HOME/.cache/voice-operator}
assets="$cache/assets"
mkdir -p "$assets" "$cache/build"

# Go >= 1.27 turns on encoding/json/v2, which breaks the apiserver's OpenAPI output.
export GOEXPERIMENT=nojsonv2
export GOFLAGS="-buildvcs=false -trimpath"
export CGO_ENABLED=0

log() { printf '[testground] %s\n' "$*" >&2; }

# Runs "$@" (which builds into $out) unless $out is complete; links its programs into assets.
build_into() {
  local out=$1 && shift
  if [[ ! -f $out/.complete ]]; then
    rm -rf "$out" && mkdir -p "$out"
    "$@"
    touch "$out/.complete"
  fi
  local f
  for f in "$out"/*; do ln -sfn "$f" "$assets/$(basename "$f")"; done
}

# The k8s.io/kubernetes module points its staging modules at ./staging with replace
# directives, which a consumer cannot follow: one module per Kubernetes version pins each to
# the matching v0.x release. Every program of that version (this script's and
# build-node.sh's) builds in it, so they share its go.sum and the Go build cache.
kubernetes_module() {
  local v=$K8S_VERSION dir="$cache/build/kubernetes-$K8S_VERSION"
  local staging=(api apiextensions-apiserver apimachinery apiserver cli-runtime client-go
    cloud-provider cluster-bootstrap code-generator component-base component-helpers
    controller-manager cri-api cri-client cri-streaming csi-translation-lib
    dynamic-resource-allocation endpointslice externaljwt kms kube-aggregator
    kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics mount-utils
    pod-security-admission sample-apiserver streaming)
  mkdir -p "$dir"
  if [[ ! -f $dir/go.mod ]]; then
    {
      echo "module voice-operator.local/testground/kubernetes"
      echo "go 1.26.0"
      echo "require k8s.io/kubernetes v$v"
      echo "replace ("
      for m in "${staging[@]}"; do echo "  k8s.io/$m => k8s.io/$m v0.${v#1.}"; done
      echo ")"
    } >"$dir/go.mod.$$"
    mv "$dir/go.mod.$$" "$dir/go.mod"
  fi
  echo "$dir"
}

# Builds k8s.io/kubernetes/cmd/<name> for each name after $1 into the folder $1.
kubernetes_commands() {
  local v=$K8S_VERSION out=$1 dir c && shift
  dir=$(kubernetes_module)
  log "building $* v$v"
  for c in "$@"; do (cd "$dir" && go get "k8s.io/kubernetes/cmd/$c@v$v"); done
  local ver="-X k8s.io/component-base/version.gitVersion=v$v"
  ver+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${v#1.}"
  ver+=" -X k8s.io/client-go/pkg/version.gitVersion=v$v"
  for c in "$@"; do
    (cd "$dir" && go build -ldflags "-s -w $ver" -o "$out/$c" "k8s.io/kubernetes/cmd/$c")
  done
}

kubernetes_programs() {
  kubernetes_commands "$1" kube-apiserver kube-controller-manager kube-scheduler kubectl
}

# etcd's own main module carries replace directives too; a two-line main around
# etcdmain builds the same server.
etcd_program() {
  local v=$ETCD_VERSION out=$1 dir="$cache/build/etcd-$ETCD_VERSION"
  log "building etcd v$v"
  rm -rf "$dir" && mkdir -p "$dir" && cd "$dir"
  printf 'module voice-operator.local/testground/etcd\n\ngo 1.26.0\n' >go.mod
  cat >main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  go get "go.etcd.io/etcd/server/v3@v$v"
  go mod tidy
  go build -ldflags "-s -w" -o "$out/etcd" .
}

kwok_program() {
  log "building kwok v$KWOK_VERSION"
  GOBIN="$1" go install -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION"
}

helm_program() {
  log "building helm v$HELM_VERSION"
  GOBIN="$1" go install \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
}

minio_program() {
  log "building minio $MINIO_VERSION"
  GOBIN="$1" go install -ldflags "-s -w" "github.com/minio/minio@$MINIO_VERSION"
}

build_etcd() { build_into "$cache/etcd-$ETCD_VERSION" etcd_program "$cache/etcd-$ETCD_VERSION"; }
build_kubernetes() {
  build_into "$cache/kubernetes-$K8S_VERSION" kubernetes_programs "$cache/kubernetes-$K8S_VERSION"
}
build_kwok() { build_into "$cache/kwok-$KWOK_VERSION" kwok_program "$cache/kwok-$KWOK_VERSION"; }
build_helm() { build_into "$cache/helm-$HELM_VERSION" helm_program "$cache/helm-$HELM_VERSION"; }
build_minio() {
  build_into "$cache/minio-$MINIO_VERSION" minio_program "$cache/minio-$MINIO_VERSION"
}

# build-node.sh sources this file for its helpers; run as a script, it builds.
[[ ${BASH_SOURCE[0]} == "$0" ]] || return 0
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(etcd kubernetes kwok helm minio)
for t in "${targets[@]}"; do
  start=$SECONDS
  "build_$t"
  log "$t ready ($((SECONDS - start)) s)"
done
echo "$assets"
