#!/bin/bash
# run.sh BUILD_DIR [crash_campaign.py options] - the crash-consistency
# campaign against the daemon of BUILD_DIR (default 100 trials; the long form
# is meant to run under nice -n 10 on a shared machine).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
build=$(cd "${1:?usage: run.sh BUILD_DIR [options]}" && pwd)
shift
make -C "$build" -j2 ctxd_bin ctxctl python_stubs >/dev/null
export CTXD_BIN=$build/ctxd CTXCTL_BIN=$build/ctxctl
export PYTHONPATH=$build/python:$src/clients/python:$src/tests/integration
exec /usr/bin/python3 "$here/crash_campaign.py" "$@"
