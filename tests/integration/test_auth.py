#!/usr/bin/python3
"""Bearer-token authentication (daemon/auth.c, checked in the transport):
every outcome with grpcio stubs (no token, malformed, unknown, too low a
role, enough role, Health open), the check happens before the request is
decoded, the log names tokens by NAME only, SIGHUP reload (token added and
removed; a bad file keeps the old tokens), a group-readable token file
refuses the start, and a non-loopback address without tokens warns."""

import os
import signal
import shutil
import tempfile
import time

import grpc

from ctxd_harness import Daemon, Report, SLOW, check_start_refused, pb, put_req

T = 10 * SLOW
H = pb.health_pb2
D = pb.documents_pb2
A = pb.admin_pb2
TR = "reader-token-aaaaaaaaaaaaaaaa"
TW = "writer-token-bbbbbbbbbbbbbbbb"
TA = "admin-token-cccccccccccccccccc"
TN = "newbie-token-dddddddddddddddd"
UNAUTH = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED


def md(tok):
    return (("authorization", "Bearer " + tok),)


def write_tokens(path, text, mode=0o600):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.rename(tmp, path)




def case_outcomes(r, dm):
    s = dm.stubs()
    r.eq(s.health.Check(H.HealthCheckRequest(), timeout=T).status,
         H.HealthCheckResponse.SERVING, "Health.Check needs no token")
    w = s.health.Watch(H.HealthCheckRequest(), timeout=T)
    r.eq(next(w).status, H.HealthCheckResponse.SERVING, "Health.Watch needs no token")
    w.cancel()
    put = put_req("d1", "the quick brown fox")
    r.raises(UNAUTH, lambda: s.docs.Put(put, timeout=T), "no token: UNAUTHENTICATED",
             "authorization: Bearer")
    r.raises(UNAUTH, lambda: s.docs.Put(put, timeout=T, metadata=md("wrong-token-0000000000")),
             "unknown token: UNAUTHENTICATED", "invalid token")
    r.raises(UNAUTH, lambda: s.docs.Put(put, timeout=T,
                                        metadata=(("authorization", "Basic " + TW),)),
             "Basic scheme: UNAUTHENTICATED", "malformed")
    r.raises(UNAUTH, lambda: s.docs.Put(put, timeout=T, metadata=(("authorization", TW),)),
             "token without 'Bearer': UNAUTHENTICATED", "malformed")
    r.raises(DENIED, lambda: s.docs.Put(put, timeout=T, metadata=md(TR)),
             "read token calling Put: PERMISSION_DENIED", ["write role", "reader", "read role"])
    r.check(s.docs.Put(put, timeout=T, metadata=md(TW)).id == "d1", "write token: Put works")
    g = s.docs.Get(D.GetRequest(id="d1", with_text=True), timeout=T, metadata=md(TR))
    r.eq(g.document.text, "the quick brown fox", "read token: Get works")
    sr = s.retrieval.Search(pb.retrieval_pb2.SearchRequest(text="fox", k=3), timeout=T,
                            metadata=md(TR))
    r.check(len(sr.hits) >= 1, "read token: Search works")
    r.raises(DENIED, lambda: s.admin.Stats(A.StatsRequest(), timeout=T, metadata=md(TW)),
             "write token on Admin.Stats: PERMISSION_DENIED", "admin role")
    r.check(s.admin.Stats(A.StatsRequest(), timeout=T, metadata=md(TA)) is not None,
            "admin token: Admin.Stats works")
    r.check(s.docs.Get(D.GetRequest(id="d1"), timeout=T, metadata=md(TA)).document.id == "d1",
            "admin token: read methods work (roles are hierarchical)")
    r.check(s.docs.Delete(D.DeleteRequest(id="d1"), timeout=T, metadata=md(TA)) is not None,
            "admin token: write methods work")
    r.raises(UNAUTH, lambda: s.admin.Stats(A.StatsRequest(), timeout=T),
             "Admin without token: UNAUTHENTICATED")
    # Streaming calls are checked the same way.
    r.raises(DENIED, lambda: list(s.docs.PutStream(iter([put_req("s1", "x")]), timeout=T,
                                                   metadata=md(TR))),
             "read token on PutStream: PERMISSION_DENIED")
    # Unknown methods need a token before they say UNIMPLEMENTED.
    ch = dm.channel()
    raw = ch.unary_unary("/ctxd.v1.Nope/Nothing")
    r.raises(UNAUTH, lambda: raw(b"", timeout=T), "unknown method without token: UNAUTHENTICATED")
    r.raises(grpc.StatusCode.UNIMPLEMENTED, lambda: raw(b"", timeout=T, metadata=md(TR)),
             "unknown method with a token: UNIMPLEMENTED")
    # Refused before the request is decoded: garbage bytes get
    # UNAUTHENTICATED / PERMISSION_DENIED, not INVALID_ARGUMENT.
    rawput = ch.unary_unary("/ctxd.v1.Documents/Put")
    r.raises(UNAUTH, lambda: rawput(b"\xff\xff\xff", timeout=T),
             "garbage request without token: UNAUTHENTICATED")
    r.raises(DENIED, lambda: rawput(b"\xff\xff\xff", timeout=T, metadata=md(TR)),
             "garbage request with read token: PERMISSION_DENIED")
    r.raises(grpc.StatusCode.INVALID_ARGUMENT,
             lambda: rawput(b"\xff\xff\xff", timeout=T, metadata=md(TW)),
             "garbage request with write token: decoded (INVALID_ARGUMENT)")


def case_log(r, dm):
    r.check(dm.wait_log("name=reader"), "log names the token by NAME")
    r.check(dm.wait_log("auth=on tokens=3"), "start-up log: auth=on tokens=3")
    text = dm.log_tail(100000)
    r.check(all(t not in text for t in (TR, TW, TA)), "no token text in the log")


def case_reload(r, dm, path):
    s = dm.stubs()
    write_tokens(path, "# rotated\n%s write writer\n%s admin admin\n%s read newbie\n"
                 % (TW, TA, TN))
    dm.proc.send_signal(signal.SIGHUP)
    r.check(dm.wait_log("auth-reloaded tokens=3"), "SIGHUP: auth-reloaded logged")
    r.raises(UNAUTH, lambda: s.docs.Get(D.GetRequest(id="x"), timeout=T, metadata=md(TR)),
             "removed token: UNAUTHENTICATED")
    r.raises(grpc.StatusCode.NOT_FOUND,
             lambda: s.docs.Get(D.GetRequest(id="x"), timeout=T, metadata=md(TN)),
             "added token: accepted (NOT_FOUND from the handler)")
    # A bad file keeps the tokens loaded before.
    write_tokens(path, "%s superuser\n" % TR)
    dm.proc.send_signal(signal.SIGHUP)
    r.check(dm.wait_log("auth-reload-failed"), "bad file: auth-reload-failed logged")
    r.raises(grpc.StatusCode.NOT_FOUND,
             lambda: s.docs.Get(D.GetRequest(id="x"), timeout=T, metadata=md(TN)),
             "bad file: the old tokens stay")
    write_tokens(path, "%s admin\n" % TR, mode=0o644)
    dm.proc.send_signal(signal.SIGHUP)
    end = time.monotonic() + 5 * SLOW
    while time.monotonic() < end and dm.log_tail(1000).count("auth-reload-failed") < 2:
        time.sleep(0.05)
    r.check("0644" in dm.log_tail(1000), "group-readable file on SIGHUP: refused with its mode")
    r.raises(UNAUTH, lambda: s.docs.Get(D.GetRequest(id="x"), timeout=T, metadata=md(TR)),
             "group-readable file on SIGHUP: its tokens are not taken")
    r.check(dm.alive(), "daemon still running")



def case_start(r, d):
    p = os.path.join(d, "open-tokens")
    write_tokens(p, "%s read\n" % TR, mode=0o644)
    check_start_refused(r, ["--auth.tokens_file", p], "0644 tokens file",
                  ["auth.tokens_file", p, "0644", "chmod"])
    p2 = os.path.join(d, "bad-tokens")
    write_tokens(p2, "%s root\n" % TR)
    check_start_refused(r, ["--auth.tokens_file", p2], "unknown role", [p2 + ":1", "unknown role"])
    check_start_refused(r, ["--auth.tokens_file", os.path.join(d, "nope")], "missing file",
                  ["auth.tokens_file", "nope"])
    with Daemon(r, args=["--listen", "0.0.0.0:0", "--server.plaintext=true"],
                name="ctxd-open") as dm:
        r.check(dm.wait_log("auth-off"), "non-loopback without tokens: auth-off warning")
    with Daemon(r, name="ctxd-lo") as dm:
        r.check("auth-off" not in dm.log_tail(200), "loopback without tokens: no warning")


def main():
    r = Report("test_auth")
    d = tempfile.mkdtemp(prefix="ctxd-auth-")
    path = os.path.join(d, "tokens")
    write_tokens(path, "# ctxd tokens\n%s read reader\n%s write writer\n\n%s admin admin\n"
                 % (TR, TW, TA))
    with Daemon(r, args=["--auth.tokens_file", path]) as dm:
        r.case("auth outcomes", case_outcomes, r, dm)
        r.case("log", case_log, r, dm)
        r.case("SIGHUP reload", case_reload, r, dm, path)
    r.case("start-up", case_start, r, d)
    shutil.rmtree(d, ignore_errors=True)
    r.finish()


if __name__ == "__main__":
    main()
