#!/usr/bin/env bash
# Runs each engine (faster-whisper, whisper.cpp, llama.cpp) on the CPU and on a CUDA
# device and prints the speedup, on a machine with an NVIDIA GPU. The test suite runs on
# CPU only; this is the check of the GPU path.
#
#   scripts/gpu-check.sh [--repeats N]
#
# Needs the project's venv (scripts/bootstrap.sh python) with the CUDA builds of the
# engines' libraries: CTranslate2's wheels carry CUDA (they need cuBLAS and cuDNN 9), and
# llama.cpp and whisper.cpp must be compiled with it. With --install, this script
# reinstalls those two from source with CUDA first (a few minutes; needs the CUDA toolkit's
# nvcc), as engines/Dockerfile's VARIANT=cuda does.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
log() { printf '[gpu-check] %s\n' "$*" >&2; }

install=0
args=()
for arg in "$@"; do
  case $arg in
    --install) install=1 ;;
    *) args+=("$arg") ;;
  esac
done

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  log "no NVIDIA GPU here (nvidia-smi finds none): nothing to check"
  exit 2
fi
log "GPUs: $(nvidia-smi -L | tr '\n' ' ')"
py=.venv/bin/python
[[ -x $py ]] || { log "no .venv: run scripts/bootstrap.sh python first"; exit 2; }

if ((install)); then
  command -v nvcc >/dev/null || { log "--install needs the CUDA toolkit (nvcc)"; exit 2; }
  # shellcheck source=versions.env
  source scripts/versions.env
  log "building llama-cpp-python $LLAMA_CPP_PYTHON_VERSION and pywhispercpp with CUDA"
  CMAKE_ARGS="$LLAMA_CMAKE_ARGS -DGGML_CUDA=ON" GGML_CUDA=1 "$py" -m pip install -q \
    --force-reinstall --no-deps --no-cache-dir --no-binary pywhispercpp,llama-cpp-python \
    "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" pywhispercpp
fi

"$py" - <<'PY'
import ctranslate2, llama_cpp, _pywhispercpp
print("[gpu-check] CTranslate2 CUDA devices:", ctranslate2.get_cuda_device_count())
print("[gpu-check] llama.cpp GPU offload:", bool(llama_cpp.llama_supports_gpu_offload()))
print("[gpu-check] whisper.cpp:", _pywhispercpp.whisper_print_system_info().strip())
PY
exec "$py" benchmarks/gpu.py "${args[@]}"
