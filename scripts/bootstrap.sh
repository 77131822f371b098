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

python_env() {
  local py=${PYTHON:-python3}
  if [[ ! -x .venv/bin/python ]]; then
    log "creating .venv with $($py --version)"
    "$py" -m venv .venv
  fi
  # Reinstall only when the dependency list changed since the last install.
  local stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
  if [[ ! -f $stamp ]]; then
    log "installing the project and its extras (llama-cpp-python builds from source once; pip caches the wheel)"
    .venv/bin/python -m pip install -q --upgrade pip
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
