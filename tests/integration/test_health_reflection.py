#!/usr/bin/python3
"""grpc.health.v1.Health (Check, Watch, unknown service) and server
reflection v1 and v1alpha (list_services, file_containing_symbol giving
FileDescriptorProtos that load into a descriptor pool, file_by_filename,
unknown symbol -> NOT_FOUND) with stock grpcio stubs."""

import threading

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool

from ctxd_harness import Daemon, Report, SLOW, pb

H = pb.health_pb2
T = 30 * SLOW
WANT_SERVICES = {"ctxd.v1.Documents", "ctxd.v1.Admin", "ctxd.v1.Corpus",
                 "grpc.health.v1.Health"}


def case_health(r, d, s):
    c = s.health.Check(H.HealthCheckRequest(), timeout=T)
    r.eq(H.HealthCheckResponse.ServingStatus.Name(c.status), "SERVING", "Check(''): SERVING")
    r.raises(grpc.StatusCode.NOT_FOUND,
             lambda: s.health.Check(H.HealthCheckRequest(service="no.such.Service"), timeout=T),
             "Check(unknown service): NOT_FOUND")
    w = s.health.Watch(H.HealthCheckRequest(), timeout=T)
    first = next(w)
    r.eq(H.HealthCheckResponse.ServingStatus.Name(first.status), "SERVING",
         "Watch(''): first message SERVING")
    r.check(w.is_active() if hasattr(w, "is_active") else True,
            "Watch stays open after the first message")
    w.cancel()
    # The standard says: an unknown service gets SERVICE_UNKNOWN and the
    # call stays open (a service may appear later).
    w2 = s.health.Watch(H.HealthCheckRequest(service="no.such.Service"), timeout=T)
    try:
        m = next(w2)
        r.eq(H.HealthCheckResponse.ServingStatus.Name(m.status), "SERVICE_UNKNOWN",
             "Watch(unknown service): first message SERVICE_UNKNOWN")
    except grpc.RpcError as e:
        r.check(False, "Watch(unknown service): first message SERVICE_UNKNOWN",
                "call ended with %s %s" % (e.code(), e.details()))
    finally:
        w2.cancel()
    # Many Checks in a row over one channel.
    ok = sum(1 for _ in range(200)
             if s.health.Check(H.HealthCheckRequest(), timeout=T).status == H.HealthCheckResponse.SERVING)
    r.eq(ok, 200, "200 Checks in a row: all SERVING")


def case_watch_during_shutdown(r):
    # A Watch open while the daemon gets SIGTERM: it must not keep the daemon
    # from exiting, and it sees NOT_SERVING or the end of the call.
    with Daemon(r, name="ctxd-watch") as d2:
        s2 = d2.stubs()
        w = s2.health.Watch(H.HealthCheckRequest(), timeout=60 * SLOW)
        first = next(w)
        r.eq(first.status, H.HealthCheckResponse.SERVING, "Watch before shutdown: SERVING")
        seen = []

        def drain():
            try:
                for m in w:
                    seen.append(H.HealthCheckResponse.ServingStatus.Name(m.status))
            except grpc.RpcError as e:
                seen.append(e.code().name)

        t = threading.Thread(target=drain)
        t.start()
        rc = d2.stop(timeout=20)
        t.join(10)
        r.eq(rc, 0, "SIGTERM with an open Watch: exit 0")
        r.check(not t.is_alive(), "the open Watch ended when the daemon stopped", seen)
        r.check("SERVING" not in seen, "no SERVING after SIGTERM", seen)


def reflect(stub_cls, mod, s, reqs):
    stub = stub_cls(s.channel)
    return list(stub.ServerReflectionInfo(iter(reqs), timeout=T))


def load_pool(r, files, label):
    """Parse serialized FileDescriptorProtos and add them to a fresh pool in
    dependency order; return the pool (or None)."""
    fds = []
    for b in files:
        fd = descriptor_pb2.FileDescriptorProto()
        fd.ParseFromString(b)
        fds.append(fd)
    pool = descriptor_pool.DescriptorPool()
    added = set()
    pending = list(fds)
    while pending:
        progress = False
        for fd in list(pending):
            if all(dep in added for dep in fd.dependency):
                pool.Add(fd)
                added.add(fd.name)
                pending.remove(fd)
                progress = True
        if not progress:
            r.check(False, "%s: descriptors load into a pool" % label,
                    "unresolved deps: %s" % [(f.name, list(f.dependency)) for f in pending])
            return None
    return pool


def case_reflection(r, d, s, version):
    mod = pb.reflection_v1_pb2 if version == "v1" else pb.reflection_v1alpha_pb2
    grpc_mod = pb.reflection_v1_pb2_grpc if version == "v1" else pb.reflection_v1alpha_pb2_grpc
    stub_cls = grpc_mod.ServerReflectionStub
    Req = mod.ServerReflectionRequest

    resps = reflect(stub_cls, mod, s, [Req(list_services="")])
    r.eq(len(resps), 1, "%s list_services: one response" % version)
    if resps:
        names = {x.name for x in resps[0].list_services_response.service}
        r.check(WANT_SERVICES <= names, "%s list_services includes %s" % (version, sorted(WANT_SERVICES)),
                sorted(names))
        r.eq(resps[0].original_request.WhichOneof("message_request"), "list_services",
             "%s original_request echoed" % version)

    resps = reflect(stub_cls, mod, s, [Req(file_containing_symbol="ctxd.v1.Documents")])
    r.eq(len(resps), 1, "%s file_containing_symbol: one response" % version)
    if resps:
        which = resps[0].WhichOneof("message_response")
        r.eq(which, "file_descriptor_response", "%s: a file_descriptor_response" % version)
        files = list(resps[0].file_descriptor_response.file_descriptor_proto)
        r.check(len(files) >= 1, "%s: at least one FileDescriptorProto" % version, len(files))
        pool = load_pool(r, files, version)
        if pool is not None:
            svc = pool.FindServiceByName("ctxd.v1.Documents")
            methods = {m.name for m in svc.methods}
            r.eq(methods, {"Put", "PutStream", "Get", "Delete", "List", "Chunk"},
                 "%s: Documents service has its six methods" % version)
            ps = svc.methods_by_name["PutStream"]
            r.eq(ps.input_type.full_name, "ctxd.v1.PutRequest", "%s: PutStream input type" % version)
            doc = pool.FindMessageTypeByName("ctxd.v1.Document")
            r.eq([f.name for f in doc.fields], ["id", "text", "metadata", "collection", "chunks"],
                 "%s: Document fields" % version)

    # Symbols: a message, a method, a service of another file.
    for sym in ("ctxd.v1.Admin", "ctxd.v1.PutRequest", "ctxd.v1.Documents.Put",
                "grpc.health.v1.Health"):
        resps = reflect(stub_cls, mod, s, [Req(file_containing_symbol=sym)])
        ok = (len(resps) == 1 and resps[0].WhichOneof("message_response") == "file_descriptor_response")
        r.check(ok, "%s file_containing_symbol(%s)" % (version, sym),
                resps[0] if resps else "no response")

    resps = reflect(stub_cls, mod, s, [Req(file_by_filename="ctxd/v1/admin.proto")])
    ok = len(resps) == 1 and resps[0].WhichOneof("message_response") == "file_descriptor_response"
    if r.check(ok, "%s file_by_filename(ctxd/v1/admin.proto)" % version):
        fd = descriptor_pb2.FileDescriptorProto()
        fd.ParseFromString(resps[0].file_descriptor_response.file_descriptor_proto[0])
        r.eq(fd.name, "ctxd/v1/admin.proto", "%s: the first file is the one asked for" % version)

    for what, req in (("unknown symbol", Req(file_containing_symbol="no.such.Symbol")),
                      ("unknown file", Req(file_by_filename="no/such.proto"))):
        resps = reflect(stub_cls, mod, s, [req])
        ok = (len(resps) == 1 and resps[0].WhichOneof("message_response") == "error_response"
              and resps[0].error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0])
        r.check(ok, "%s %s: error_response NOT_FOUND" % (version, what),
                resps[0] if resps else "no response")

    # Several requests on one stream: one response each, in order.
    reqs = [Req(list_services=""), Req(file_containing_symbol="no.such.Symbol"),
            Req(file_containing_symbol="ctxd.v1.Admin")]
    resps = reflect(stub_cls, mod, s, reqs)
    r.eq([x.WhichOneof("message_response") for x in resps],
         ["list_services_response", "error_response", "file_descriptor_response"],
         "%s: three requests on one stream, three answers in order" % version)


def main():
    r = Report("test_health_reflection")
    with Daemon(r) as d:
        s = d.stubs()
        r.case("health", case_health, r, d, s)
        r.case("reflection v1", case_reflection, r, d, s, "v1")
        r.case("reflection v1alpha", case_reflection, r, d, s, "v1alpha")
    r.case("Watch open during SIGTERM", case_watch_during_shutdown, r)
    r.finish()


if __name__ == "__main__":
    main()
