"""gguf.py - ctxd's own GGUF reader and writer (numpy only).

The reader parses the header, the key/value section and the tensor table of
any GGUF v2/v3 file and maps tensor data lazily. The writer emits GGUF v3 with
f32, f16 and Q8_0 tensors (Q8_0: blocks of 32 weights along a row, one f16
scale max|x|/127 and 32 int8 values, as ggml's quantize_row_q8_0_ref does).
"""
import struct

import numpy as np

# GGUF value types
T_U8, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR, T_U64, T_I64, T_F64 = range(13)
_SCALAR = {T_U8: "<B", T_I8: "<b", T_U16: "<H", T_I16: "<h", T_U32: "<I", T_I32: "<i",
           T_F32: "<f", T_BOOL: "<?", T_U64: "<Q", T_I64: "<q", T_F64: "<d"}

# ggml tensor types this module handles
GGML_F32, GGML_F16, GGML_Q8_0 = 0, 1, 8
# llama_ftype values for general.file_type
FTYPE = {GGML_F32: 0, GGML_F16: 1, GGML_Q8_0: 7}
QK8_0 = 32


class GGUFError(Exception):
    pass


class Reader:
    """kv: dict name -> (type, value) (arrays: (T_ARR, (item type, list or
    numpy array))); tensors: dict name -> (ggml type, shape in ggml order
    (ne0 first), absolute data offset)."""

    def __init__(self, path):
        with open(path, "rb") as f:
            self.data = f.read()
        d = self.data
        if d[:4] != b"GGUF":
            raise GGUFError("%s: not a GGUF file" % path)
        self.version, n_tensors, n_kv = struct.unpack_from("<IQQ", d, 4)
        if self.version not in (2, 3):
            raise GGUFError("%s: GGUF version %d not supported" % (path, self.version))
        off = 24
        self.kv = {}
        for _ in range(n_kv):
            key, off = self._str(off)
            (t,) = struct.unpack_from("<I", d, off)
            off += 4
            val, off = self._value(t, off)
            self.kv[key] = (t, val)
        self.tensors = {}
        infos = []
        for _ in range(n_tensors):
            name, off = self._str(off)
            (nd,) = struct.unpack_from("<I", d, off)
            off += 4
            shape = struct.unpack_from("<%dQ" % nd, d, off)
            off += 8 * nd
            gt, toff = struct.unpack_from("<IQ", d, off)
            off += 12
            infos.append((name, gt, tuple(shape), toff))
        align = self.get("general.alignment", 32)
        base = (off + align - 1) // align * align
        for name, gt, shape, toff in infos:
            self.tensors[name] = (gt, shape, base + toff)

    def _str(self, off):
        (n,) = struct.unpack_from("<Q", self.data, off)
        return self.data[off + 8: off + 8 + n].decode("utf-8"), off + 8 + n

    def _value(self, t, off):
        if t == T_STR:
            return self._str(off)
        if t == T_ARR:
            sub, n = struct.unpack_from("<IQ", self.data, off)
            off += 12
            if sub == T_STR:
                items = []
                for _ in range(n):
                    s, off = self._str(off)
                    items.append(s)
                return (sub, items), off
            if sub not in _SCALAR:
                raise GGUFError("GGUF: array of type %d not supported" % sub)
            dt = np.dtype(_SCALAR[sub])
            arr = np.frombuffer(self.data, dtype=dt, count=n, offset=off)
            return (sub, arr), off + dt.itemsize * n
        if t not in _SCALAR:
            raise GGUFError("GGUF: value type %d not supported" % t)
        fmt = _SCALAR[t]
        return struct.unpack_from(fmt, self.data, off)[0], off + struct.calcsize(fmt)

    def get(self, key, default=None):
        if key not in self.kv:
            return default
        t, v = self.kv[key]
        return v[1] if t == T_ARR else v

    def tensor(self, name):
        """The tensor as float32, numpy shape reversed from ggml's (rows
        first: a [out, in] matrix for a weight of ne = (in, out))."""
        gt, shape, off = self.tensors[name]
        n = int(np.prod(shape))
        np_shape = tuple(reversed(shape))
        if gt == GGML_F32:
            return np.frombuffer(self.data, np.float32, n, off).reshape(np_shape).copy()
        if gt == GGML_F16:
            return np.frombuffer(self.data, np.float16, n, off).astype(np.float32).reshape(np_shape)
        if gt == GGML_Q8_0:
            nb = n // QK8_0
            blk = np.frombuffer(self.data, np.uint8, nb * 34, off).reshape(nb, 34)
            dd = blk[:, :2].copy().view(np.float16).astype(np.float32)
            qs = blk[:, 2:].copy().view(np.int8).astype(np.float32)
            return (qs * dd).reshape(np_shape)
        raise GGUFError("GGUF: tensor %s has type %d, not supported" % (name, gt))


def _q8_0(x):
    """Blocks of 32, their scale d (float32) and int8 values, as ggml's
    quantize_row_q8_0_ref computes them (roundf: half away from zero)."""
    b = np.asarray(x, dtype=np.float32).reshape(-1, QK8_0)
    d = np.abs(b).max(axis=1) / np.float32(127.0)
    inv = np.where(d > 0, np.float32(1.0) / np.where(d > 0, d, np.float32(1.0)), np.float32(0.0))
    v = b * inv[:, None].astype(np.float32)
    q = np.trunc(v + np.copysign(np.float32(0.5), v)).astype(np.int8)
    return d, q


def quantize_q8_0(x):
    """x: float array whose last dimension divides by 32 -> bytes of Q8_0
    blocks in row-major order."""
    x = np.asarray(x, dtype=np.float32)
    if x.shape[-1] % QK8_0:
        raise GGUFError("Q8_0 needs rows that divide by 32 (got %d)" % x.shape[-1])
    d, q = _q8_0(x)
    out = np.empty((q.shape[0], 34), dtype=np.uint8)
    out[:, :2] = d.astype(np.float16).reshape(-1, 1).view(np.uint8)
    out[:, 2:] = q.view(np.uint8)
    return out.tobytes()


def dequantize_q8_0(x):
    """The float32 values a Q8_0 tensor of x holds (what llama.cpp computes with)."""
    d, q = _q8_0(x)
    return (q.astype(np.float32) * d.astype(np.float16).astype(np.float32)[:, None]).reshape(np.shape(x))


class Writer:
    """Collect key/values and tensors, then write(path)."""

    def __init__(self, arch):
        self.kvs = []
        self.tensors = []
        self.add("general.architecture", T_STR, arch)

    def add(self, key, t, value, sub=None):
        self.kvs.append((key, t, value, sub))

    def add_tensor(self, name, arr, gtype):
        """arr: numpy array in row-major order, rows first ([out, in])."""
        arr = np.ascontiguousarray(arr)
        shape = tuple(reversed(arr.shape))  # ggml: ne0 is the contiguous dimension
        if gtype == GGML_F32:
            raw = arr.astype("<f4").tobytes()
        elif gtype == GGML_F16:
            raw = arr.astype("<f2").tobytes()
        elif gtype == GGML_Q8_0:
            raw = quantize_q8_0(arr)
        else:
            raise GGUFError("writer: tensor type %d not supported" % gtype)
        self.tensors.append((name, shape, gtype, raw))

    @staticmethod
    def _s(s):
        b = s.encode("utf-8")
        return struct.pack("<Q", len(b)) + b

    def _val(self, t, v, sub):
        if t == T_STR:
            return self._s(v)
        if t == T_ARR:
            out = [struct.pack("<IQ", sub, len(v))]
            if sub == T_STR:
                out.extend(self._s(x) for x in v)
            else:
                out.append(np.asarray(v, dtype=np.dtype(_SCALAR[sub])).tobytes())
            return b"".join(out)
        return struct.pack(_SCALAR[t], v)

    def write(self, path, align=32):
        parts = [b"GGUF", struct.pack("<IQQ", 3, len(self.tensors), len(self.kvs))]
        for key, t, v, sub in self.kvs:
            parts += [self._s(key), struct.pack("<I", t), self._val(t, v, sub)]
        off = 0
        offsets = []
        for name, shape, gtype, raw in self.tensors:
            offsets.append(off)
            off = (off + len(raw) + align - 1) // align * align
        for (name, shape, gtype, raw), toff in zip(self.tensors, offsets):
            parts += [self._s(name), struct.pack("<I", len(shape)),
                      struct.pack("<%dQ" % len(shape), *shape), struct.pack("<IQ", gtype, toff)]
        head = b"".join(parts)
        with open(path, "wb") as f:
            f.write(head)
            f.write(b"\0" * ((-len(head)) % align))
            for name, shape, gtype, raw in self.tensors:
                f.write(raw)
                f.write(b"\0" * ((-len(raw)) % align))


def copy_tokenizer(reader, writer):
    """Copy every tokenizer.* key of a (vocabulary) GGUF; returns n_vocab."""
    n_vocab = 0
    for key, (t, v) in reader.kv.items():
        if not key.startswith("tokenizer."):
            continue
        if t == T_ARR:
            sub, items = v
            writer.add(key, T_ARR, items, sub)
            if key == "tokenizer.ggml.tokens":
                n_vocab = len(items)
        else:
            writer.add(key, t, v)
    if not n_vocab:
        raise GGUFError("the vocabulary GGUF has no tokenizer.ggml.tokens")
    return n_vocab
