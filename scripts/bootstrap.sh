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
    log "building llama-cpp-python $LLAMA_CPP_PYTHON_VERSION from source (portable, a few minutes, once)"
    mkdir -p "$folder"
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" "$py" -m pip wheel -q --no-cache-dir --no-deps \
      -w "$folder" "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
  fi
  compgen -G "$folder/*.whl"
}

python_env() {
  local py=${PYTHON:-python3}
  if [[ ! -x .venv/bin/python ]]; then
    log "creating .venv with $($py --version)"
    "$py" -m venv .venv
  fi
  # Reinstall only when the dependency list changed since the last install.
  local stamp
  stamp=.venv/.installed-$( (cat pyproject.toml scripts/bootstrap.sh; grep '^LLAMA_' scripts/versions.env) | sha256sum | cut -c1-16)
  if [[ ! -f $stamp ]]; then
    log "installing the project and its extras"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q --force-reinstall --no-deps "$(llama_wheel)"
    .venv/bin/python -m pip install -q -e '.[all]'
    rm -f .venv/.installed-* && touch "$stamp"
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
  bash scripts/build-testground.sh >/dev/null
  bash scripts/build-node.sh >/dev/null
  bash scripts/build-ollama.sh >/dev/null
}

# The operator, engine and model-mirror images the node tier runs (no registry needed).
images() {
  bash scripts/build-images.sh >/dev/null
}

case $what in
  python) python_env ;;
  go) go_programs ;;
  llama-wheel) llama_wheel ;;
  images) images ;;
  all) system_packages; python_env; go_programs; images ;;
  *) echo "usage: $0 [all|python|go|images|llama-wheel]" >&2; exit 2 ;;
esac
