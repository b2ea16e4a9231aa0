#!/usr/bin/python3
"""The short form of the crash-consistency campaign (tests/crash/
crash_campaign.py): 5 SIGKILL trials of concurrent PutStream, Puts, replaces,
deletes, searches and a reorder job on one data dir, with a fixed seed that
also kills the daemon while it recovers; each restart checks acked writes
and deletes, in-flight documents whole or absent, Verify, Flat search equal
to an exact search and HNSW/IVF recall, and the job's end. The 100-trial
form: tests/crash/run.sh BUILD_DIR."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crash"))

import crash_campaign  # noqa: E402
from ctxd_harness import Report  # noqa: E402

if __name__ == "__main__":
    r = Report("test_crash_campaign")
    crash_campaign.main(["--trials", "5", "--seed", "20261127", "--max-kill-s", "2.5",
                         "--double-kill", "0.4", "--max-seconds", "45"], report=r)
    r.finish()
