#!/usr/bin/env bash
# Installs everything the project needs on a fresh machine, idempotently:
# a Python venv with the project and its extras, and the Go programs the tests run
# (control plane, kwok, helm, Ollama), built into a cache outside the repo.
#
#   scripts/bootstrap.sh            # all of it
#   scripts/bootstrap.sh python     # just the venv
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
what=${1:-all}
log() { printf '[bootstrap] %s\n' "$*" >&2; }

cache=${VOICE_OPERATOR_CACHE:-$HOME/.cache/voice-operator}
LLAMA_CPP_PYTHON_VERSION=0.3.36
# A portable build: the default -march=native turns on llama.cpp's AMX kernels where the
# CPU has them, and those crash on the first prompt longer than one token on some hosts.
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"

# pip's wheel cache ignores CMAKE_ARGS, so the portable wheel is built once into our own
# cache, keyed by version and flags, and installed from there.
llama_wheel() {
  local key folder
  key=$(printf '%s %s' "$LLAMA_CPP_PYTHON_VERSION" "$LLAMA_CMAKE_ARGS" | sha256sum | cut -c1-12)
  folder="$cache/wheels/llama-cpp-python-$key"
  if ! compgen -G "$folder/*.whl" >/dev/null; then
    log "building llama-cpp-python $LLAMA_CPP_PYTHON_VERSION from source (portable, a few minutes, once)"
    mkdir -p "$folder"
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" .venv/bin/python -m pip wheel -q --no-cache-dir --no-deps \
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
  local stamp=.venv/.installed-$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)
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
  if [[ -f scripts/build-ollama.sh ]]; then bash scripts/build-ollama.sh >/dev/null; fi
}

case $what in
  python) python_env ;;
  go) go_programs ;;
  all) system_packages; python_env; go_programs ;;
  *) echo "usage: $0 [all|python|go]" >&2; exit 2 ;;
esac
