#!/usr/bin/env bash
# build-release.sh - the container image's build stage (deploy/Dockerfile),
# also run by deploy/check-debian-root.sh: a portable release build of ctxd
# and ctxctl, staged as a file tree plus the list of Debian packages that
# hold the shared libraries they load.
#
#   bash deploy/install-deps.sh && bash deploy/build-release.sh OUT
#
# OUT/root/            usr/bin/ctxd, usr/bin/ctxctl,
#                      usr/share/ctxd/ctxd-mini.gguf (model.builtin's default),
#                      etc/ctxd/ctxd.conf (deploy/ctxd.conf)
# OUT/runtime-packages.txt  one package a line (from ldd + dpkg -S)
# OUT/runtime-setup.sh      what the runtime stage runs (deploy/runtime-setup.sh)
#
# llama.cpp is built without -march=native (CTXD_LLAMA_NATIVE=OFF): the image
# must run on any x86-64 host, not only on the one that built it.
set -euo pipefail

out=${1:?usage: build-release.sh OUTDIR}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bdir=${CTXD_RELEASE_BUILD_DIR:-$root/build-release}
jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}

cmake -S "$root" -B "$bdir" -DCMAKE_BUILD_TYPE=Release \
  -DCTXD_LLAMA_NATIVE=OFF \
  -DCTXD_BUILTIN_MODEL_PATH=/usr/share/ctxd/ctxd-mini.gguf
cmake --build "$bdir" -j"$jobs" --target ctxd_bin ctxctl

rm -rf "$out"
mkdir -p "$out/root/usr/bin" "$out/root/usr/share/ctxd" "$out/root/etc/ctxd"
install -m 0755 -s "$bdir/ctxd" "$bdir/ctxctl" "$out/root/usr/bin/"
install -m 0644 "$root/index/model/ctxd-mini.gguf" "$out/root/usr/share/ctxd/"
install -m 0644 "$root/deploy/ctxd.conf" "$out/root/etc/ctxd/ctxd.conf"
install -m 0755 "$root/deploy/runtime-setup.sh" "$out/runtime-setup.sh"

# The package of each shared library the binaries load. ldd names the path
# the loader found, dpkg records the path the package shipped: with merged
# /usr and alternatives (libblas.so.3 -> openblas) these differ, so try the
# path, its /usr-less or /usr-ful twin and its resolved target.
owner() {
  local lib=$1 real c
  real=$(readlink -f "$lib")
  for c in "$lib" "$real" "${lib#/usr}" "/usr$lib" "${real#/usr}" "/usr$real"; do
    if dpkg -S "$c" >/dev/null 2>&1; then
      dpkg -S "$c" | head -n1 | cut -d: -f1
      return 0
    fi
  done
  echo "build-release: no package holds $lib" >&2
  return 1
}
libs=$(ldd "$bdir/ctxd" "$bdir/ctxctl" | awk '/=> not found/ {print "MISSING:" $1} /=> \// {print $3}' | sort -u)
if grep -q '^MISSING:' <<<"$libs"; then
  echo "build-release: unresolved libraries: $(grep '^MISSING:' <<<"$libs" | tr '\n' ' ')" >&2
  exit 1
fi
for l in $libs; do owner "$l"; done | sort -u >"$out/runtime-packages.txt"
echo "build-release: staged in $out; runtime packages: $(tr '\n' ' ' <"$out/runtime-packages.txt")"
