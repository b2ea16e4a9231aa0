#!/usr/bin/python3
"""test_tls_clients - ctxctl and the Python client (ctxd_client) against a
real daemon with TLS (server.tls_cert/tls_key), mutual TLS
(server.tls_client_ca) and bearer tokens (auth.tokens_file with the roles
read, write, admin; also over cleartext on loopback): each command and
call allowed or refused as its role says, Health open without a token, the exit codes (0, 3 for a TLS failure,
4 for UNAUTHENTICATED / PERMISSION_DENIED) and the messages.

(test_client_tls.py proves the clients against servers written in Python;
this one proves them against ctxd.)"""

import os
import subprocess

import grpc

from ctxd_client import CtxdClient
from ctxd_harness import Daemon, Report, SLOW
from tls_certs import CertDir

CTXCTL = os.environ.get("CTXCTL_BIN", "")
r = Report("test_tls_clients")
T = 20 * SLOW
certs = CertDir("ctxd-tlsc-")
D, p, read = certs.dir, certs.path, certs.read
certs.ca("ca")
certs.ca("other")
certs.cert("srv", "ca", "ctxd test server",
           "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth")
certs.cert("cli", "ca", "client-one", "extendedKeyUsage=clientAuth")
certs.cert("stranger", "other", "client-two", "extendedKeyUsage=clientAuth")

TOKENS = {"read": "r-0123456789abcdef", "write": "w-0123456789abcdef",
          "admin": "a-0123456789abcdef"}
with open(p("tokens"), "w") as f:
    for role, tok in TOKENS.items():
        f.write("%s %s %s-user\n" % (tok, role, role))
os.chmod(p("tokens"), 0o600)
for role, tok in TOKENS.items():
    with open(p(role + ".token"), "w") as f:
        f.write(tok + "\n")
    os.chmod(p(role + ".token"), 0o600)
with open(p("doc.txt"), "w") as f:
    f.write("The lighthouse keeper kept the lamp burning through the storm.\n" * 20)

TLS_ARGS = ["--server.tls_cert", p("srv.pem"), "--server.tls_key", p("srv.key")]


def ctl(addr, *args, env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("CTXD_")}
    e.update(env or {})
    cp = subprocess.run([CTXCTL, "--addr", addr] + list(args), capture_output=True,
                        timeout=60 * SLOW, env=e, cwd=D)
    err = cp.stderr.decode("utf-8", "replace")
    if "Sanitizer" in err or "runtime error:" in err:
        r.check(False, "ctxctl %s: no sanitizer report" % " ".join(args[:4]), err[-3000:])
    return cp.returncode, cp.stdout.decode("utf-8", "replace"), err


def expect(addr, args, code, what, out=None, err=None, env=None):
    rc, o, e = ctl(addr, *args, env=env)
    if rc != 0:
        print("       stderr: %s" % e.strip().replace("\n", "\n               "))
    r.check(rc == code, "%s: exit %d" % (what, code),
            "exit %d, stdout %r, stderr %r" % (rc, o[-300:], e[-600:]))
    for s in ([out] if isinstance(out, str) else out or []):
        r.check(s in o, "%s: stdout has %r" % (what, s), o[-400:])
    for s in ([err] if isinstance(err, str) else err or []):
        r.check(s.lower() in e.lower(), "%s: stderr has %r" % (what, s), e[-600:])


def tok(role):
    return ["--token-file", p(role + ".token")]


def case_ctxctl(d):
    a = d.addr
    ca = ["--ca", p("ca.pem")]
    expect(a, ca + ["status"], 0, "Health without a token", out="SERVING")
    expect(a, ca + ["stats"], 4, "stats without a token",
           err=["UNAUTHENTICATED", "requires a token"])
    expect(a, ca + ["--token", "not-a-token", "stats"], 4, "stats with an unknown token",
           err=["UNAUTHENTICATED", "did not accept the token"])
    expect(a, ca + tok("read") + ["put", "--id", "d1", p("doc.txt")], 4,
           "put with a read token", err="PERMISSION_DENIED")
    expect(a, ca + tok("write") + ["put", "--id", "d1", p("doc.txt")], 0,
           "put with a write token", out="stored 1 document")
    expect(a, ca + tok("read") + ["search", "lamp", "-k", "3"], 0,
           "search with a read token", out="d1")
    expect(a, ca + tok("read") + ["stats"], 4, "stats (Admin) with a read token",
           err="PERMISSION_DENIED")
    expect(a, ca + tok("admin") + ["stats"], 0, "stats with the admin token",
           out="documents")
    expect(a, ["stats"], 0, "everything from the environment", out="documents",
           env={"CTXD_TLS": "1", "CTXD_CA": p("ca.pem"),
                "CTXD_TOKEN": TOKENS["admin"]})
    expect(a, ca + tok("write") + ["rm", "d1"], 0, "rm with a write token")
    expect(a, tok("admin") + ["stats"], 3, "cleartext to the TLS port: exit 3",
           err="TLS port")
    expect(a, ["--ca", p("other.pem")] + tok("admin") + ["stats"], 3,
           "a CA that did not sign the server: exit 3",
           err=["certificate verify failed", "other.pem"])
    port = a.rsplit(":", 1)[1]
    expect("localhost:" + port, ca + ["status"], 0, "by the DNS name", out="SERVING")
    expect(a, ca + ["--server-name", "ctxd.example", "status"], 3,
           "a name the certificate does not hold: exit 3",
           err=["hostname mismatch", "DNS:localhost", "ctxd.example"])


def case_python(d):
    a = d.addr
    with CtxdClient(a, ca=p("ca.pem"), timeout=T) as c:
        r.eq(c.health(), "SERVING", "python: Health without a token")
        r.raises(grpc.StatusCode.UNAUTHENTICATED, c.stats, "python: stats without a token")
    with CtxdClient(a, ca=p("ca.pem"), token=TOKENS["write"], timeout=T) as c:
        r.eq(c.put("A text about lamps.", id="py-1").id, "py-1", "python: put (write)")
        acks = list(c.put_many([("py-2", "two"), ("py-3", "three")]))
        r.eq(sorted(i for k in acks for i in k.ids), ["py-2", "py-3"],
             "python: put_many (write), a bidi stream")
        r.raises(grpc.StatusCode.PERMISSION_DENIED, c.stats, "python: stats with write")
    with CtxdClient(a, ca=read("ca.pem"), token_file=p("read.token"), timeout=T) as c:
        r.check(len(c.search("lamps", k=3).hits) >= 1, "python: search (read)")
        r.raises(grpc.StatusCode.PERMISSION_DENIED, lambda: c.put("x", id="no"),
                 "python: put with read")
    with CtxdClient(a, ca=p("ca.pem"), token=TOKENS["admin"], timeout=T) as c:
        r.check(c.stats().documents >= 3, "python: stats (admin)")
        r.eq([x.state for x in c.rebuild_index()][-1], "done",
             "python: rebuild_index (admin), a server stream")


def case_mtls():
    args = TLS_ARGS + ["--server.tls_client_ca", p("ca.pem")]
    cc = grpc.ssl_channel_credentials(read("ca.pem"), read("cli.key"), read("cli.pem"))
    with Daemon(r, args=args, name="ctxd-mtls", creds=cc, target_name="localhost") as d:
        a = d.addr
        ca = ["--ca", p("ca.pem")]
        expect(a, ca + ["--cert", p("cli.pem"), "--key", p("cli.key"), "status"], 0,
               "mTLS with a certificate of the CA", out="SERVING")
        expect(a, ca + ["status"], 3, "mTLS without a certificate: exit 3",
               err="client certificate")
        expect(a, ca + ["--cert", p("stranger.pem"), "--key", p("stranger.key"),
                        "status"], 3, "mTLS with another CA's certificate: exit 3",
               err="client certificate")
        with CtxdClient(a, ca=p("ca.pem"), cert=p("cli.pem"), key=p("cli.key"),
                        timeout=T) as c:
            r.eq(c.health(), "SERVING", "python: mTLS")
        with CtxdClient(a, ca=p("ca.pem"), timeout=5 * SLOW) as c:
            r.raises(grpc.StatusCode.UNAVAILABLE, c.health,
                     "python: mTLS without a certificate: UNAVAILABLE")


def case_cleartext_tokens():
    """Tokens on a loopback daemon without TLS (cleartext is its default
    there): the clients send them all the same."""
    with Daemon(r, args=["--auth.tokens_file", p("tokens")], name="ctxd-plain") as d:
        expect(d.addr, ["stats"], 4, "cleartext, no token: exit 4", err="UNAUTHENTICATED")
        expect(d.addr, tok("admin") + ["stats"], 0, "cleartext, admin token",
               out="documents")
        with CtxdClient(d.addr, token=TOKENS["write"], timeout=T) as c:
            r.eq(c.put("over h2c", id="h").id, "h", "python: cleartext, write token")
        expect(d.addr, ["--ca", p("ca.pem"), "status"], 3,
               "TLS to the cleartext daemon: exit 3",
               err=["TLS handshake", "answered in cleartext"])


def main():
    if not CTXCTL or not os.path.exists(CTXCTL):
        r.check(False, "CTXCTL_BIN is set", CTXCTL)
        r.finish()
    creds = grpc.ssl_channel_credentials(read("ca.pem"))
    with Daemon(r, args=TLS_ARGS + ["--auth.tokens_file", p("tokens")],
                creds=creds, target_name="localhost") as d:
        r.case("ctxctl: TLS and roles", case_ctxctl, d)
        r.case("python: TLS and roles", case_python, d)
    r.case("mutual TLS", case_mtls)
    r.case("tokens over cleartext (loopback)", case_cleartext_tokens)
    subprocess.run(["rm", "-rf", D])
    r.finish()


if __name__ == "__main__":
    main()
