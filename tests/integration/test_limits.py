#!/usr/bin/python3
"""Server-level limits: server.max_connections (the connection over the limit
is closed at once), server.max_concurrent_streams (advertised in SETTINGS;
grpcio queues calls beyond it; a raw client that opens more streams before
acknowledging SETTINGS gets RST_STREAM REFUSED_STREAM, one that does so after
acknowledging them loses the connection: GOAWAY PROTOCOL_ERROR), and the
in-flight request byte budgets (server.max_conn_inflight_bytes per
connection, server.max_inflight_bytes for the daemon): partial messages held
by raw HTTP/2 clients use them up, the message beyond is refused RESOURCE_EXHAUSTED
without being allocated, and closing the holders gives the bytes back."""

import select
import socket
import struct
import time

import grpc

from ctxd_harness import Daemon, Report, SLOW, pb, put_req

T = 10 * SLOW
H = pb.health_pb2
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, GOAWAY = 0, 1, 3, 4, 7
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
REFUSED_STREAM = 7
WATCH = "/grpc.health.v1.Health/Watch"
PUT = "/ctxd.v1.Documents/Put"


def frame(typ, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([typ, flags]) + \
        struct.pack(">I", sid) + payload


def lit(name, value):
    """HPACK literal header field without indexing, new name, no Huffman
    (lengths under 127)."""
    name, value = name.encode(), value.encode()
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


class Raw:
    """A bare HTTP/2 client: frames out, frame headers in (no HPACK
    decoding needed: the tests look at frame types, flags and codes)."""

    def __init__(self, addr, ack=False):
        host, port = addr.rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)), timeout=T)
        self.buf = b""
        self.frames = []
        self.closed = False
        self.s.sendall(PREFACE + frame(SETTINGS, 0, 0))
        if ack:
            self.s.sendall(frame(SETTINGS, ACK, 0))

    def headers(self, sid, path, end=False):
        block = (lit(":method", "POST") + lit(":scheme", "http") + lit(":path", path) +
                 lit(":authority", "x") + lit("content-type", "application/grpc") +
                 lit("te", "trailers"))
        self.s.sendall(frame(HEADERS, END_HEADERS | (END_STREAM if end else 0), sid, block))

    def data(self, sid, payload, end=False):
        self.s.sendall(frame(DATA, END_STREAM if end else 0, sid, payload))

    def pump(self, secs):
        """Read frames for `secs` seconds (or until the peer closes)."""
        end = time.monotonic() + secs
        while not self.closed and time.monotonic() < end:
            r, _, _ = select.select([self.s], [], [], max(0.0, end - time.monotonic()))
            if not r:
                break
            try:
                b = self.s.recv(65536)
            except OSError:
                b = b""
            if not b:
                self.closed = True
                break
            self.buf += b
            while len(self.buf) >= 9:
                n = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) < 9 + n:
                    break
                typ, flags = self.buf[3], self.buf[4]
                sid = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
                self.frames.append((typ, flags, sid, self.buf[9:9 + n]))
                self.buf = self.buf[9 + n:]

    def ended(self, sid):
        """The server ended stream `sid` (a status or a reset)."""
        return any(f[2] == sid and ((f[0] == HEADERS and f[1] & END_STREAM) or
                                    f[0] == RST_STREAM) for f in self.frames)

    def rst_code(self, sid):
        for typ, _, fsid, p in self.frames:
            if typ == RST_STREAM and fsid == sid:
                return int.from_bytes(p[:4], "big")
        return None

    def settings(self):
        out = {}
        for typ, flags, _, p in self.frames:
            if typ == SETTINGS and not flags & ACK:
                for i in range(0, len(p) - 5, 6):
                    out[int.from_bytes(p[i:i + 2], "big")] = int.from_bytes(p[i + 2:i + 6], "big")
        return out

    def close(self):
        self.s.close()




def check(dm, timeout=T):
    ch = grpc.insecure_channel(dm.addr)
    try:
        return pb.health_pb2_grpc.HealthStub(ch).Check(H.HealthCheckRequest(), timeout=timeout)
    finally:
        ch.close()


def case_connections(r):
    with Daemon(r, args=["--server.max_connections", "3"], name="ctxd-conns") as dm:
        time.sleep(0.3 * SLOW)  # the harness's own channel is gone
        held = [Raw(dm.addr) for _ in range(3)]
        for h in held:
            h.pump(0.5 * SLOW)
        r.check(all(h.settings() and not h.closed for h in held),
                "3 connections under max_connections=3: served (SETTINGS sent)")
        extra = Raw(dm.addr)
        extra.pump(2 * SLOW)
        r.check(extra.closed and not extra.frames, "the 4th connection: closed at once")
        r.check(dm.wait_log("reason=max_connections"), "refusal logged")
        held[0].close()
        time.sleep(0.3 * SLOW)
        r.eq(check(dm).status, H.HealthCheckResponse.SERVING, "after one closed: served again")
        for h in held[1:] + [extra]:
            h.close()


def case_streams(r):
    with Daemon(r, args=["--server.max_concurrent_streams", "2"], name="ctxd-streams") as dm:
        raw = Raw(dm.addr)
        raw.pump(0.5 * SLOW)
        r.eq(raw.settings().get(3), 2, "SETTINGS_MAX_CONCURRENT_STREAMS = 2 advertised")
        # Before our SETTINGS are acknowledged, a third stream is refused
        # with RST_STREAM REFUSED_STREAM (safe for a client to retry).
        for sid in (1, 3, 5):
            raw.headers(sid, WATCH)
        raw.pump(1.0 * SLOW)
        r.eq(raw.rst_code(5), REFUSED_STREAM, "third stream: RST_STREAM REFUSED_STREAM")
        r.check(not raw.ended(1) and not raw.ended(3), "the first two stay open")
        raw.close()
        # After acknowledging them, a client that still goes over breaks the
        # protocol: nghttp2 ends the connection (GOAWAY PROTOCOL_ERROR).
        raw = Raw(dm.addr, ack=True)
        for sid in (1, 3, 5):
            raw.headers(sid, WATCH)
        raw.pump(1.0 * SLOW)
        goaway = [f for f in raw.frames if f[0] == GOAWAY]
        r.check(goaway and int.from_bytes(goaway[0][3][4:8], "big") == 1 and raw.closed,
                "over the acknowledged limit: GOAWAY PROTOCOL_ERROR, connection closed",
                raw.frames)
        raw.close()
        # grpcio reads SETTINGS and queues what does not fit.
        ch = grpc.insecure_channel(dm.addr)
        st = pb.health_pb2_grpc.HealthStub(ch)
        w1 = st.Watch(H.HealthCheckRequest(), timeout=60 * SLOW)
        w2 = st.Watch(H.HealthCheckRequest(), timeout=60 * SLOW)
        next(w1)
        next(w2)
        r.raises(grpc.StatusCode.DEADLINE_EXCEEDED,
                 lambda: st.Check(H.HealthCheckRequest(), timeout=1.0 * SLOW),
                 "grpcio: a third call waits while two streams are open")
        w1.cancel()
        r.eq(st.Check(H.HealthCheckRequest(), timeout=T).status, H.HealthCheckResponse.SERVING,
             "grpcio: it runs once one stream ended")
        w2.cancel()
        ch.close()


def hold(raw, sid, announced, sent=100):
    """Open a Put and send the prefix of a message of `announced` bytes and
    `sent` bytes of it: the daemon holds a buffer for the whole message."""
    raw.headers(sid, PUT)
    raw.data(sid, b"\x00" + struct.pack(">I", announced) + b"x" * sent)


def case_inflight(r):
    mib = 1 << 20
    args = ["--server.max_message_bytes", "4M", "--server.max_conn_inflight_bytes", "9M",
            "--server.max_inflight_bytes", "14M"]
    with Daemon(r, args=args, name="ctxd-inflight") as dm:
        a = Raw(dm.addr, ack=True)
        hold(a, 1, 4 * mib)
        hold(a, 3, 4 * mib)
        hold(a, 5, 4 * mib)   # 12 MiB > 9 MiB on this connection
        a.pump(1.0 * SLOW)
        r.check(not a.ended(1) and not a.ended(3), "two 4 MiB messages held on one connection")
        r.check(a.ended(5), "the third: refused (connection budget)")
        b = Raw(dm.addr, ack=True)
        hold(b, 1, 4 * mib)   # 12 MiB in the daemon
        hold(b, 3, 4 * mib)   # 16 MiB > 14 MiB
        b.pump(1.0 * SLOW)
        r.check(not b.ended(1), "another connection: one more held")
        r.check(b.ended(3), "the next: refused (daemon budget)")
        s = dm.stubs()
        big = put_req("big", "word " * (600 * 1024))  # 3 MiB
        r.raises(grpc.StatusCode.RESOURCE_EXHAUSTED, lambda: s.docs.Put(big, timeout=T),
                 "grpcio Put of 3 MiB while 12 MiB are held: RESOURCE_EXHAUSTED",
                 ["server busy", "server.max_inflight_bytes"])
        r.eq(s.health.Check(H.HealthCheckRequest(), timeout=T).status,
             H.HealthCheckResponse.SERVING, "small calls still served")
        r.check(dm.wait_log("inflight-refused"), "refusals logged")
        # The log is read as the daemon writes it: the three lines may come
        # one by one (under TSan a while apart), so wait for all three.
        end = time.monotonic() + 10 * SLOW
        while dm.log_tail(1000).count("inflight-refused") < 3 and time.monotonic() < end:
            time.sleep(0.1)
        r.eq(dm.log_tail(1000).count("inflight-refused"), 3,
             "the three refusals are the budgets' (inflight-refused lines)")
        a.close()
        b.close()
        time.sleep(0.3 * SLOW)
        r.eq(s.docs.Put(big, timeout=30 * SLOW).id, "big", "holders gone: the 3 MiB Put is stored")
        # The budgets come back to zero: a message of the largest size fits.
        c = Raw(dm.addr, ack=True)
        hold(c, 1, 4 * mib)
        c.pump(0.5 * SLOW)
        r.check(not c.ended(1), "after release: a 4 MiB message is taken again")
        c.close()
        r.check(dm.alive(), "daemon alive")


def main():
    r = Report("test_limits")
    r.case("max_connections", case_connections, r)
    r.case("max_concurrent_streams", case_streams, r)
    r.case("in-flight request bytes", case_inflight, r)
    r.finish()


if __name__ == "__main__":
    main()
