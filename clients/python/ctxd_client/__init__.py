"""ctxd_client - a small Python client for the ctxd daemon (gRPC over h2c,
or over TLS with optional client certificates, and bearer tokens).

The generated grpcio stubs are not checked in: the build writes them to
``<build>/python`` (CMake target ``python_stubs``), or generate them by hand
from the repository root::

    mkdir -p /tmp/ctxd-py
    /usr/bin/python3 -m grpc_tools.protoc -Iproto \\
        --python_out=/tmp/ctxd-py --grpc_python_out=/tmp/ctxd-py \\
        ctxd/v1/documents.proto ctxd/v1/admin.proto ctxd/v1/retrieval.proto \\
        ctxd/v1/corpus.proto grpc/health/v1/health.proto \\
        grpc/reflection/v1/reflection.proto grpc/reflection/v1alpha/reflection.proto

and put both that folder and ``clients/python`` on PYTHONPATH::

    PYTHONPATH=build/python:clients/python /usr/bin/python3 -c '
    from ctxd_client import CtxdClient
    with CtxdClient("127.0.0.1:50051") as c:
        r = c.put("Some long text ...", id="doc-1", metadata={"lang": "en"})
        print(r.id, r.chunks, r.tokens)
        print(c.get("doc-1", with_chunks=True).chunks[0])
        for info in c.list(): print(info.id, info.bytes)
        for ack in c.put_many([("a", "text a"), ("b", "text b")]):
            print(list(ack.ids), [(e.id, e.reason) for e in ack.errors])
        print(c.stats().documents, c.verify().ok, c.health())
        for h in c.search("what the text says", k=5).hits:
            print(h.score, h.chunk.doc_id, h.chunk.byte_start, h.chunk.byte_end)
    '

(On Debian 12 grpcio and protobuf import only under ``/usr/bin/python3``.)

Errors: every method raises :class:`CtxdError` for a failed call. It carries
``code`` (a ``grpc.StatusCode``), ``message`` (the server's grpc-message text)
and ``method``; ``CtxdError`` is also a ``grpc.RpcError``: ``e.code()`` and
``e.details()`` work as for any grpc error (and ``e.code == StatusCode.X``).
A missing document is an error (``NOT_FOUND``) for :meth:`get`, but not for
:meth:`delete` (``deleted`` is False).

Collections: the document calls take ``collection=`` (empty: "default");
:meth:`put` into an unknown collection creates it with the server's defaults.
:meth:`search`, :meth:`search_batch`, :meth:`create_collection`,
:meth:`drop_collection`, :meth:`list_collections` and :meth:`rebuild_index`
cover the Retrieval and collection calls.

Key context: :meth:`select` (and :meth:`select_stream`, with progress)
returns the segments of a long text that matter for a question under a
token budget. The model: :meth:`load_model`, :meth:`rechunk` (after a
tokenizer change), and :meth:`stats` (``model``, ``tokenizer_mismatch``).

Corpus jobs: :meth:`reorder` starts a job and yields its progress events
(the last one carries the result); :meth:`get_job`, :meth:`watch_job`,
:meth:`cancel_job`, :meth:`list_jobs` and :meth:`fetch_result` (which
downloads the output files) follow and manage jobs.

TLS and tokens: ``CtxdClient(addr, tls=True, ca="ca.pem", cert=..., key=...,
server_name=..., token=... or token_file=...)``; :meth:`CtxdClient.from_env`
reads the same settings as ctxctl from CTXD_ADDR, CTXD_TLS, CTXD_CA,
CTXD_CERT, CTXD_KEY, CTXD_SERVER_NAME, CTXD_TOKEN and CTXD_TOKEN_FILE.

The stub modules are reachable as attributes once imported:
``ctxd_client.documents_pb2``, ``admin_pb2``, ``health_pb2``, ... .
"""

import collections
import os
import sys

import grpc

__all__ = ["CtxdClient", "CtxdError", "load_stubs", "read_token_file",
           "DEFAULT_ADDR"]

DEFAULT_ADDR = "127.0.0.1:50051"


def _graft_grpc_namespace():
    # The stubs for grpc/health/v1/health.proto live in a package named
    # `grpc`, which is also grpcio's own package: Python picks grpcio's
    # (a regular package) and never sees <stubs>/grpc/health. Graft every
    # stub folder's grpc/ onto grpcio's package path so that
    # `grpc.health.v1.health_pb2` (which the generated code imports by that
    # name) resolves.
    for entry in sys.path:
        d = os.path.join(entry or ".", "grpc")
        if os.path.isdir(os.path.join(d, "health")) or os.path.isdir(
                os.path.join(d, "reflection")):
            d = os.path.abspath(d)
            if d not in grpc.__path__:
                grpc.__path__.append(d)


def load_stubs():
    """Import the generated modules (from PYTHONPATH) and expose them as
    attributes of this package. Raises ImportError with a hint if they are
    not on the path."""
    _graft_grpc_namespace()
    try:
        from ctxd.v1 import documents_pb2, documents_pb2_grpc
        from ctxd.v1 import admin_pb2, admin_pb2_grpc
        from ctxd.v1 import retrieval_pb2, retrieval_pb2_grpc
        from ctxd.v1 import corpus_pb2, corpus_pb2_grpc
        from grpc.health.v1 import health_pb2, health_pb2_grpc
        from grpc.reflection.v1 import reflection_pb2 as reflection_v1_pb2
        from grpc.reflection.v1 import reflection_pb2_grpc as reflection_v1_pb2_grpc
        from grpc.reflection.v1alpha import reflection_pb2 as reflection_v1alpha_pb2
        from grpc.reflection.v1alpha import reflection_pb2_grpc as reflection_v1alpha_pb2_grpc
    except ImportError as e:
        raise ImportError(
            "ctxd_client: generated stubs not found on PYTHONPATH (%s); build "
            "the python_stubs target and add <build>/python, see the "
            "ctxd_client docstring" % e) from e
    g = globals()
    for name, mod in list(locals().items()):
        if name.endswith("_pb2") or name.endswith("_pb2_grpc"):
            g[name] = mod


load_stubs()


class _Code:
    """A grpc.StatusCode that can also be called: CtxdError.code is read as
    an attribute (``e.code == grpc.StatusCode.NOT_FOUND``), but code written
    for any grpc.RpcError calls ``e.code()``; both work. Compares and hashes
    as the StatusCode; ``.name`` and ``.value`` are the StatusCode's."""

    __slots__ = ("_sc",)

    def __init__(self, sc):
        self._sc = sc

    def __call__(self):
        return self._sc

    def __eq__(self, other):
        if isinstance(other, _Code):
            other = other._sc
        return self._sc == other

    def __hash__(self):
        return hash(self._sc)

    def __getattr__(self, name):
        return getattr(self._sc, name)

    def __repr__(self):
        return repr(self._sc)

    def __str__(self):
        return str(self._sc)


class CtxdError(grpc.RpcError):
    """A failed ctxd call: `code` (grpc.StatusCode; ``e.code()`` works too,
    as for any grpc.RpcError), `message`, `method`."""

    def __init__(self, code, message, method=""):
        if isinstance(code, _Code):
            code = code()
        if code is None:
            code = grpc.StatusCode.UNKNOWN
        super().__init__("%s: %s%s" % (
            code.name, message, " (%s)" % method if method else ""))
        self.code = _Code(code)
        self.message = message
        self.method = method

    def status_code(self):
        return self.code()

    def details(self):
        return self.message

    @classmethod
    def from_rpc_error(cls, err, method=""):
        code = err.code() if hasattr(err, "code") and callable(err.code) else None
        msg = err.details() if hasattr(err, "details") and callable(err.details) else str(err)
        return cls(code, msg or "", method)


def _pem(what, value):
    """PEM bytes from `value`: bytes as they are, a str or os.PathLike as a
    file to read."""
    if value is None or isinstance(value, bytes):
        return value
    try:
        with open(value, "rb") as f:
            return f.read()
    except OSError as e:
        raise OSError(e.errno, "ctxd_client: cannot read %s %s: %s" % (
            what, value, e.strerror)) from None


def read_token_file(path):
    """The token in file `path`: its one line, without the line end.
    Raises ValueError for an empty file or one with more than one token."""
    with open(path, "rb") as f:
        data = f.read(65537)
    tok = data.decode("ascii", "replace").strip()
    if not tok or len(data) > 65536 or any(c.isspace() for c in tok):
        raise ValueError("ctxd_client: token file %s: want one token on one "
                         "line (no spaces)" % path)
    return tok


def _check_token(token):
    if not token or len(token) > 4096 or any(
            not ("\x21" <= ch <= "\x7e") for ch in token):
        raise ValueError("ctxd_client: a token is 1 to 4096 characters of "
                         "printable ASCII without spaces")
    return token


class _CallDetails(collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials",
                         "wait_for_ready", "compression")),
                   grpc.ClientCallDetails):
    pass


class _TokenInterceptor(grpc.UnaryUnaryClientInterceptor,
                        grpc.UnaryStreamClientInterceptor,
                        grpc.StreamUnaryClientInterceptor,
                        grpc.StreamStreamClientInterceptor):
    """Adds ``authorization: Bearer TOKEN`` to every call's metadata. An
    interceptor rather than call credentials, which grpcio allows only on
    TLS channels: a daemon on loopback may take tokens in cleartext."""

    def __init__(self, token):
        self._md = ("authorization", "Bearer " + _check_token(token))

    def _details(self, d):
        md = [m for m in (d.metadata or ()) if m[0] != "authorization"]
        md.append(self._md)
        return _CallDetails(d.method, d.timeout, md,
                            getattr(d, "credentials", None),
                            getattr(d, "wait_for_ready", None),
                            getattr(d, "compression", None))

    def intercept_unary_unary(self, cont, details, request):
        return cont(self._details(details), request)

    def intercept_unary_stream(self, cont, details, request):
        return cont(self._details(details), request)

    def intercept_stream_unary(self, cont, details, request_iterator):
        return cont(self._details(details), request_iterator)

    def intercept_stream_stream(self, cont, details, request_iterator):
        return cont(self._details(details), request_iterator)


def _wrap(method, fn, *a, **kw):
    try:
        return fn(*a, **kw)
    except grpc.RpcError as e:
        if isinstance(e, CtxdError):
            raise
        raise CtxdError.from_rpc_error(e, method) from None


class CtxdClient:
    """A thin, friendly wrapper over the generated stubs.

    ``CtxdClient(addr, timeout=30.0)``: `timeout` is the per-call deadline in
    seconds for unary calls (None: no deadline); streaming calls take their
    own `timeout` argument (default None). Pass `channel=` to share an
    existing grpc.Channel (it is then not closed by close()), `options=` for
    grpc channel options (e.g. [("grpc.max_send_message_length", -1)]).
    Usable as a context manager.

    TLS (keyword arguments): ``tls=True`` connects over TLS, verifying the
    server's certificate against `ca` (default: grpcio's bundled roots);
    `ca`, `cert` and `key` are PEM bytes, or a str/PathLike naming a file;
    `cert` and `key` present a client certificate (mTLS; `key` defaults to
    `cert`'s file); `server_name` is the name the server's certificate must
    carry when `addr` is not it. Any of them implies ``tls=True``.
    ``token=`` (or ``token_file=``) sends ``authorization: Bearer TOKEN`` on
    every call, on a channel given with `channel=` too.
    """

    def __init__(self, addr=DEFAULT_ADDR, timeout=30.0, channel=None,
                 options=None, *, tls=False, ca=None, cert=None, key=None,
                 server_name=None, token=None, token_file=None):
        self.addr = addr
        self.timeout = timeout
        self._own = channel is None
        if token is not None and token_file is not None:
            raise ValueError("ctxd_client: give token or token_file, not both")
        if token_file is not None:
            token = read_token_file(token_file)
        if key is not None and cert is None:
            raise ValueError("ctxd_client: a client key needs a client "
                             "certificate (cert=)")
        tls = bool(tls or ca is not None or cert is not None or
                   server_name is not None)
        if channel is None:
            opts = [("grpc.max_send_message_length", 128 << 20),
                    ("grpc.max_receive_message_length", 128 << 20)]
            if server_name:
                opts.append(("grpc.ssl_target_name_override", server_name))
            opts += list(options or [])
            if tls:
                cert_pem = _pem("client certificate", cert)
                key_pem = _pem("client key", key) if key is not None else cert_pem
                creds = grpc.ssl_channel_credentials(
                    root_certificates=_pem("CA file", ca),
                    private_key=key_pem, certificate_chain=cert_pem)
                channel = grpc.secure_channel(addr, creds, options=opts)
            else:
                channel = grpc.insecure_channel(addr, options=opts)
        self._raw_channel = channel
        if token is not None:
            channel = grpc.intercept_channel(channel, _TokenInterceptor(token))
        self.channel = channel
        self.documents = documents_pb2_grpc.DocumentsStub(channel)
        self.retrieval = retrieval_pb2_grpc.RetrievalStub(channel)
        self.admin = admin_pb2_grpc.AdminStub(channel)
        self.corpus = corpus_pb2_grpc.CorpusStub(channel)
        self.health_stub = health_pb2_grpc.HealthStub(channel)

    # -- lifecycle -------------------------------------------------------
    @classmethod
    def from_env(cls, addr=None, **kw):
        """A client set up as ctxctl would be from the environment: `addr`,
        else CTXD_ADDR, else 127.0.0.1:50051; CTXD_TLS=1, CTXD_CA,
        CTXD_CERT, CTXD_KEY, CTXD_SERVER_NAME, CTXD_TOKEN or CTXD_TOKEN_FILE.
        Arguments given override the variables, as ctxctl's options do."""
        env = os.environ.get
        args = {"tls": env("CTXD_TLS", "") not in ("", "0")}
        for k, var in (("ca", "CTXD_CA"), ("cert", "CTXD_CERT"),
                       ("key", "CTXD_KEY"), ("server_name", "CTXD_SERVER_NAME")):
            if env(var):
                args[k] = env(var)
        if "token" not in kw and "token_file" not in kw:
            if env("CTXD_TOKEN"):
                args["token"] = env("CTXD_TOKEN")
            elif env("CTXD_TOKEN_FILE"):
                args["token_file"] = env("CTXD_TOKEN_FILE")
        args.update(kw)
        return cls(addr or env("CTXD_ADDR") or DEFAULT_ADDR, **args)

    def close(self):
        if self._own:
            self._raw_channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _t(self, timeout):
        return self.timeout if timeout is ... else timeout

    # -- Documents -------------------------------------------------------
    @staticmethod
    def _chunk_inputs(chunks):
        """ChunkInput messages from ChunkInput, (start, end), (start, end,
        vector) or {"byte_start", "byte_end", "vector"} items."""
        out = []
        for c in chunks or ():
            if isinstance(c, documents_pb2.ChunkInput):
                out.append(c)
            elif isinstance(c, dict):
                out.append(documents_pb2.ChunkInput(**c))
            elif isinstance(c, (tuple, list)) and len(c) in (2, 3):
                out.append(documents_pb2.ChunkInput(
                    byte_start=c[0], byte_end=c[1],
                    vector=c[2] if len(c) > 2 else ()))
            else:
                raise TypeError("ctxd_client: cannot make a chunk from %r" % (c,))
        return out

    @staticmethod
    def make_request(doc=None, *, id="", text="", metadata=None,
                     max_tokens=0, overlap_tokens=0, collection="",
                     chunks=None):
        """Build a PutRequest from a PutRequest, a Document, a dict
        ({"id", "text", "metadata", "collection", "chunks", "max_tokens",
        "overlap_tokens"}), an (id, text) or (id, text, metadata) tuple, or
        the keyword arguments. `collection` is the default for an input
        that names none; `chunks` are client-chosen byte ranges with
        optional vectors (see _chunk_inputs)."""
        if isinstance(doc, documents_pb2.PutRequest):
            if collection and not doc.document.collection:
                doc = documents_pb2.PutRequest.FromString(doc.SerializeToString())
                doc.document.collection = collection
            return doc
        if isinstance(doc, documents_pb2.Document):
            if collection and not doc.collection:
                doc = documents_pb2.Document.FromString(doc.SerializeToString())
                doc.collection = collection
            return documents_pb2.PutRequest(
                document=doc, chunking=documents_pb2.ChunkOptions(
                    max_tokens=max_tokens, overlap_tokens=overlap_tokens))
        if isinstance(doc, dict):
            id = doc.get("id", id)
            text = doc.get("text", text)
            metadata = doc.get("metadata", metadata)
            collection = doc.get("collection") or collection
            chunks = doc.get("chunks", chunks)
            max_tokens = doc.get("max_tokens", max_tokens)
            overlap_tokens = doc.get("overlap_tokens", overlap_tokens)
        elif isinstance(doc, (tuple, list)):
            id, text = doc[0], doc[1]
            if len(doc) > 2:
                metadata = doc[2]
        elif doc is not None:
            raise TypeError("ctxd_client: cannot make a document from %r" % type(doc))
        return documents_pb2.PutRequest(
            document=documents_pb2.Document(
                id=id, text=text, metadata=metadata or {},
                collection=collection,
                chunks=CtxdClient._chunk_inputs(chunks)),
            chunking=documents_pb2.ChunkOptions(max_tokens=max_tokens,
                                                overlap_tokens=overlap_tokens))

    def put(self, text, id="", metadata=None, max_tokens=0, overlap_tokens=0,
            timeout=..., collection="", chunks=None):
        """Store (or replace) one document. Returns PutResponse (id, chunks,
        replaced, tokens); an empty id makes the server generate one.
        `collection`: empty is "default"; an unknown one is created with
        the server's defaults. `chunks`: optional client-chosen chunks,
        (byte_start, byte_end[, vector]) tuples, dicts or ChunkInput."""
        req = self.make_request(id=id, text=text, metadata=metadata,
                                max_tokens=max_tokens,
                                overlap_tokens=overlap_tokens,
                                collection=collection, chunks=chunks)
        return _wrap("Put", self.documents.Put, req, timeout=self._t(timeout))

    def put_many(self, docs, timeout=None, collection=""):
        """Stream documents through PutStream; yields a PutAck per server
        commit (`ids`: durable, `errors`: rejected, each with a reason).
        `docs` is any iterable accepted by make_request(); it is consumed
        lazily, so it can be a generator of any length. `collection` is
        the collection of the documents that do not name one.

        If iterating `docs` raises (or an item is not a document), the
        stream is cancelled and that same exception is raised here, not a
        CtxdError: acks already yielded stay durable, documents sent after
        the last ack may or may not have been stored."""
        failed = []
        call = []

        def reqs():
            # grpcio runs this on its own thread and would replace an
            # exception with UNKNOWN "Exception iterating requests!": keep
            # it, cancel the call, and raise it to the caller below.
            try:
                for d in docs:
                    yield self.make_request(d, collection=collection)
            except Exception as e:  # noqa: BLE001 - re-raised to the caller
                failed.append(e)
                if not call:
                    raise
                call[0].cancel()

        def acks(it):
            try:
                for ack in it:
                    yield ack
            except grpc.RpcError as e:
                if failed:
                    raise failed[0] from None
                if isinstance(e, CtxdError):
                    raise
                raise CtxdError.from_rpc_error(e, "PutStream") from None
            if failed:
                raise failed[0]

        it = self.documents.PutStream(reqs(), timeout=timeout)
        call.append(it)
        return acks(it)

    def get(self, id, with_text=True, with_chunks=False, timeout=...,
            collection="", with_vectors=False):
        """GetResponse for `id` (in `collection`, empty: "default"); raises
        CtxdError(NOT_FOUND) if missing. `with_vectors` fills each chunk's
        vector (implies with_chunks)."""
        return _wrap("Get", self.documents.Get,
                     documents_pb2.GetRequest(
                         id=id, with_text=with_text,
                         with_chunks=with_chunks or with_vectors,
                         with_vectors=with_vectors, collection=collection),
                     timeout=self._t(timeout))

    def delete(self, id, timeout=..., collection=""):
        """DeleteResponse; `deleted` is False when there was no such id."""
        return _wrap("Delete", self.documents.Delete,
                     documents_pb2.DeleteRequest(id=id, collection=collection),
                     timeout=self._t(timeout))

    def list_page(self, page_size=0, page_token="", timeout=..., collection=""):
        """One ListResponse page."""
        return _wrap("List", self.documents.List,
                     documents_pb2.ListRequest(page_size=page_size,
                                               page_token=page_token,
                                               collection=collection),
                     timeout=self._t(timeout))

    def list(self, page_size=0, timeout=..., collection=""):
        """Iterate over every DocumentInfo, fetching pages as needed."""
        token = ""
        while True:
            page = self.list_page(page_size, token, timeout, collection)
            for d in page.documents:
                yield d
            token = page.next_page_token
            if not token:
                return

    def chunk(self, text, max_tokens=0, overlap_tokens=0, with_text=False,
              timeout=...):
        """Chunk `text` without storing anything: ChunkResponse."""
        return _wrap("Chunk", self.documents.Chunk,
                     documents_pb2.ChunkRequest(
                         text=text, with_text=with_text,
                         chunking=documents_pb2.ChunkOptions(
                             max_tokens=max_tokens,
                             overlap_tokens=overlap_tokens)),
                     timeout=self._t(timeout))

    # -- Retrieval -------------------------------------------------------
    @staticmethod
    def make_search(query=None, **fields):
        """Build a SearchRequest from a SearchRequest (returned as is), a
        query text (str), a query vector (a sequence of numbers), a dict of
        SearchRequest fields, or the keyword arguments; keyword arguments
        fill what the query leaves unset. `metadata` may be a dict or
        (key, value) pairs: documents must have all of them."""
        if isinstance(query, retrieval_pb2.SearchRequest):
            return query
        f = dict(fields)
        if isinstance(query, str):
            f["text"] = query
        elif isinstance(query, dict):
            f.update({k: v for k, v in query.items() if v is not None})
        elif query is not None:
            try:
                f["vector"] = [float(x) for x in query]
            except (TypeError, ValueError):
                raise TypeError("ctxd_client: cannot make a search from %r"
                                % type(query)) from None
        meta = f.pop("metadata", None) or {}
        if isinstance(meta, dict):
            meta = meta.items()
        f = {k: v for k, v in f.items() if v is not None}
        return retrieval_pb2.SearchRequest(
            metadata=[retrieval_pb2.MetadataFilter(key=k, value=v)
                      for k, v in meta], **f)

    def search(self, text="", vector=None, k=0, mode="", collection="",
               doc_ids=None, metadata=None, with_text=False, ef_search=0,
               nprobe=0, timeout=...):
        """Search chunks: SearchResponse, `hits` best first, each a
        SearchHit (`chunk`: doc_id, ordinal, byte_start, byte_end, tokens,
        text when with_text; `score`: higher is better). `mode`: "vector",
        "lexical" (BM25) or "hybrid" (reciprocal rank fusion); empty:
        hybrid for text, vector for a vector alone. `k`: 0 is 10, at most
        1000. `doc_ids` and `metadata` ({key: value}) filter;
        `ef_search`/`nprobe` set HNSW/IVF search effort for this call."""
        req = self.make_search(
            text=text, vector=() if vector is None else vector, k=k, mode=mode,
            collection=collection, doc_ids=doc_ids or (), metadata=metadata,
            with_text=with_text, ef_search=ef_search, nprobe=nprobe)
        return _wrap("Search", self.retrieval.Search, req,
                     timeout=self._t(timeout))

    def search_batch(self, queries, timeout=..., **defaults):
        """Several searches in one SearchBatch call (at most 1024); returns
        a list of SearchResponse, one per query, in order. Each query is
        anything make_search() accepts (str, vector, dict, SearchRequest);
        keyword arguments (k=, mode=, collection=, ...) apply to queries
        that do not set them (not to SearchRequest messages). One bad query
        fails the whole call."""
        reqs = [self.make_search(q, **defaults) for q in queries]
        r = _wrap("SearchBatch", self.retrieval.SearchBatch,
                  retrieval_pb2.SearchBatchRequest(queries=reqs),
                  timeout=self._t(timeout))
        if len(r.results) != len(reqs):
            raise CtxdError(grpc.StatusCode.INTERNAL,
                            "%d results for %d queries" % (len(r.results), len(reqs)),
                            "SearchBatch")
        return list(r.results)

    # -- Collections -----------------------------------------------------
    def create_collection(self, name, embedder="", metric="", index_spec="",
                          chunk_max_tokens=0, chunk_overlap_tokens=0,
                          timeout=...):
        """Create collection `name`; returns its CollectionInfo (the config
        completed with the server's defaults and the dimension). Empty/zero
        settings take the server's defaults. `embedder`: "hash",
        "hash:dim=512,...", "none:dim=N" (clients give every vector);
        `metric`: "ip" or "l2"; `index_spec`: a FAISS factory string
        ("Flat", "HNSW32", "IVF1024,Flat", ...). Raises CtxdError
        ALREADY_EXISTS or INVALID_ARGUMENT."""
        cfg = admin_pb2.CollectionConfig(
            name=name, embedder=embedder, metric=metric,
            index_spec=index_spec, chunk_max_tokens=chunk_max_tokens,
            chunk_overlap_tokens=chunk_overlap_tokens)
        return _wrap("CreateCollection", self.admin.CreateCollection,
                     admin_pb2.CreateCollectionRequest(config=cfg),
                     timeout=self._t(timeout))

    def drop_collection(self, name, timeout=...):
        """Delete collection `name` and all its documents; returns
        DropCollectionResponse (`documents` removed). NOT_FOUND if
        missing."""
        return _wrap("DropCollection", self.admin.DropCollection,
                     admin_pb2.DropCollectionRequest(name=name),
                     timeout=self._t(timeout))

    def list_collections(self, timeout=...):
        """A list of CollectionInfo, one per collection."""
        r = _wrap("ListCollections", self.admin.ListCollections,
                  admin_pb2.ListCollectionsRequest(), timeout=self._t(timeout))
        return list(r.collections)

    def rebuild_index(self, collection="", timeout=None):
        """Rebuild `collection`'s vector index (empty: "default") from the
        stored vectors; yields RebuildProgress messages (`state`
        "running", then "done" or "failed"; `done`/`total` vectors) until
        it ends. After yielding a "failed" message it raises
        CtxdError(ABORTED) with the server's error; a stream that ends
        without a final state raises CtxdError(INTERNAL). Leaving the loop
        early cancels the stream, not the rebuild, which goes on in the
        server (stats() shows it). `timeout` bounds the whole stream. The
        call starts here, before the first message is asked for."""
        it = self.admin.RebuildIndex(
            admin_pb2.RebuildIndexRequest(collection=collection),
            timeout=timeout)
        return self._follow_state(it, "RebuildIndex", "rebuild of collection %s"
                                  % (collection or "default"))

    @staticmethod
    def _stream(it, method, last):
        """Yield the messages of a server stream, raising CtxdError for a
        failed call; last[0] is the last message. Leaving early cancels
        the call."""
        try:
            for m in it:
                last[0] = m
                yield m
        except grpc.RpcError as e:
            if isinstance(e, CtxdError):
                raise
            raise CtxdError.from_rpc_error(e, method) from None
        finally:
            it.cancel()  # no-op once the call has ended

    @classmethod
    def _follow_state(cls, it, method, what):
        """Follow a stream of progress messages whose last one has `state`
        "done" or "failed" (with `error`): RebuildIndex, Rechunk."""
        last = [None]
        yield from cls._stream(it, method, last)
        last = last[0]
        state = last.state if last is not None else ""
        if state == "failed":
            raise CtxdError(grpc.StatusCode.ABORTED,
                            "%s failed: %s" % (what, last.error or "no reason given"),
                            method)
        if state != "done":
            raise CtxdError(grpc.StatusCode.INTERNAL,
                            "the stream ended without a final state%s"
                            % ("; last state " + state if state else ""),
                            method)

    # -- Corpus jobs -----------------------------------------------------
    def reorder(self, output_dir, input_jsonl="", collection="", mode="",
                k=0, window_tokens=8192, seed=0, doc_ids=None, metadata=None,
                vectors="", embedder="", dedup_cosine=0.0, dedup_jaccard=0.0,
                decompose_min_log2=0, decompose_max_log2=0, separator="",
                no_separator=False, keep_checkpoints=False, timeout=None):
        """Start an In-Context Pretraining job and follow it: yields
        ReorderEvent messages (`job_id`, `state`, `phase`, `done`/`total`
        in `unit`, `rate`, `eta_seconds`, `phase_done`) until it ends; the
        last one (state "done") carries `result` (ReorderResult: the
        figures and the output files). Input: `input_jsonl` (a JSONL file
        on the server's disk) or the stored documents of `collection`
        (empty: "default"), optionally only `doc_ids` and documents with
        all of `metadata` ({key: value}). Paths are the server's, absolute.
        Raises CtxdError with the status of a refused request
        (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION,
        RESOURCE_EXHAUSTED), of the job's failure ("job ID: reason"),
        CANCELLED for a cancelled job, UNAVAILABLE when the server shuts
        down (the job resumes when it is back). Leaving the loop early
        cancels the stream, not the job. See corpus.proto for every
        option."""
        meta = metadata or {}
        if isinstance(meta, dict):
            meta = meta.items()
        req = corpus_pb2.ReorderRequest(
            output_dir=output_dir, input_jsonl=input_jsonl,
            collection=collection, mode=mode, k=k,
            window_tokens=window_tokens, seed=seed, doc_ids=doc_ids or (),
            metadata=[retrieval_pb2.MetadataFilter(key=a, value=b)
                      for a, b in meta],
            vectors=vectors, embedder=embedder, dedup_cosine=dedup_cosine,
            dedup_jaccard=dedup_jaccard,
            decompose_min_log2=decompose_min_log2,
            decompose_max_log2=decompose_max_log2, separator=separator,
            no_separator=no_separator, keep_checkpoints=keep_checkpoints)
        return self._follow_job(self.corpus.Reorder(req, timeout=timeout),
                                "Reorder")

    def watch_job(self, job_id, timeout=None):
        """Follow job `job_id` as reorder() does (events until it ends; a
        job that has ended gives its last event at once)."""
        return self._follow_job(self.corpus.WatchJob(
            corpus_pb2.GetJobRequest(job_id=job_id), timeout=timeout),
            "WatchJob")

    @classmethod
    def _follow_job(cls, it, method):
        last = [None]
        yield from cls._stream(it, method, last)
        last = last[0]
        if last is None or last.state != "done":
            raise CtxdError(grpc.StatusCode.INTERNAL,
                            "the stream ended without a final state%s"
                            % ("; last state " + last.state if last else ""),
                            method)

    def run_reorder(self, output_dir, **kw):
        """reorder() to the end: returns the last ReorderEvent (its
        `result` and `job_id`)."""
        last = None
        for last in self.reorder(output_dir, **kw):
            pass
        return last

    def get_job(self, job_id, timeout=...):
        """The Job: state, request, phases, result or error."""
        return _wrap("GetJob", self.corpus.GetJob,
                     corpus_pb2.GetJobRequest(job_id=job_id),
                     timeout=self._t(timeout))

    def cancel_job(self, job_id, timeout=...):
        """Cancel a job; returns the Job (state "cancelled", or still
        "running" with cancel_requested when it did not stop within the
        server's wait). FAILED_PRECONDITION for a job that has ended."""
        return _wrap("CancelJob", self.corpus.CancelJob,
                     corpus_pb2.CancelJobRequest(job_id=job_id),
                     timeout=self._t(timeout))

    def list_jobs(self, state="", limit=0, timeout=...):
        """The most recent jobs (0: 100), oldest first; `state` filters."""
        r = _wrap("ListJobs", self.corpus.ListJobs,
                  corpus_pb2.ListJobsRequest(state=state, limit=limit),
                  timeout=self._t(timeout))
        return list(r.jobs)

    def fetch_result(self, job_id, dest_dir, files=None, chunk_bytes=0,
                     timeout=None):
        """Download a done job's output files into `dest_dir` (created if
        missing), each written as NAME.part and renamed when complete, its
        size and CRC-32 checked against the job's record. `files` limits
        them to those names. Returns {name: local path}."""
        import zlib
        os.makedirs(dest_dir, exist_ok=True)
        crcs = {f.name: f.crc32 for f in self.get_job(job_id).result.files}
        out, f, cur, crc, got = {}, None, None, 0, 0
        it = self.corpus.FetchResult(corpus_pb2.FetchResultRequest(
            job_id=job_id, files=files or (), chunk_bytes=chunk_bytes),
            timeout=timeout)
        try:
            for ch in it:
                if f is None:
                    if not ch.file or "/" in ch.file or ch.file in (".", ".."):
                        raise CtxdError(grpc.StatusCode.INTERNAL,
                                        "bad file name %r" % ch.file,
                                        "FetchResult")
                    cur, crc, got = ch.file, 0, 0
                    f = open(os.path.join(dest_dir, cur + ".part"), "wb")
                if ch.file != cur or ch.offset != got:
                    raise CtxdError(grpc.StatusCode.INTERNAL,
                                    "piece of %s at %d out of order"
                                    % (ch.file, ch.offset), "FetchResult")
                f.write(ch.data)
                crc = zlib.crc32(ch.data, crc)
                got += len(ch.data)
                if ch.last:
                    f.close()
                    f = None
                    if got != ch.size or (cur in crcs and crcs[cur] != crc):
                        raise CtxdError(grpc.StatusCode.DATA_LOSS,
                                        "%s: size or CRC-32 differs from the "
                                        "job's record" % cur, "FetchResult")
                    path = os.path.join(dest_dir, cur)
                    os.replace(path + ".part", path)
                    out[cur] = path
        except grpc.RpcError as e:
            if isinstance(e, CtxdError):
                raise
            raise CtxdError.from_rpc_error(e, "FetchResult") from None
        finally:
            it.cancel()
            if f is not None:
                f.close()
                os.unlink(f.name)
        return out

    # -- Admin -----------------------------------------------------------
    def stats(self, timeout=...):
        """StatsResponse: store totals, and `collections` (a CollectionInfo
        each: documents, chunks, vectors, indexed, masked, trained,
        rebuilding, ...)."""
        return _wrap("Stats", self.admin.Stats, admin_pb2.StatsRequest(),
                     timeout=self._t(timeout))

    def verify(self, timeout=...):
        return _wrap("Verify", self.admin.Verify, admin_pb2.VerifyRequest(),
                     timeout=self._t(timeout))

    def load_model(self, path="", tokenizer_only=False, unload=False,
                   timeout=...):
        """Admin.LoadModel: load the GGUF at `path` (a file on the server's
        disk) and swap it in as the model, or with `tokenizer_only` as the
        tokenizer vocabulary; `unload=True` (no path) empties that slot.
        Calls already running finish on the old model. Returns the
        LoadModelResponse (`model`: a ModelInfo; `tokenizer`,
        `store_tokenizer`, `tokenizer_mismatch`: run rechunk() when set)."""
        return _wrap("LoadModel", self.admin.LoadModel,
                     admin_pb2.LoadModelRequest(
                         path=path, tokenizer_only=tokenizer_only,
                         unload=unload),
                     timeout=self._t(timeout))

    def rechunk(self, timeout=None):
        """Admin.Rechunk: re-chunk every stored document with the tokenizer
        in use (or follow the run already going); yields RechunkProgress
        messages (`state` "running", then "done" or "failed";
        `documents_done`/`documents_total`, `chunks`, `skipped`). After a
        "failed" message it raises CtxdError(ABORTED) with the reason.
        Leaving the loop early stops following, not the rechunk."""
        it = self.admin.Rechunk(admin_pb2.RechunkRequest(), timeout=timeout)
        return self._follow_state(it, "Rechunk", "rechunk")

    # -- Key-context selection ------------------------------------------
    @staticmethod
    def make_select(question="", *, doc_id="", text="", budget=0, method="",
                    collection="", **options):
        """A SelectContextRequest; `options` are SelectOptions fields
        (segment_tokens, segment_overlap, question_tail, xl3m_score,
        xl3m_batch, window_tokens, top_k, filter_width, layer,
        no_question_weights, cache_max_tokens)."""
        return retrieval_pb2.SelectContextRequest(
            doc_id=doc_id, text=text, question=question, token_budget=budget,
            method=method, collection=collection,
            options=retrieval_pb2.SelectOptions(**options))

    def select(self, question="", *, doc_id="", text="", budget=0, method="",
               collection="", timeout=..., **options):
        """Retrieval.SelectContext: the key context of a stored document
        (`doc_id`) or of inline `text` for `question`, at most `budget`
        tokens (0: 1024), by `method` ("auto", "xl3m", "infiniretri",
        "bm25", "embedding"). Returns the SelectContextResponse: `context`,
        `segments` (byte ranges, tokens, scores, in input order), `tokens`,
        `method` (auto resolved), `stats`. Errors: INVALID_ARGUMENT (unknown
        method, no question where one is needed, both or neither of doc_id
        and text), NOT_FOUND (no such document), FAILED_PRECONDITION (a
        model method with no model loaded), RESOURCE_EXHAUSTED
        (model.max_concurrent selections are running)."""
        return _wrap("SelectContext", self.retrieval.SelectContext,
                     self.make_select(question, doc_id=doc_id, text=text,
                                      budget=budget, method=method,
                                      collection=collection, **options),
                     timeout=self._t(timeout))

    def select_stream(self, question="", *, doc_id="", text="", budget=0,
                      method="", collection="", timeout=None, **options):
        """Retrieval.SelectContextStream: yields SelectContextEvent messages
        (`phase`, `done`/`total` input tokens) while the selection runs; the
        last one (phase "done") carries `result`, a SelectContextResponse.
        Leaving the loop early cancels the selection. Errors as select()."""
        it = self.retrieval.SelectContextStream(
            self.make_select(question, doc_id=doc_id, text=text, budget=budget,
                             method=method, collection=collection, **options),
            timeout=timeout)
        yield from self._stream(it, "SelectContextStream", [None])

    # -- Health ----------------------------------------------------------
    def health(self, service="", timeout=...):
        """The serving status name: "SERVING", "NOT_SERVING", ..."""
        r = _wrap("Health.Check", self.health_stub.Check,
                  health_pb2.HealthCheckRequest(service=service),
                  timeout=self._t(timeout))
        return health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)

    def wait_ready(self, timeout=10.0):
        """Block until the channel connects and Health says SERVING."""
        import time
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            try:
                if self.health(timeout=max(0.1, min(2.0, end - time.monotonic()))) == "SERVING":
                    return
            except CtxdError as e:
                last = e
            time.sleep(0.05)
        raise CtxdError(grpc.StatusCode.UNAVAILABLE,
                        "not SERVING after %.1fs (%s)" % (timeout, last),
                        "wait_ready")
