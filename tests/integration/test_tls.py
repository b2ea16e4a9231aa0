#!/usr/bin/python3
"""TLS on the gRPC port (daemon/tls.c): certificates made at test time with
the openssl CLI; grpcio secure channels (server TLS, mutual TLS: no client
certificate, one from the CA, one from another CA); a cleartext client on the
TLS port; ALPN without h2 refused; TLS 1.2 accepted; start-up refusals
(unreadable certificate, key of another certificate, cleartext on a
non-loopback address); SIGHUP reloads the certificates and keeps the old ones
when the new files are bad."""

import os
import signal
import socket
import ssl
import shutil
import tempfile

import grpc

from ctxd_harness import Daemon, Report, SLOW, check_start_refused, pb, put_req
from tls_certs import make_ca, make_cert

T = 10 * SLOW
H = pb.health_pb2


def read(d, name):
    with open(os.path.join(d, name), "rb") as f:
        return f.read()


def creds(d, ca="ca", client=None):
    if client:
        return grpc.ssl_channel_credentials(read(d, ca + ".pem"), read(d, client + ".key"),
                                            read(d, client + ".pem"))
    return grpc.ssl_channel_credentials(read(d, ca + ".pem"))


def check_ok(ch):
    s = pb.health_pb2_grpc.HealthStub(ch)
    return s.Check(H.HealthCheckRequest(), timeout=T).status == H.HealthCheckResponse.SERVING


def secure(d, c):
    return grpc.secure_channel(d.addr, c, options=[("grpc.ssl_target_name_override",
                                                    "localhost")])


def tls_args(d, cert="srv", client_ca=None):
    a = ["--server.tls_cert", os.path.join(d, cert + ".pem"),
         "--server.tls_key", os.path.join(d, cert + ".key")]
    if client_ca:
        a += ["--server.tls_client_ca", os.path.join(d, client_ca + ".pem")]
    return a




def case_tls(r, dm, d):
    s = dm.stubs()
    s.docs.Put(put_req("a", "a document over TLS"), timeout=T)
    g = s.docs.Get(pb.documents_pb2.GetRequest(id="a", with_text=True), timeout=T)
    r.eq(g.document.text, "a document over TLS", "Put then Get over TLS")
    r.check(dm.wait_log("tls=on"), "start-up log says tls=on")
    # Large messages both ways: many TLS records per read and per write.
    text = "".join("line %d of a large document sent over TLS\n" % i for i in range(100000))
    s.docs.Put(put_req("big", text), timeout=6 * T)
    g = s.docs.Get(pb.documents_pb2.GetRequest(id="big", with_text=True), timeout=6 * T)
    r.check(g.document.text == text, "a %d-byte document round-trips over TLS" % len(text))
    # A client that trusts another CA refuses the server's certificate.
    ch = secure(dm, creds(d, ca="other"))
    r.raises(grpc.StatusCode.UNAVAILABLE, lambda: check_ok(ch),
             "client trusting another CA: UNAVAILABLE")
    ch.close()
    # Cleartext h2c against the TLS port.
    ch = grpc.insecure_channel(dm.addr)
    r.raises(grpc.StatusCode.UNAVAILABLE, lambda: check_ok(ch),
             "cleartext client on the TLS port: UNAVAILABLE")
    ch.close()
    r.check(dm.wait_log("tls-handshake-failed"), "the failed handshake is logged")


def tls_connect(dm, d, alpn, max_version=None):
    host, port = dm.addr.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=os.path.join(d, "ca.pem"))
    ctx.check_hostname = False
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    if max_version:
        ctx.maximum_version = max_version
    sock = socket.create_connection((host, int(port)), timeout=T)
    return ctx.wrap_socket(sock, server_hostname="localhost")


def case_alpn(r, dm, d):
    # ALPN offered without h2: the handshake fails (no_application_protocol).
    try:
        s = tls_connect(dm, d, ["http/1.1"])
        s.close()
        r.check(False, "ALPN http/1.1 only: handshake refused")
    except (ssl.SSLError, OSError) as e:
        r.check("NO_APPLICATION_PROTOCOL" in str(e).upper() or isinstance(e, ssl.SSLError),
                "ALPN http/1.1 only: handshake refused", e)
    r.check(dm.wait_log("did not offer ALPN h2"), "log names the missing ALPN h2")
    # No ALPN at all: the server closes the connection after the handshake.
    closed = False
    try:
        s = tls_connect(dm, d, None)
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        closed = s.recv(100) == b""
        s.close()
    except (ssl.SSLError, OSError):
        closed = True
    r.check(closed, "no ALPN: connection closed")
    r.check(dm.wait_log("client sent no ALPN h2"), "log says no ALPN h2")
    # TLS 1.2 with h2 works.
    s = tls_connect(dm, d, ["h2"], ssl.TLSVersion.TLSv1_2)
    r.eq((s.version(), s.selected_alpn_protocol()), ("TLSv1.2", "h2"), "TLS 1.2 + h2 accepted")
    s.close()
    s = tls_connect(dm, d, ["h2"])
    r.eq(s.version(), "TLSv1.3", "TLS 1.3 by default")
    s.close()


def case_mtls(r, d):
    with Daemon(r, args=tls_args(d, client_ca="ca"), name="ctxd-mtls",
                creds=creds(d, client="cli"), target_name="localhost") as dm:
        r.check(dm.wait_log("mtls=on"), "start-up log says mtls=on")
        r.check(check_ok(dm.channel()), "client certificate from the CA: served")
        ch = secure(dm, creds(d))
        r.raises(grpc.StatusCode.UNAVAILABLE, lambda: check_ok(ch),
                 "no client certificate: UNAVAILABLE")
        ch.close()
        ch = secure(dm, creds(d, client="stranger"))
        r.raises(grpc.StatusCode.UNAVAILABLE, lambda: check_ok(ch),
                 "client certificate from another CA: UNAVAILABLE")
        ch.close()
        r.check(dm.wait_log("tls-handshake-failed"), "refused client certificates are logged")



def case_refusals(r, d):
    missing = os.path.join(d, "missing.pem")
    check_start_refused(r, ["--server.tls_cert", missing, "--server.tls_key",
                      os.path.join(d, "srv.key")],
                  "missing certificate", ["server.tls_cert", missing, "No such file"])
    check_start_refused(r, ["--server.tls_cert", os.path.join(d, "srv.pem"), "--server.tls_key",
                      os.path.join(d, "cli.key")],
                  "key of another certificate", ["server.tls_key", "cli.key", "does not match"])
    check_start_refused(r, ["--server.tls_cert", os.path.join(d, "srv.key"), "--server.tls_key",
                      os.path.join(d, "srv.key")],
                  "key given as certificate", ["server.tls_cert", "srv.key"])
    check_start_refused(r, ["--server.tls_cert", os.path.join(d, "srv.pem")],
                  "certificate without key", ["server.tls_key"])
    check_start_refused(r, ["--listen", "0.0.0.0:0"], "cleartext on 0.0.0.0",
                  ["not a loopback address", "server.plaintext"])
    # Allowed when asked for, and TLS needs no permission.
    with Daemon(r, args=["--listen", "0.0.0.0:0", "--server.plaintext=true"],
                name="ctxd-plain") as dm:
        dm.addr = "127.0.0.1:" + dm.addr.rsplit(":", 1)[1]
        r.check(check_ok(dm.channel()), "0.0.0.0 with server.plaintext = true: serves")
    with Daemon(r, args=["--listen", "0.0.0.0:0"] + tls_args(d), name="ctxd-any",
                creds=creds(d), target_name="localhost") as dm:
        r.check(check_ok(dm.channel()), "0.0.0.0 with TLS: serves")


def case_reload(r, d):
    live = tempfile.mkdtemp(prefix="ctxd-tls-live-", dir=d)
    for ext in ("pem", "key"):
        with open(os.path.join(live, "srv." + ext), "wb") as f:
            f.write(read(d, "srv." + ext))
    with Daemon(r, args=tls_args(live), name="ctxd-reload", creds=creds(d),
                target_name="localhost") as dm:
        r.check(check_ok(dm.channel()), "before reload: CA 1 certificate served")
        for ext in ("pem", "key"):
            with open(os.path.join(live, "srv." + ext), "wb") as f:
                f.write(read(d, "srv2." + ext))
        dm.proc.send_signal(signal.SIGHUP)
        r.check(dm.wait_log("tls-reloaded"), "SIGHUP: reloaded")
        ch = secure(dm, creds(d, ca="ca2"))
        r.check(check_ok(ch), "after reload: the new certificate (CA 2) is served")
        ch.close()
        ch = secure(dm, creds(d))
        r.raises(grpc.StatusCode.UNAVAILABLE, lambda: check_ok(ch),
                 "after reload: CA 1 clients refuse the new certificate")
        ch.close()
        with open(os.path.join(live, "srv.pem"), "w") as f:
            f.write("not a certificate\n")
        dm.proc.send_signal(signal.SIGHUP)
        r.check(dm.wait_log("tls-reload-failed"), "bad file on SIGHUP: reload-failed logged")
        ch = secure(dm, creds(d, ca="ca2"))
        r.check(check_ok(ch), "bad file on SIGHUP: the previous certificate stays")
        ch.close()
        r.check(dm.alive(), "daemon still running")


def main():
    r = Report("test_tls")
    d = tempfile.mkdtemp(prefix="ctxd-certs-")
    make_ca(d, "ca")
    make_ca(d, "other")
    make_ca(d, "ca2")
    san = "subjectAltName=DNS:localhost,IP:127.0.0.1"
    make_cert(d, "srv", "ca", "localhost", san)
    make_cert(d, "srv2", "ca2", "localhost", san)
    make_cert(d, "cli", "ca", "client-one", "extendedKeyUsage=clientAuth")
    make_cert(d, "stranger", "other", "client-two", "extendedKeyUsage=clientAuth")
    with Daemon(r, args=tls_args(d), creds=creds(d), target_name="localhost") as dm:
        r.case("TLS with a self-signed CA", case_tls, r, dm, d)
        r.case("ALPN and TLS versions", case_alpn, r, dm, d)
    r.case("mutual TLS", case_mtls, r, d)
    r.case("start-up refusals", case_refusals, r, d)
    r.case("SIGHUP reload", case_reload, r, d)
    shutil.rmtree(d, ignore_errors=True)
    r.finish()


if __name__ == "__main__":
    main()
