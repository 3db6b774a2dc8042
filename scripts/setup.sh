#!/usr/bin/env bash
# Installs the Debian packages modsquad builds and tests against, only when one is missing.
# Silent and fast (one dpkg query) when everything is present. Run by `make` and `make test`.
set -euo pipefail

packages=(
  build-essential pkg-config
  libyaml-dev            # config parsing
  libpng-dev             # PNG labels and images
  libjpeg62-turbo-dev    # PASCAL JPEG images
  libopenblas-openmp-dev # cblas_sgemm, threaded with OpenMP
  libmatio-dev           # PASCAL .mat annotations
  libopenmpi-dev openmpi-bin  # data-parallel training on CPUs
  libcriterion-dev       # test framework
  clang libclang-rt-14-dev llvm  # libFuzzer + ASan/UBSan runtimes, llvm-symbolizer (make fuzz)
  gnuplot-nox python3    # training curves (scripts/plot_run)
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$status" = "installed" ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "scripts/setup.sh: missing packages: ${missing[*]}" >&2
    echo "  run as root: apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
else SUDO=; fi

echo "scripts/setup.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
