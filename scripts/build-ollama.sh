#!/usr/bin/env bash
# Builds the Ollama server (CPU, cgo: its Go module carries the llama.cpp/ggml sources)
# from its Go module at the version pinned below, into a cache folder outside the repo
# named by version. A second run is a no-op. The engines' tests serve a GGUF with it.
#
#   scripts/build-ollama.sh        # prints the path of the ollama binary last
set -euo pipefail

OLLAMA_VERSION=0.17.4
# llama.cpp's vendor/ folder is left out of Go module zips (the go command drops every
# vendor/ directory), so its three single-header libraries come from packages instead:
# nlohmann-json and stb from Debian, miniaudio from the sdist of its Python binding.
MINIAUDIO_SDIST_VERSION=1.71

cache=${VOICE_OPERATOR_CACHE:-$HOME/.cache/voice-operator}
out="$cache/ollama-$OLLAMA_VERSION"
vendor="$cache/build/ollama-vendor"

log() { printf '[ollama] %s\n' "$*" >&2; }

vendor_headers() {
  if [[ ! -f /usr/include/nlohmann/json_fwd.hpp || ! -f /usr/include/stb/stb_image.h ]]; then
    log "installing nlohmann-json3-dev and libstb-dev"
    local sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq nlohmann-json3-dev libstb-dev >/dev/null
  fi
  if [[ ! -f $vendor/miniaudio/miniaudio.h ]]; then
    log "fetching miniaudio.h from the miniaudio $MINIAUDIO_SDIST_VERSION sdist"
    local tmp
    tmp=$(mktemp -d)
    python3 -m pip download --quiet --no-deps --no-binary :all: -d "$tmp" \
      "miniaudio==$MINIAUDIO_SDIST_VERSION"
    tar -xzf "$tmp"/miniaudio-*.tar.gz -C "$tmp"
    mkdir -p "$vendor/miniaudio"
    cp "$tmp"/miniaudio-*/miniaudio/miniaudio.h "$vendor/miniaudio/"
    rm -rf "$tmp"
  fi
}

if [[ ! -f $out/.complete ]]; then
  start=$SECONDS
  vendor_headers
  log "building ollama v$OLLAMA_VERSION (cgo, CPU only; takes several minutes cold)"
  rm -rf "$out" && mkdir -p "$out"
  # The module's go directive (1.24) is older than the installed toolchain: stay local.
  export GOTOOLCHAIN=${GOTOOLCHAIN:-local}
  export CGO_ENABLED=1
  export CGO_CPPFLAGS="-I$vendor"
  # Debug info in the C/C++ objects slows the compile and is never read.
  export CGO_CFLAGS="-O2" CGO_CXXFLAGS="-O2"
  export GOFLAGS="-buildvcs=false -trimpath"
  GOBIN="$out" go install \
    -ldflags "-s -w -X github.com/ollama/ollama/version.Version=$OLLAMA_VERSION" \
    "github.com/ollama/ollama@v$OLLAMA_VERSION"
  touch "$out/.complete"
  log "ollama ready ($((SECONDS - start)) s)"
fi
echo "$out/ollama"
