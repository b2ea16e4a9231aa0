#!/usr/bin/env bash
# install-deps.sh - install everything ctxd needs to build and test on
# Debian 12 (bookworm), with apt-get only. Idempotent: packages already
# present are left alone. Run as root (or with sudo available).
#
#   bash deploy/install-deps.sh
#
# Then, if tests/integration/node has a package.json, its npm packages
# (@grpc/grpc-js, @grpc/proto-loader) are installed there.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

SUDO=
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "install-deps: must run as root (or have sudo)" >&2; exit 1
  fi
fi

pkgs=(
  build-essential cmake pkg-config
  liblmdb-dev lmdb-utils
  libevent-dev
  libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
  libnghttp2-dev nghttp2-client
  libfaiss-dev libopenblas-dev
  libopenmpi-dev openmpi-bin
  libinih-dev libjansson-dev zlib1g-dev
  libssl-dev openssl
  python3-grpcio python3-grpc-tools python3-protobuf
  git python3-numpy python3-yaml
  clang libclang-rt-14-dev
  systemd
)
# systemd: systemd-analyze verify checks deploy/ctxd.service
# (tests/integration/test_deploy.py); nothing is started.
# Node: only when missing, so a newer node from elsewhere is kept.
if ! command -v node >/dev/null 2>&1; then pkgs+=(nodejs); fi
if ! command -v npm >/dev/null 2>&1; then pkgs+=(npm); fi

# Install only what's missing, so a second run neither hits the network nor
# needs apt's lock.
missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

export DEBIAN_FRONTEND=noninteractive
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "install-deps: all apt packages present"
fi

# Check the things the build and tests really use, so a broken install fails
# here and not halfway through CI.
for tool in cmake pkg-config protoc-c protoc cc c++ node npm git openssl; do
  command -v "$tool" >/dev/null || { echo "install-deps: $tool missing after install" >&2; exit 1; }
done
/usr/bin/python3 -c 'import grpc, grpc_tools.protoc, google.protobuf' || {
  echo "install-deps: /usr/bin/python3 cannot import grpc/grpc_tools/protobuf" >&2; exit 1; }
# numpy and yaml: llama.cpp's gguf-py, with which the model tests write
# their random-weight GGUFs (tests/model/make_random_gguf.py).
/usr/bin/python3 -c 'import numpy, yaml' || {
  echo "install-deps: /usr/bin/python3 cannot import numpy/yaml" >&2; exit 1; }

nodedir="$root/tests/integration/node"
stamp="$nodedir/node_modules/.package-lock.json"
if [ -f "$nodedir/package.json" ] && [ -f "$stamp" ] && [ "$stamp" -nt "$nodedir/package.json" ] \
   && { [ ! -f "$nodedir/package-lock.json" ] || [ "$stamp" -nt "$nodedir/package-lock.json" ]; }; then
  echo "install-deps: npm packages in tests/integration/node up to date"
elif [ -f "$nodedir/package.json" ]; then
  echo "install-deps: npm packages in tests/integration/node"
  if [ -f "$nodedir/package-lock.json" ]; then
    (cd "$nodedir" && npm ci --no-audit --no-fund --loglevel=error)
  else
    (cd "$nodedir" && npm install --no-audit --no-fund --loglevel=error)
  fi
fi
echo "install-deps: done"
