#!/usr/bin/env bash
# runtime-setup.sh - the container image's runtime stage (deploy/Dockerfile),
# also run by deploy/check-debian-root.sh in a minimal Debian 12 root: install
# only the runtime libraries that deploy/build-release.sh listed, copy the
# staged files in, make the unprivileged user and the data directory, and
# prove the binaries load and the config parses.
#
#   bash STAGE/runtime-setup.sh STAGE      (STAGE = build-release.sh's OUT)
set -euo pipefail

stage=${1:?usage: runtime-setup.sh STAGEDIR}
# The numeric ids are fixed so that Kubernetes' runAsUser/fsGroup and
# volumes prepared elsewhere can name them.
uid=10001

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2046 # one package a word
apt-get install -y -qq --no-install-recommends $(cat "$stage/runtime-packages.txt") >/dev/null
apt-get clean
rm -rf /var/lib/apt/lists/*

cp -a "$stage/root/." /
getent group ctxd >/dev/null || groupadd --system --gid "$uid" ctxd
getent passwd ctxd >/dev/null ||
  useradd --system --uid "$uid" --gid ctxd --home-dir /var/lib/ctxd \
    --no-create-home --shell /usr/sbin/nologin ctxd
install -d -o ctxd -g ctxd -m 0750 /var/lib/ctxd

# A library missing from the list fails here, not at the first start.
ctxd --version
ctxctl --help >/dev/null
ctxd --config /etc/ctxd/ctxd.conf --dump-config >/dev/null
echo "runtime-setup: done"
