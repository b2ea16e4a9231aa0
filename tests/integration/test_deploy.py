"""test_deploy - the files of deploy/ agree with the daemon and with each
other: the sample config and the Kubernetes ConfigMap's ctxd.conf use only
options `ctxd --dump-config` knows and start a daemon that serves (data dir
and port overridden); the image's HEALTHCHECK command answers SERVING; the
Kubernetes manifests parse and fit together (ports, probes, volumes, user,
grace periods, the tokens file); the systemd unit passes
`systemd-analyze verify` and its timeouts cover the configured drain; the
Dockerfile exposes the ports and runs the checked scripts."""

import configparser
import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.request

import yaml

from ctxd_harness import Daemon, Report

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(ROOT, "deploy")
K8S = os.path.join(DEPLOY, "k8s")
CTXD_BIN = os.environ.get("CTXD_BIN", "")
CTXCTL_BIN = os.environ.get("CTXCTL_BIN", "")
r = Report("test_deploy")


def read(path):
    with open(path) as f:
        return f.read()


def ini(text):
    """{"section.key": value} of an INI text, as libinih reads it."""
    cp = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=None,
                                   empty_lines_in_values=False)
    cp.optionxform = str
    cp.read_string(text)
    return {"%s.%s" % (s, k): v for s in cp.sections() for k, v in cp[s].items()}


def dump_keys():
    out = subprocess.run([CTXD_BIN, "--dump-config"], capture_output=True, text=True,
                         check=True).stdout
    return set(ini(out))


LOOPBACK = ("127.", "[::1]", "localhost:")
METRICS_RE = re.compile(r"msg=metrics-listening addr=(\S+)")


def ctl(addr, token, *args):
    env = dict(os.environ, CTXD_ADDR=addr)
    env.pop("CTXD_TOKEN", None)
    if token:
        env["CTXD_TOKEN"] = token
    return subprocess.run([CTXCTL_BIN, "--timeout", "30"] + list(args), capture_output=True,
                          text=True, timeout=60, env=env)


def check_conf(name, text, tokens=None):
    """Known keys only; the daemon loads it; cleartext beyond loopback is
    asked for; a daemon started with it (ports, data dir and the tokens
    file overridden) serves, with its tokens when it names a tokens file."""
    keys = dump_keys()
    conf = ini(text)
    unknown = sorted(set(conf) - keys)
    r.check(not unknown, "%s: every key is a ctxd option" % name, unknown)
    if not conf["server.listen"].startswith(LOOPBACK):
        r.check(conf.get("server.plaintext") == "true" or conf.get("server.tls_cert"),
                "%s: cleartext on %s is allowed or TLS set (else ctxd refuses to start)"
                % (name, conf["server.listen"]))
    tmp = tempfile.mkdtemp(prefix="ctxd-deploy-")
    try:
        path = os.path.join(tmp, "ctxd.conf")
        with open(path, "w") as f:
            f.write(text)
        p = subprocess.run([CTXD_BIN, "--config", path, "--dump-config"],
                           capture_output=True, text=True)
        r.eq(p.returncode, 0, "%s: ctxd --config loads it (%s)" % (name, p.stderr.strip()))
        dumped = ini(p.stdout)
        r.check(all(dumped.get(k) == v for k, v in conf.items() if v != ""),
                "%s: --dump-config shows its values" % name,
                {k: (v, dumped.get(k)) for k, v in conf.items() if dumped.get(k) != v})
        args = ["--config", path, "--model.builtin=none"]
        if conf.get("metrics.listen"):
            args += ["--metrics.listen", "127.0.0.1:0"]
        roles = {}
        if conf.get("auth.tokens_file"):
            r.check(tokens is not None, "%s: the tokens it names are in the manifests" % name)
            tpath = os.path.join(tmp, "tokens")
            fd = os.open(tpath, os.O_WRONLY | os.O_CREAT, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(tokens)
            args += ["--auth.tokens_file", tpath]
            for line in tokens.splitlines():
                roles[line.split()[1]] = line.split()[0]
        d = Daemon(r, args=args, name=re.sub(r"[^A-Za-z0-9]+", "-", name))
        d.start()
        try:
            doc = os.path.join(tmp, "doc.txt")
            with open(doc, "w") as f:
                f.write("the deployment configuration serves documents\n")
            if roles:
                p = ctl(d.addr, None, "put", doc)
                r.eq(p.returncode, 4, "%s: a put without a token is refused (exit 4)" % name)
            p = ctl(d.addr, roles.get("write"), "put", doc)
            r.eq(p.returncode, 0, "%s: put%s (%s)" % (
                name, " with the write token" if roles else "", p.stderr.strip()))
            p = ctl(d.addr, roles.get("read"), "search", "deployment configuration", "-k", "1")
            r.check(p.returncode == 0 and doc in p.stdout, "%s: search%s finds it" % (
                name, " with the read token" if roles else ""), (p.stdout, p.stderr))
            # The image's HEALTHCHECK command, with the image's CTXD_ADDR
            # pointing at this daemon (Health needs no token).
            argv = healthcheck_argv()
            hc = subprocess.run([CTXCTL_BIN] + argv[1:], capture_output=True, text=True,
                                timeout=30, env=dict(os.environ, CTXD_ADDR=d.addr))
            r.check(hc.returncode == 0 and hc.stdout.strip() == "SERVING",
                    "%s: the HEALTHCHECK command says SERVING" % name,
                    (hc.returncode, hc.stdout, hc.stderr))
            if conf.get("metrics.listen"):
                with d._log_lock:
                    m = [METRICS_RE.search(l) for l in d.log_lines]
                maddr = next((x.group(1) for x in m if x), None)
                body = urllib.request.urlopen("http://%s/metrics" % maddr, timeout=10).read()
                r.check(b"ctxd_" in body, "%s: metrics.listen serves /metrics" % name)
        finally:
            d.stop()
            shutil.rmtree(d.tmp, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return conf


def healthcheck_argv():
    text = re.sub(r"\\\n\s*", " ", read(os.path.join(DEPLOY, "Dockerfile")))
    m = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])$", text, re.M)
    argv = json.loads(m.group(1))
    r.eq(argv[0], "ctxctl", "the HEALTHCHECK runs ctxctl")
    return argv


def case_sample_config():
    check_conf("deploy/ctxd.conf", read(os.path.join(DEPLOY, "ctxd.conf")))


def k8s_docs():
    docs = {}
    kust = yaml.safe_load(read(os.path.join(K8S, "kustomization.yaml")))
    files = sorted(f for f in os.listdir(K8S) if f.endswith(".yaml") and f != "kustomization.yaml")
    r.eq(sorted(kust["resources"]), files, "kustomization lists every manifest")
    for f in files:
        for doc in yaml.safe_load_all(read(os.path.join(K8S, f))):
            r.check(doc.get("apiVersion") and doc.get("kind") and doc["metadata"].get("name"),
                    "%s: apiVersion, kind, metadata.name" % f, doc)
            docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


def case_k8s():
    docs = k8s_docs()
    cm = docs[("ConfigMap", "ctxd-config")]
    sts = docs[("StatefulSet", "ctxd")]
    secret = docs[("Secret", next(v["secret"]["secretName"] for v in sts["spec"]["template"]["spec"]["volumes"]
                                  if "secret" in v))]
    conf = check_conf("k8s ConfigMap ctxd.conf", cm["data"]["ctxd.conf"], secret["stringData"]["tokens"])
    port = int(conf["server.listen"].rsplit(":", 1)[1])
    grace_ms = int(conf.get("server.shutdown_grace_ms", "10000"))

    spec = sts["spec"]
    pod = spec["template"]["spec"]
    r.eq(spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items(),
         True, "the selector matches the pod labels")
    r.check(("Service", spec["serviceName"]) in docs, "serviceName is a Service", spec["serviceName"])
    sc = pod["securityContext"]
    r.eq(sc.get("runAsNonRoot"), True, "runAsNonRoot")
    uid = int(re.search(r'^uid=(\d+)', read(os.path.join(DEPLOY, "runtime-setup.sh")), re.M).group(1))
    r.eq((sc.get("runAsUser"), sc.get("fsGroup")), (uid, uid),
         "runAsUser and fsGroup are the image's ctxd user")
    r.check(pod["terminationGracePeriodSeconds"] * 1000 > grace_ms + 10000,
            "terminationGracePeriodSeconds covers shutdown_grace_ms and the saves",
            (pod["terminationGracePeriodSeconds"], grace_ms))
    (c,) = pod["containers"]
    r.eq(c["args"][:2], ["--config", "/etc/ctxd/ctxd.conf"], "the daemon reads /etc/ctxd/ctxd.conf")
    r.eq(c["securityContext"].get("readOnlyRootFilesystem"), True, "readOnlyRootFilesystem")
    r.eq(c["securityContext"].get("allowPrivilegeEscalation"), False, "no privilege escalation")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    r.eq(ports.get("grpc"), port, "container port grpc is server.listen's port")
    r.eq(ports.get("metrics"), 9464, "container port metrics is 9464")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        r.eq(c[probe].get("grpc", {}).get("port"), port, "%s is a native gRPC probe on %d" % (probe, port))
    res = c["resources"]
    r.check(res.get("requests", {}).get("memory") and res.get("limits", {}).get("memory"),
            "memory request and limit", res)
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    (claim,) = spec["volumeClaimTemplates"]
    r.eq(mounts.get(claim["metadata"]["name"], {}).get("mountPath"), conf["store.data"],
         "the volume claim is mounted at store.data")
    r.eq(vols["config"]["configMap"]["name"], "ctxd-config", "config volume is the ConfigMap")
    r.eq(mounts["config"]["mountPath"], "/etc/ctxd", "ConfigMap at /etc/ctxd")
    for k in ("jobs.output_root", "jobs.input_root"):
        r.check(not conf.get(k) or conf[k].startswith(conf["store.data"] + "/"),
                "%s lies on the data volume" % k, conf.get(k))

    # The tokens: Secret -> init container -> a 0600 copy the daemon reads.
    sec = docs[("Secret", vols["tokens-secret"]["secret"]["secretName"])]
    tokens = sec["stringData"]["tokens"].splitlines()
    r.check(tokens and all(len(l.split()) >= 2 and l.split()[1] in ("read", "write", "admin")
                           for l in tokens), "Secret tokens: 'TOKEN ROLE [NAME]' lines", tokens)
    (init,) = pod["initContainers"]
    cmd = init["command"]
    r.eq(cmd[:3], ["install", "-m", "0600"], "the init container copies the tokens with mode 0600")
    imounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    r.eq(cmd[3], imounts["tokens-secret"] + "/tokens", "it reads the Secret's tokens key")
    copy = cmd[4]
    r.eq(os.path.dirname(copy), imounts["tokens"], "it writes to the shared tokens volume")
    r.eq(mounts["tokens"]["mountPath"], imounts["tokens"], "the daemon mounts the same volume")
    r.eq(conf.get("auth.tokens_file"), copy, "auth.tokens_file is the 0600 copy")
    r.eq(ports.get("metrics"), int(conf["metrics.listen"].rsplit(":", 1)[1]),
         "container port metrics is metrics.listen's port")

    svc = docs[("Service", "ctxd")]
    sports = {p["name"]: (p["port"], p["targetPort"]) for p in svc["spec"]["ports"]}
    r.eq(sports, {"grpc": (port, "grpc"), "metrics": (9464, "metrics")},
         "Service ports gRPC and metrics")
    r.eq(svc["spec"]["selector"], spec["selector"]["matchLabels"], "Service selects the pods")


def unit_entries(text):
    """[(section, key, value)] of a systemd unit (keys may repeat)."""
    out, sect = [], None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            sect = line.strip("[]")
            continue
        k, _, v = line.partition("=")
        out.append((sect, k.strip(), v.strip()))
    return out


def case_systemd():
    text = read(os.path.join(DEPLOY, "ctxd.service"))
    svc = {k: v for s, k, v in unit_entries(text) if s == "Service"}
    filters = [v for s, k, v in unit_entries(text) if s == "Service" and k == "SystemCallFilter"]
    r.eq(filters[0], "@system-service", "SystemCallFilter=@system-service (an allow list)")
    conf = ini(read(os.path.join(DEPLOY, "ctxd.conf")))
    r.eq(svc.get("Type"), "notify", "Type=notify")
    r.check("HUP" in svc.get("ExecReload", "") and "$MAINPID" in svc["ExecReload"],
            "ExecReload sends SIGHUP to the main process", svc.get("ExecReload"))
    argv = svc["ExecStart"].split()
    r.eq(argv[argv.index("--config") + 1], "/etc/ctxd/ctxd.conf", "ExecStart reads /etc/ctxd/ctxd.conf")
    r.eq(argv[argv.index("--store.data") + 1], "/var/lib/" + svc.get("StateDirectory", ""),
         "the data dir is the StateDirectory")
    stop_s = int(svc["TimeoutStopSec"])
    r.check(stop_s * 1000 > int(conf["server.shutdown_grace_ms"]) + 10000,
            "TimeoutStopSec covers shutdown_grace_ms and the saves", stop_s)
    for k, v in (("ProtectSystem", "strict"), ("NoNewPrivileges", "yes"), ("CapabilityBoundingSet", ""),
                 ("PrivateTmp", "yes"), ("ProtectHome", "yes"), ("Restart", "on-failure")):
        r.eq(svc.get(k), v, "%s=%s" % (k, v))
    analyze = shutil.which("systemd-analyze")
    r.check(analyze, "systemd-analyze is installed (deploy/install-deps.sh: systemd)")
    if not analyze:
        return
    tmp = tempfile.mkdtemp(prefix="ctxd-unit-")
    try:
        # verify checks that ExecStart's binary exists: point it at the build.
        path = os.path.join(tmp, "ctxd.service")
        with open(path, "w") as f:
            f.write(text.replace("ExecStart=/usr/bin/ctxd", "ExecStart=" + CTXD_BIN))
        p = subprocess.run([analyze, "verify", path], capture_output=True, text=True)
        r.check(p.returncode == 0 and not p.stderr.strip() and not p.stdout.strip(),
                "systemd-analyze verify: no finding", (p.returncode, p.stdout, p.stderr))
        # A broken copy must be caught, or the check above proves nothing.
        with open(path, "w") as f:
            f.write(text.replace("ExecStart=/usr/bin/ctxd", "ExecStart=" + CTXD_BIN)
                    .replace("Type=notify", "Type=notifyy"))
        p = subprocess.run([analyze, "verify", path], capture_output=True, text=True)
        r.check("notifyy" in p.stderr, "systemd-analyze verify reports a bad Type", p.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def case_dockerfile():
    text = read(os.path.join(DEPLOY, "Dockerfile"))
    ins = re.findall(r"^([A-Z]+)\s+(.*?)(?<!\\)$", re.sub(r"\\\n\s*", " ", text), re.M)
    by = {}
    for k, v in ins:
        by.setdefault(k, []).append(v)
    r.eq([f.split()[0] for f in by["FROM"]], ["debian:12", "debian:12-slim"],
         "multi-stage: debian:12 build, debian:12-slim runtime")
    r.check({"50051", "9464"} <= set(" ".join(by["EXPOSE"]).split()), "EXPOSE 50051 and 9464",
            by["EXPOSE"])
    r.eq(by["VOLUME"], ['["/var/lib/ctxd"]'], "VOLUME /var/lib/ctxd")
    uid = re.search(r'^uid=(\d+)', read(os.path.join(DEPLOY, "runtime-setup.sh")), re.M).group(1)
    r.eq(by["USER"], ["%s:%s" % (uid, uid)], "USER is runtime-setup.sh's ctxd user")
    r.check("ctxctl" in by["HEALTHCHECK"][0] and "status" in by["HEALTHCHECK"][0],
            "HEALTHCHECK runs ctxctl status", by["HEALTHCHECK"])
    r.check("/etc/ctxd/ctxd.conf" in by["ENTRYPOINT"][0], "ENTRYPOINT reads /etc/ctxd/ctxd.conf")
    runs = " ".join(by["RUN"])
    for script in ("deploy/install-deps.sh", "deploy/build-release.sh", "runtime-setup.sh"):
        r.check(script in runs, "a RUN step runs %s" % script, runs)
    for script in ("install-deps.sh", "build-release.sh", "runtime-setup.sh", "check-debian-root.sh"):
        r.check(os.access(os.path.join(DEPLOY, script), os.X_OK), "deploy/%s is executable" % script)
    # The staged file names the runtime stage copies agree with build-release.sh.
    br = read(os.path.join(DEPLOY, "build-release.sh"))
    r.check("runtime-packages.txt" in br and "runtime-packages.txt" in read(
        os.path.join(DEPLOY, "runtime-setup.sh")), "build and runtime stage share the package list")


r.case("sample config deploy/ctxd.conf", case_sample_config)
r.case("Kubernetes manifests", case_k8s)
r.case("systemd unit", case_systemd)
r.case("Dockerfile", case_dockerfile)
r.finish()
