#!/usr/bin/python3
"""test_client_tls - the client side of TLS, mTLS and bearer tokens, against
servers written here, so that ctxctl (the C client) and ctxd_client (the
Python client) are tested independently of the daemon's own TLS:

  - a grpcio TLS server (grpc.ssl_server_credentials, certificates made
    with the openssl CLI at test time) that checks `authorization: Bearer`
    with roles: Health.Check (any token), Admin.Stats (admin), Documents.Get
    (a 5 MiB answer, so that TLS reads span many records),
    Documents.PutStream and Admin.RebuildIndex (token on streaming calls);
  - the same with require_client_auth (mTLS);
  - a cleartext grpcio server (TLS client to a cleartext port);
  - a raw TLS server that negotiates no ALPN (h2 must be refused).

Checks exit codes (0 ok, 2 usage, 3 unreachable/TLS failure, 4 refused by
token or role) and that each failure names its reason.
"""

import os
import socket
import ssl
import subprocess
import threading
from concurrent import futures

import grpc

from ctxd_client import CtxdClient
from ctxd_harness import Report, SLOW, pb
from tls_certs import CertDir

CTXCTL = os.environ.get("CTXCTL_BIN", "")
r = Report("test_client_tls")
BIG = 5 << 20

TOKENS = {"tok-read": "read", "tok-admin": "admin"}


# --------------------------------------------------------------------------
# certificates

certs = CertDir("ctxd-tls-")
TMP, path, read = certs.dir, certs.path, certs.read
certs.ca("ca")
certs.ca("rogue-ca")
certs.cert("server", "ca", "ctxd test server",
           "subjectAltName=DNS:localhost,IP:127.0.0.1,DNS:ctxd.test\n"
           "extendedKeyUsage=serverAuth")
certs.cert("client", "ca", "ctxd test client", "extendedKeyUsage=clientAuth")
certs.cert("rogue-client", "rogue-ca", "rogue client",
           "extendedKeyUsage=clientAuth")
with open(path("both.pem"), "wb") as f:  # certificate and key in one file
    f.write(read("client.pem") + read("client.key"))


# --------------------------------------------------------------------------
# servers

class Seen:
    """The authorization values the servers saw, per method."""

    def __init__(self):
        self.lock = threading.Lock()
        self.auth = []

    def add(self, method, ctx):
        md = dict(ctx.invocation_metadata())
        with self.lock:
            self.auth.append((method, md.get("authorization")))
        return md.get("authorization")

    def last(self, method):
        with self.lock:
            for m, a in reversed(self.auth):
                if m == method:
                    return a
        return "none seen"


seen = Seen()


def authorize(ctx, method, want_role, need_token):
    """None when allowed, else aborts the call as the daemon would."""
    auth = seen.add(method, ctx)
    if not need_token:
        return
    if not auth:
        ctx.abort(grpc.StatusCode.UNAUTHENTICATED, "missing bearer token")
    if not auth.startswith("Bearer ") or auth[7:] not in TOKENS:
        ctx.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid token")
    role = TOKENS[auth[7:]]
    if want_role == "admin" and role != "admin":
        ctx.abort(grpc.StatusCode.PERMISSION_DENIED,
                  "token role %s may not call %s" % (role, method))


def handlers(need_token):
    H = pb.health_pb2
    D = pb.documents_pb2
    A = pb.admin_pb2

    def check(req, ctx):
        authorize(ctx, "Check", "read", need_token)
        return H.HealthCheckResponse(status=H.HealthCheckResponse.SERVING)

    def stats(req, ctx):
        authorize(ctx, "Stats", "admin", need_token)
        return A.StatsResponse(documents=42)

    def get(req, ctx):
        authorize(ctx, "Get", "read", need_token)
        return D.GetResponse(document=D.Document(id=req.id, text="x" * BIG))

    def put_stream(reqs, ctx):
        authorize(ctx, "PutStream", "write", need_token)
        for q in reqs:
            yield D.PutAck(ids=[q.document.id or "gen-1"])

    def rebuild(req, ctx):
        authorize(ctx, "RebuildIndex", "admin", need_token)
        yield A.RebuildProgress(collection=req.collection or "default",
                                state="done", done=3, total=3)

    u, us, ss = (grpc.unary_unary_rpc_method_handler,
                 grpc.unary_stream_rpc_method_handler,
                 grpc.stream_stream_rpc_method_handler)
    return [
        grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
            "Check": u(check, H.HealthCheckRequest.FromString,
                       H.HealthCheckResponse.SerializeToString)}),
        grpc.method_handlers_generic_handler("ctxd.v1.Admin", {
            "Stats": u(stats, A.StatsRequest.FromString,
                       A.StatsResponse.SerializeToString),
            "RebuildIndex": us(rebuild, A.RebuildIndexRequest.FromString,
                               A.RebuildProgress.SerializeToString)}),
        grpc.method_handlers_generic_handler("ctxd.v1.Documents", {
            "Get": u(get, D.GetRequest.FromString,
                     D.GetResponse.SerializeToString),
            "PutStream": ss(put_stream, D.PutRequest.FromString,
                            D.PutAck.SerializeToString)}),
    ]


def grpc_server(creds, need_token):
    s = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                    options=[("grpc.max_send_message_length", 64 << 20),
                             ("grpc.max_receive_message_length", 64 << 20)])
    s.add_generic_rpc_handlers(handlers(need_token))
    port = (s.add_secure_port("127.0.0.1:0", creds) if creds
            else s.add_insecure_port("127.0.0.1:0"))
    s.start()
    return s, port


server_creds = grpc.ssl_server_credentials([(read("server.key"), read("server.pem"))])
mtls_creds = grpc.ssl_server_credentials(
    [(read("server.key"), read("server.pem"))], root_certificates=read("ca.pem"),
    require_client_auth=True)
tls_srv, TLS_PORT = grpc_server(server_creds, True)
mtls_srv, MTLS_PORT = grpc_server(mtls_creds, False)
plain_srv, PLAIN_PORT = grpc_server(None, True)


def no_alpn_server():
    """A TLS server with the right certificate that negotiates no ALPN."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(path("server.pem"), path("server.key"))
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)

    def serve():
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            try:
                t = ctx.wrap_socket(c, server_side=True)
                t.settimeout(5)
                t.recv(1024)
                t.close()
            except (OSError, ssl.SSLError):
                c.close()

    threading.Thread(target=serve, daemon=True).start()
    return ls, ls.getsockname()[1]


alpn_sock, NO_ALPN_PORT = no_alpn_server()

TLS = "localhost:%d" % TLS_PORT
TLS_IP = "127.0.0.1:%d" % TLS_PORT
MTLS = "localhost:%d" % MTLS_PORT
PLAIN = "127.0.0.1:%d" % PLAIN_PORT
NO_ALPN = "localhost:%d" % NO_ALPN_PORT


# --------------------------------------------------------------------------
# ctxctl

def ctl(*args, env=None, timeout=60):
    e = {k: v for k, v in os.environ.items() if not k.startswith("CTXD_")}
    e.update(env or {})
    p = subprocess.run([CTXCTL] + list(args), capture_output=True,
                       timeout=timeout * SLOW, env=e, cwd=TMP)
    err = p.stderr.decode("utf-8", "replace")
    if "Sanitizer" in err or "runtime error:" in err:
        r.check(False, "ctxctl %s: no sanitizer report" % " ".join(args[:4]),
                err[-3000:])
    return p.returncode, p.stdout.decode("utf-8", "replace"), err


def expect(args, code, what, out=None, err=None, env=None):
    rc, o, e = ctl(*args, env=env)
    if rc != 0:
        print("       stderr: %s" % e.strip().replace("\n", "\n               "))
    ok = r.check(rc == code, "%s: exit %d" % (what, code),
                 "exit %d, stdout %r, stderr %r" % (rc, o[-300:], e[-600:]))
    for s in ([out] if isinstance(out, str) else out or []):
        r.check(s in o, "%s: stdout has %r" % (what, s), o[-400:])
    for s in ([err] if isinstance(err, str) else err or []):
        r.check(s.lower() in e.lower(), "%s: stderr has %r" % (what, s), e[-600:])
    return ok, o, e


def case_ctxctl_tls_token():
    ca = path("ca.pem")
    expect(["--addr", TLS, "--tls", "--ca", ca, "--token", "tok-read", "status"],
           0, "TLS + token", out="SERVING")
    r.eq(seen.last("Check"), "Bearer tok-read", "the server got 'Bearer TOKEN'")
    expect(["status", "--addr", TLS, "--ca", ca, "--token=tok-read"], 0,
           "--ca implies --tls; options after the command", out="SERVING")
    with open(path("token"), "w") as f:
        f.write("tok-admin\n")
    os.chmod(path("token"), 0o600)
    expect(["--addr", TLS, "--ca", ca, "--token-file", path("token"), "stats"],
           0, "--token-file (admin) runs stats", out="42")
    r.eq(seen.last("Stats"), "Bearer tok-admin", "token from the file, line end cut")
    expect(["status"], 0, "everything from the environment", out="SERVING",
           env={"CTXD_ADDR": TLS, "CTXD_TLS": "1", "CTXD_CA": ca,
                "CTXD_TOKEN": "tok-read"})
    expect(["stats"], 0, "CTXD_TOKEN_FILE", out="42",
           env={"CTXD_ADDR": TLS, "CTXD_CA": ca,
                "CTXD_TOKEN_FILE": path("token")})
    expect(["--token", "tok-admin", "stats"], 0, "--token overrides CTXD_TOKEN_FILE",
           env={"CTXD_ADDR": TLS, "CTXD_CA": ca,
                "CTXD_TOKEN_FILE": "/nonexistent"})
    expect(["--addr", TLS_IP, "--ca", ca, "--token", "tok-read", "status"], 0,
           "an IP address checked against the IP subjectAltName", out="SERVING")
    expect(["--addr", TLS_IP, "--ca", ca, "--server-name", "ctxd.test",
            "--token", "tok-read", "status"], 0, "--server-name ctxd.test",
           out="SERVING")


def case_ctxctl_auth_errors():
    ca = path("ca.pem")
    expect(["--addr", TLS, "--ca", ca, "status"], 4, "no token: exit 4",
           err=["missing bearer token", "UNAUTHENTICATED", "requires a token"])
    expect(["--addr", TLS, "--ca", ca, "--token", "nope", "status"], 4,
           "bad token: exit 4",
           err=["invalid token", "UNAUTHENTICATED", "did not accept the token"])
    expect(["--addr", TLS, "--ca", ca, "--token", "tok-read", "stats"], 4,
           "read token on stats: exit 4",
           err=["PERMISSION_DENIED", "role"])
    expect(["--addr", TLS, "--ca", ca, "--token", "tok-read", "reindex", "-q"], 4,
           "server-streaming call refused: exit 4", err="PERMISSION_DENIED")
    expect(["--addr", TLS, "--ca", ca, "--token", "tok-admin", "reindex"], 0,
           "server-streaming call with the admin token", out="rebuilt")
    expect(["--token", "a", "--token-file", path("token"), "status"], 2,
           "--token and --token-file: usage", err="not both")
    expect(["--addr", TLS, "--ca", ca, "--token", "a b", "status"], 2,
           "a token with a space: usage", err="printable ASCII")
    expect(["--addr", TLS, "--ca", ca, "--token-file", path("nope"), "status"], 2,
           "missing token file: usage", err=["--token-file", "No such file"])
    with open(path("two-tokens"), "w") as f:
        f.write("a\nb\n")
    expect(["--addr", TLS, "--ca", ca, "--token-file", path("two-tokens"),
            "status"], 2, "a token file with two lines: usage", err="one line")


def case_ctxctl_big_and_streams():
    ca = path("ca.pem")
    rc, o, e = ctl("--addr", TLS, "--ca", ca, "--token", "tok-read", "get",
                   "doc-1", "--text")
    r.eq((rc, len(o), o[:3]), (0, BIG, "xxx"), "get --text: a 5 MiB answer over TLS")
    doc = path("big.txt")
    with open(doc, "w") as f:
        f.write("y" * (4 << 20))
    expect(["--addr", TLS, "--ca", ca, "--token", "tok-read", "put", "--id",
            "big-1", doc], 0, "put a 4 MiB document through PutStream over TLS",
           out="stored 1 document")
    r.eq(seen.last("PutStream"), "Bearer tok-read", "PutStream carried the token")
    expect(["--addr", TLS, "--ca", ca, "put", "--id", "big-2", doc], 4,
           "put without a token: exit 4", err="UNAUTHENTICATED")


def case_ctxctl_tls_failures():
    ca = path("ca.pem")
    tok = ["--token", "tok-read"]
    expect(["--addr", TLS, "--tls"] + tok + ["status"], 3,
           "system store does not know the test CA: exit 3",
           err=["TLS handshake", "certificate verify failed",
                "system's CA certificates", "UNAVAILABLE"])
    expect(["--addr", TLS, "--ca", path("rogue-ca.pem")] + tok + ["status"], 3,
           "another CA: exit 3", err=["certificate verify failed", "issued by /CN=ca", "CA file " + path("rogue-ca.pem")])
    expect(["--addr", TLS, "--ca", ca, "--server-name", "wrong.example"] + tok +
           ["status"], 3, "name mismatch: exit 3",
           err=["hostname mismatch", "DNS:ctxd.test", "wrong.example"])
    expect(["--addr", TLS] + tok + ["status"], 3, "cleartext to a TLS port: exit 3",
           err="TLS port")
    expect(["--addr", PLAIN, "--ca", ca] + tok + ["status"], 3,
           "TLS to a cleartext port: exit 3", err=["TLS handshake", "cleartext"])
    expect(["--addr", NO_ALPN, "--ca", ca] + tok + ["status"], 3,
           "a TLS server without ALPN h2: exit 3", err=["ALPN", "h2"])
    expect(["--addr", TLS, "--ca", path("missing.pem"), "status"], 2,
           "missing CA file: usage", err=["CA file", "No such file"])
    expect(["--addr", TLS, "--ca", path("server.ext"), "status"], 2,
           "a CA file that is not PEM: usage", err="cannot load CA file")
    expect(["--addr", TLS, "--ca", ca, "--key", path("client.key"), "status"], 2,
           "--key without --cert: usage", err="--cert")


def case_ctxctl_mtls():
    ca = path("ca.pem")
    expect(["--addr", MTLS, "--ca", ca, "--cert", path("client.pem"), "--key",
            path("client.key"), "status"], 0, "mTLS with a client certificate",
           out="SERVING")
    expect(["--addr", MTLS, "--ca", ca, "--cert", path("both.pem"), "status"], 0,
           "mTLS, certificate and key in one file", out="SERVING")
    expect(["status"], 0, "mTLS from the environment", out="SERVING",
           env={"CTXD_ADDR": MTLS, "CTXD_CA": ca, "CTXD_CERT": path("client.pem"),
                "CTXD_KEY": path("client.key")})
    expect(["--addr", MTLS, "--ca", ca, "status"], 3,
           "mTLS server, no client certificate: exit 3",
           err="client certificate")
    expect(["--addr", MTLS, "--ca", ca, "--cert", path("rogue-client.pem"),
            "--key", path("rogue-client.key"), "status"], 3,
           "mTLS server, a certificate of another CA: exit 3",
           err="client certificate")
    expect(["--addr", MTLS, "--ca", ca, "--cert", path("client.pem"), "--key",
            path("rogue-client.key"), "status"], 2,
           "certificate and key that do not match: usage", err="does not match")


# --------------------------------------------------------------------------
# Python client

def case_python():
    ca = path("ca.pem")
    with CtxdClient(TLS, ca=ca, token="tok-read", timeout=20 * SLOW) as c:
        r.eq(c.health(), "SERVING", "python: TLS + token, ca as a path")
        r.eq(seen.last("Check"), "Bearer tok-read", "python: 'Bearer TOKEN' sent")
        r.raises(grpc.StatusCode.PERMISSION_DENIED, c.stats,
                 "python: read token on Stats: PERMISSION_DENIED", contains="role")
        r.eq(len(c.get("d").document.text), BIG, "python: 5 MiB over TLS")
        acks = list(c.put_many([("a", "text a"), ("b", "text b")]))
        r.eq([i for a in acks for i in a.ids], ["a", "b"], "python: put_many over TLS")
        r.eq(seen.last("PutStream"), "Bearer tok-read", "python: token on a bidi stream")
    with CtxdClient(TLS, ca=read("ca.pem"), token="tok-admin") as c:
        r.eq(c.stats().documents, 42, "python: ca as bytes, admin token")
        r.eq([p.state for p in c.rebuild_index()], ["done"],
             "python: server-streaming call with the token")
        r.eq(seen.last("RebuildIndex"), "Bearer tok-admin",
             "python: token on a server stream")
    with CtxdClient(TLS, ca=ca) as c:
        r.raises(grpc.StatusCode.UNAUTHENTICATED, c.health,
                 "python: no token: UNAUTHENTICATED", contains="missing")
    with CtxdClient(TLS, ca=ca, token="bad") as c:
        r.raises(grpc.StatusCode.UNAUTHENTICATED, c.health,
                 "python: bad token: UNAUTHENTICATED", contains="invalid")
    with CtxdClient(TLS_IP, ca=ca, server_name="ctxd.test",
                    token_file=path("token")) as c:
        r.eq(c.stats().documents, 42, "python: server_name override, token_file")
    with CtxdClient(TLS, ca=path("rogue-ca.pem"), token="tok-read", timeout=5) as c:
        r.raises(grpc.StatusCode.UNAVAILABLE, c.health,
                 "python: unknown CA: UNAVAILABLE")
    with CtxdClient(MTLS, ca=ca, cert=path("client.pem"), key=path("client.key")) as c:
        r.eq(c.health(), "SERVING", "python: mTLS")
    with CtxdClient(MTLS, ca=ca, cert=path("both.pem")) as c:
        r.eq(c.health(), "SERVING", "python: mTLS, key in the certificate file")
    with CtxdClient(MTLS, ca=ca, timeout=5) as c:
        r.raises(grpc.StatusCode.UNAVAILABLE, c.health,
                 "python: mTLS without a certificate: UNAVAILABLE")
    # A channel the caller made still gets the token.
    ch = grpc.secure_channel(TLS, grpc.ssl_channel_credentials(read("ca.pem")))
    with CtxdClient(TLS, channel=ch, token="tok-read") as c:
        r.eq(c.health(), "SERVING", "python: token on a caller's channel")
    ch.close()
    # Cleartext with a token (a daemon on loopback may allow it).
    with CtxdClient(PLAIN, token="tok-read") as c:
        r.eq(c.health(), "SERVING", "python: token over cleartext")
    old = dict(os.environ)
    try:
        os.environ.update({"CTXD_ADDR": MTLS, "CTXD_CA": ca,
                           "CTXD_CERT": path("client.pem"),
                           "CTXD_KEY": path("client.key")})
        with CtxdClient.from_env() as c:
            r.eq(c.health(), "SERVING", "python: from_env (mTLS)")
        os.environ.update({"CTXD_ADDR": "127.0.0.1:1", "CTXD_TOKEN": "tok-admin"})
        for k in ("CTXD_CERT", "CTXD_KEY"):
            del os.environ[k]
        with CtxdClient.from_env(TLS) as c:
            r.eq(c.stats().documents, 42, "python: from_env: addr argument over "
                 "CTXD_ADDR, CTXD_TOKEN")
        with CtxdClient.from_env(TLS, token="bad") as c:
            r.raises(grpc.StatusCode.UNAUTHENTICATED, c.health,
                     "python: from_env: token argument over CTXD_TOKEN")
    finally:
        os.environ.clear()
        os.environ.update(old)
    for kw, what in (({"token": "a b"}, "a token with a space"),
                     ({"token": "a", "token_file": path("token")}, "token and token_file"),
                     ({"key": path("client.key")}, "key without cert")):
        try:
            CtxdClient(TLS, ca=ca, **kw).close()
            r.check(False, "python: %s: ValueError" % what)
        except ValueError:
            r.check(True, "python: %s: ValueError" % what)
    try:
        CtxdClient(TLS, ca=path("missing.pem"))
        r.check(False, "python: missing CA file: OSError")
    except OSError as e:
        r.check("CA file" in str(e), "python: missing CA file: OSError naming it", e)


try:
    if not CTXCTL or not os.path.exists(CTXCTL):
        r.check(False, "CTXCTL_BIN is set", CTXCTL)
    else:
        r.case("ctxctl: TLS and tokens", case_ctxctl_tls_token)
        r.case("ctxctl: auth errors", case_ctxctl_auth_errors)
        r.case("ctxctl: big answers and streams over TLS", case_ctxctl_big_and_streams)
        r.case("ctxctl: TLS failures", case_ctxctl_tls_failures)
        r.case("ctxctl: mTLS", case_ctxctl_mtls)
    r.case("python client", case_python)
finally:
    for s in (tls_srv, mtls_srv, plain_srv):
        s.stop(0)
    alpn_sock.close()
r.finish()
