"""test_notify - the daemon's systemd readiness notifications (Type=notify):
with NOTIFY_SOCKET set to a datagram socket this test binds (a path and an
abstract '@' name), the daemon sends READY=1 only once it serves, the
watchdog keep-alive when WATCHDOG_USEC asks for it, and STOPPING=1 when
SIGTERM starts the graceful stop; a bad NOTIFY_SOCKET stops the start."""

import os
import shutil
import socket
import tempfile
import time

from ctxd_harness import Daemon, Report, SLOW

r = Report("test_notify")


def bind(name):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name[1:] if name.startswith("@") else name)
    return s


def recv_all(s, until, timeout):
    """Datagrams until one contains `until` (or timeout): a list of str."""
    got = []
    end = time.time() + timeout
    while time.time() < end:
        s.settimeout(max(0.01, end - time.time()))
        try:
            m = s.recv(8192).decode()
        except socket.timeout:
            break
        got.append(m)
        if until in m:
            break
    return got


def with_notify(name, extra_env=None, args=()):
    s = bind(name)
    os.environ["NOTIFY_SOCKET"] = name
    for k, v in (extra_env or {}).items():
        os.environ[k] = v
    d = Daemon(r, args=list(args))
    try:
        d.start()  # waits for SERVING
    finally:
        for k in ["NOTIFY_SOCKET"] + list(extra_env or {}):
            os.environ.pop(k, None)
    return s, d


def case_ready_stopping(name):
    s, d = with_notify(name)
    try:
        msgs = recv_all(s, "READY=1", 10 * SLOW)
        ready = [m for m in msgs if "READY=1" in m]
        r.check(len(ready) == 1, "one READY=1 datagram", msgs)
        if ready:
            r.check("STATUS=serving on 127.0.0.1:" in ready[0],
                    "READY carries STATUS with the address", ready[0])
            r.check(ready[0].endswith(d.addr), "READY names the bound address",
                    (ready[0], d.addr))
        d.stop()
        msgs = recv_all(s, "STOPPING=1", 10 * SLOW)
        r.check(any(m.startswith("STOPPING=1\nSTATUS=draining") for m in msgs),
                "STOPPING=1 on SIGTERM", msgs)
    finally:
        s.close()


def case_path():
    tmp = tempfile.mkdtemp(prefix="ctxd-notify-")
    try:
        case_ready_stopping(os.path.join(tmp, "notify.sock"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def case_watchdog():
    name = "@ctxd-it-notify-wd-%d" % os.getpid()
    s, d = with_notify(name, {"WATCHDOG_USEC": "200000"})  # keep-alive every 100 ms
    try:
        recv_all(s, "READY=1", 10 * SLOW)
        # Read as they come (a datagram socket's queue is short): about 8.
        n = len([m for m in recv_all(s, "never", 0.8) if m == "WATCHDOG=1"])
        r.check(n >= 3, "WATCHDOG=1 keep-alives every half interval", n)
        d.stop()
    finally:
        s.close()


def case_bad_socket():
    os.environ["NOTIFY_SOCKET"] = "relative/path"
    d = Daemon(r)
    try:
        try:
            d.start()
            r.check(False, "a bad NOTIFY_SOCKET stops the start")
        except Exception:  # noqa: BLE001 - the harness raises when it exits
            d.proc.wait(10)
            r.eq(d.proc.returncode, 2, "exit status 2 for a bad NOTIFY_SOCKET")
            r.check("NOTIFY_SOCKET" in d.log_tail(), "the message names NOTIFY_SOCKET",
                    d.log_tail())
        d.proc = None
    finally:
        os.environ.pop("NOTIFY_SOCKET", None)


r.case("READY and STOPPING over an abstract socket",
       case_ready_stopping, "@ctxd-it-notify-%d" % os.getpid())
r.case("READY and STOPPING over a path socket", case_path)
r.case("watchdog keep-alives", case_watchdog)
r.case("bad NOTIFY_SOCKET", case_bad_socket)
r.finish()
