#!/usr/bin/env bash
# check-debian-root.sh - proves the install path on a bare Debian 12 where no
# container engine runs: makes fresh Debian 12 roots with debootstrap and
# runs the documented steps in them, so that a step missing from
# deploy/install-deps.sh or the Dockerfile cannot hide behind packages a
# developer machine already has.
#
#   sudo bash deploy/check-debian-root.sh [--full] [--keep] [--dir DIR]
#                                        [--mirror URL]
#
# 1. debootstrap --variant=minbase bookworm (the debian:12 image's content)
# 2. the repository's committed HEAD (git archive) copied to /src/ctxd
# 3. bash deploy/install-deps.sh              (README "Quick start")
# 4. bash deploy/build-release.sh /out        (the Dockerfile's build stage)
# 5. a second minbase root (the debian:12-slim stage) with only
#    bash /stage/runtime-setup.sh /stage      (the Dockerfile's runtime stage)
# 6. in it, as uid 10001: ctxd --config /etc/ctxd/ctxd.conf, the image's
#    HEALTHCHECK command (ctxctl status), a put and a search, SIGTERM -> 0
# 7. bash .ci/run --no-deps --quick           (in the build root: normal
#    build, every unit and integration test; --full: the whole CI with the
#    sanitizer builds)
#
# Where the host trusts CAs of its own (/usr/local/share/ca-certificates,
# e.g. a TLS-inspecting proxy in front of the npm registry), they are copied
# into the build root and node is told to use the system list
# (NODE_EXTRA_CA_CERTS); a plain network needs neither.
#
# Needs root (debootstrap, chroot, mounts), network access to the Debian
# mirror and the npm registry (llama.cpp's source comes from npm), and about
# 6 GiB in DIR (default: a new directory under /var/tmp, removed at the end
# unless --keep). Each stage prints its wall time; the last lines sum up.
# A documented check, not part of CI (it takes tens of minutes).
set -euo pipefail

full=0
keep=0
work=
mirror=http://deb.debian.org/debian
while [ $# -gt 0 ]; do
  case "$1" in
    --full) full=1 ;;
    --keep) keep=1 ;;
    --dir) work=$2; shift ;;
    --mirror) mirror=$2; shift ;;
    -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
    *) echo "check-debian-root: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[ "$(id -u)" -eq 0 ] || { echo "check-debian-root: run as root" >&2; exit 1; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rev=$(git -C "$repo" rev-parse HEAD)
if [ -z "$work" ]; then work=$(mktemp -d /var/tmp/ctxd-debroot.XXXXXX); fi
mkdir -p "$work"
work=$(cd "$work" && pwd)
broot=$work/build    # debian:12 + build dependencies
rroot=$work/runtime  # debian:12-slim + runtime libraries
log=$work/check.log
exec > >(tee -a "$log") 2>&1

t0=$(date +%s)
summary=()
current=
stage_t=$t0
stage() {
  local now
  now=$(date +%s)
  [ -n "$current" ] && summary+=("$(printf '%-44s %5ds' "$current" $((now - stage_t)))")
  current=$1
  stage_t=$now
  [ -n "$current" ] && echo && echo "=== $current (at $((now - t0))s) ==="
  return 0
}

mounted=() # mount points, unmounted in reverse order on exit
daemon_pid=
cleanup() {
  local rc=$? m i
  trap - EXIT INT TERM
  if [ -n "$daemon_pid" ]; then kill -9 "$daemon_pid" 2>/dev/null || true; fi
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
    umount -R -l "${mounted[i]}" 2>/dev/null || true
  done
  if [ "$rc" -eq 0 ]; then stage ""; else
    [ -n "$current" ] && summary+=("$(printf '%-44s FAILED after %ds' "$current" $(($(date +%s) - stage_t)))")
  fi
  echo
  echo "=== check-debian-root: $([ "$rc" -eq 0 ] && echo PASSED || echo "FAILED (exit $rc)") ==="
  echo "commit $rev, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores"
  for m in "${summary[@]}"; do echo "  $m"; done
  echo "  total $(($(date +%s) - t0))s"
  if [ "$keep" = 1 ]; then
    echo "kept $work (log: $log)"
  elif grep -q " $work/" /proc/mounts; then
    # Never delete through a mount that is still there (it would be /dev).
    echo "check-debian-root: mounts remain under $work; not removing it" >&2
  else
    cp "$log" "/var/tmp/ctxd-debroot-$(date -u +%Y%m%dT%H%M%S).log" 2>/dev/null || true
    rm -rf --one-file-system "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# chroot with the kernel file systems, name resolution and no service starts.
prepare_root() {
  local r=$1
  mount -t proc proc "$r/proc"; mounted+=("$r/proc")
  mount --rbind /sys "$r/sys"; mount --make-rslave "$r/sys"; mounted+=("$r/sys")
  mount --rbind /dev "$r/dev"; mount --make-rslave "$r/dev"; mounted+=("$r/dev")
  cp -L /etc/resolv.conf "$r/etc/resolv.conf"
  # The Debian installer and container engines write /etc/hosts; debootstrap
  # does not, and without it "localhost" does not resolve (test_ctxctl).
  [ -s "$r/etc/hosts" ] ||
    printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$r/etc/hosts"
  printf '#!/bin/sh\nexit 101\n' >"$r/usr/sbin/policy-rc.d"
  chmod 0755 "$r/usr/sbin/policy-rc.d"
}
# A clean environment, as a fresh machine's root shell (CI sets CI=true).
extra_env=()
in_root() {
  local r=$1
  shift
  chroot "$r" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb CI=true \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    "${extra_env[@]}" "$@"
}
# The host's own CAs, for a root that fetches over TLS (npm).
trust_host_cas() {
  local r=$1
  compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null || return 0
  echo "copying the host's local CA certificates into the root"
  mkdir -p "$r/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$r/usr/local/share/ca-certificates/"
  in_root "$r" bash -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends ca-certificates >/dev/null'
  extra_env=(NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt)
}

stage "debootstrap (host tool)"
if ! command -v debootstrap >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi
echo "work dir $work; commit $rev"

stage "debootstrap build root (minbase)"
mkdir -p "$work/debs"
debootstrap --variant=minbase --cache-dir="$work/debs" bookworm "$broot" "$mirror" >"$work/debootstrap-build.log" 2>&1 ||
  { tail -20 "$work/debootstrap-build.log"; exit 1; }
prepare_root "$broot"
trust_host_cas "$broot"

stage "copy the repository (git archive HEAD)"
mkdir -p "$broot/src/ctxd"
git -C "$repo" archive --format=tar HEAD | tar -x -C "$broot/src/ctxd"
du -sh "$broot/src/ctxd" | cut -f1

stage "deploy/install-deps.sh"
in_root "$broot" bash -c 'cd /src/ctxd && bash deploy/install-deps.sh'

stage "build-release.sh (image build stage)"
in_root "$broot" bash -c 'cd /src/ctxd && bash deploy/build-release.sh /out'

stage "debootstrap runtime root (minbase)"
debootstrap --variant=minbase --cache-dir="$work/debs" bookworm "$rroot" "$mirror" >"$work/debootstrap-runtime.log" 2>&1 ||
  { tail -20 "$work/debootstrap-runtime.log"; exit 1; }
prepare_root "$rroot"
cp -a "$broot/out" "$rroot/stage"

stage "runtime-setup.sh (image runtime stage)"
in_root "$rroot" bash /stage/runtime-setup.sh /stage
rm -rf "$rroot/stage"
du -sh --exclude=proc --exclude=sys --exclude=dev "$rroot" 2>/dev/null | cut -f1 | sed 's/^/runtime root size: /'

stage "smoke test as uid 10001 (the image's entrypoint and healthcheck)"
dlog=$rroot/tmp/ctxd.log
chroot --userspec=10001:10001 "$rroot" /usr/bin/env -i HOME=/var/lib/ctxd \
  PATH=/usr/bin:/bin OMP_WAIT_POLICY=PASSIVE \
  ctxd --config /etc/ctxd/ctxd.conf --listen 127.0.0.1:0 --metrics.listen 127.0.0.1:0 \
  2>"$dlog" &
daemon_pid=$!
addr=
for _ in $(seq 1 300); do
  addr=$(sed -n 's/.*msg=listening addr=\([^ ]*\).*/\1/p' "$dlog" | head -n1)
  [ -n "$addr" ] && break
  kill -0 "$daemon_pid" 2>/dev/null || { cat "$dlog"; exit 1; }
  sleep 0.2
done
[ -n "$addr" ] || { cat "$dlog"; echo "no listening line" >&2; exit 1; }
ctl() { chroot --userspec=10001:10001 "$rroot" /usr/bin/env -i PATH=/usr/bin:/bin ctxctl --addr "$addr" "$@"; }
st=$(ctl status)
echo "ctxctl status: $st"
[ "$st" = SERVING ] || exit 1
echo "the install path was checked in a debootstrap root" >"$rroot/tmp/doc.txt"
ctl put /tmp/doc.txt
ctl search "debootstrap root" -k 1 | tee "$work/search.out"
grep -q '/tmp/doc.txt' "$work/search.out" || { echo "search did not find the document" >&2; exit 1; }
kill -TERM "$daemon_pid"
drc=0
wait "$daemon_pid" || drc=$?
daemon_pid=
grep -E 'msg=(listening|builtin|shutting-down|stopped)' "$dlog" || true
[ "$drc" -eq 0 ] || { echo "ctxd exited $drc after SIGTERM" >&2; cat "$dlog"; exit 1; }
find "$rroot/var/lib/ctxd" -maxdepth 1 -printf "  %M %u:%g %p\n"

if [ "$full" = 1 ]; then
  stage ".ci/run --no-deps (full CI)"
  in_root "$broot" bash -c 'cd /src/ctxd && bash .ci/run --no-deps'
else
  stage ".ci/run --no-deps --quick"
  in_root "$broot" bash -c 'cd /src/ctxd && bash .ci/run --no-deps --quick'
fi
