"""tls_certs - test certificates made with the openssl CLI at test time (no
key material is checked in): a CA, and certificates it signs with the
extensions asked for. P-256 keys, valid for two days."""

import os
import subprocess


def _openssl(d, *args):
    subprocess.run(["openssl"] + list(args), check=True, capture_output=True, cwd=d)


def make_ca(d, name):
    """A self-signed CA in folder d: NAME.pem and NAME.key, subject CN=NAME."""
    _openssl(d, "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", name + ".key",
             "-out", name + ".pem", "-days", "2", "-subj", "/CN=%s" % name,
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")


def make_cert(d, name, ca, cn, ext):
    """NAME.pem and NAME.key in folder d: subject CN=cn, signed by CA `ca`
    (made by make_ca in d), with the x509v3 extension lines `ext` (e.g.
    "subjectAltName=DNS:localhost,IP:127.0.0.1\\nextendedKeyUsage=serverAuth")."""
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write(ext + "\n")
    _openssl(d, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", name + ".key", "-out", name + ".csr",
             "-subj", "/CN=%s" % cn)
    _openssl(d, "x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem",
             "-CAkey", ca + ".key", "-CAcreateserial", "-out", name + ".pem",
             "-days", "2", "-extfile", name + ".ext")


class CertDir:
    """A temp folder of test certificates: path(name), read(name) (bytes),
    ca(name) and cert(name, ca, cn, ext) as make_ca and make_cert."""

    def __init__(self, prefix="ctxd-certs-"):
        import tempfile
        self.dir = tempfile.mkdtemp(prefix=prefix)

    def path(self, name):
        return os.path.join(self.dir, name)

    def read(self, name):
        with open(self.path(name), "rb") as f:
            return f.read()

    def ca(self, name):
        make_ca(self.dir, name)

    def cert(self, name, ca, cn, ext):
        make_cert(self.dir, name, ca, cn, ext)
