#!/usr/bin/env bash
# Installs every system package nanochat-c needs on Debian 12 (bookworm).
# Idempotent and non-interactive: packages already present are skipped.
#   scripts/setup.sh          build + test dependencies
#   scripts/setup.sh --dev    also tools for regenerating fixtures and for the
#                             PyTorch baselines in bench/ (python3-torch with
#                             OpenBLAS: without it torch falls back to the
#                             reference BLAS, ~40x slower)
set -euo pipefail

pkgs=(
  build-essential cmake pkg-config git
  llvm-19-dev libzstd-dev libedit-dev libffi-dev libncurses-dev   # LLVM 19 C API (+ static-link deps)
  libxml2-dev zlib1g-dev                                          # XML IR, PNG/gzip
  ocl-icd-opencl-dev opencl-c-headers pocl-opencl-icd clinfo      # OpenCL + PoCL CPU device
  libcriterion-dev                                                # tests
  libpcre2-dev                                                    # tokenizer split regex
  libjansson-dev                                                  # JSON (safetensors headers, checkpoint meta, tokenizer, API)
  libopenmpi-dev openmpi-bin                                      # data-parallel training (mpirun)
  libyaml-dev                                                     # CORE eval bundle (core.yaml)
  libmicrohttpd-dev                                               # HTTP server (nanochat serve)
  chromium chromium-driver                                        # tests: headless browser for the web UI test
  bible-kjv bible-kjv-text dict-gcide dict-jargon fortunes wamerican  # default pretraining corpus (nanochat data corpus; `bible` prints the KJV)
)
if [[ "${1:-}" == "--dev" ]]; then pkgs+=(python3-torch python3-numpy libopenblas0-pthread); fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "setup: all system packages present"
