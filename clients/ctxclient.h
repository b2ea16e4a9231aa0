/* ctxclient.h - a blocking C client for ctxd's gRPC API over cleartext
 * HTTP/2 (h2c) or HTTP/2 over TLS (OpenSSL; ALPN h2, optional client
 * certificate), built on nghttp2's client session and a TCP socket, with
 * an optional bearer token sent on every call.
 *
 * One ctxclient is one connection. Every call blocks its caller (the socket
 * is non-blocking underneath and each call runs a poll loop until it is
 * done), and a connection must be used by one thread at a time. Several
 * streams may be open on one connection at once: whichever call is running
 * pumps all of them, so messages for the others are queued, never lost.
 *
 * Errors: every call returns 0 on success or a negative CTXCLIENT_E* code,
 * and fills a ctxclient_status (when one is given) with the gRPC status code
 * and the percent-decoded grpc-message. Failures that never reached a
 * server answer get a local status: UNAVAILABLE for connection errors
 * ("connect to HOST:PORT: Connection refused", "connection closed"),
 * DEADLINE_EXCEEDED when the call's deadline passes (the stream is then
 * reset with CANCEL), RESOURCE_EXHAUSTED for a response message above the
 * size limit, INTERNAL for a malformed response.
 *
 * Messages are protobuf bytes; the typed helpers at the end pack and unpack
 * the protobuf-c types of proto/ctxd/v1 and grpc/health/v1. Collections:
 * the Documents requests (Document.collection, GetRequest.collection, ...)
 * and SearchRequest name theirs; empty means "default". */
#ifndef CTXCLIENT_H
#define CTXCLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "ctxd/v1/admin.pb-c.h"
#include "ctxd/v1/corpus.pb-c.h"
#include "ctxd/v1/documents.pb-c.h"
#include "ctxd/v1/retrieval.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"

typedef struct ctxclient ctxclient;
typedef struct ctxclient_stream ctxclient_stream;

enum {
  CTXCLIENT_OK = 0,
  /* The call ended with a non-OK gRPC status (from the server or local);
   * see the ctxclient_status. */
  CTXCLIENT_ESTATUS = -1,
  /* ctxclient_stream_recv(): nothing arrived within its wait; the stream
   * is still open. */
  CTXCLIENT_EAGAIN = -2,
  /* Misuse: NULL argument, sending after half-close, ... */
  CTXCLIENT_EINVAL = -3,
};

#define CTXCLIENT_DEFAULT_PORT "50051"
#define CTXCLIENT_DEFAULT_MAX_MESSAGE (64u << 20)

typedef struct ctxclient_status {
  int code;           /* gRPC status code; 0 = OK */
  char message[1024]; /* percent-decoded grpc-message, truncated to fit */
} ctxclient_status;

/* Static name of a gRPC status code ("INVALID_ARGUMENT"; "CODE_17" for an
 * unknown one - a static buffer, so not thread-safe for unknown codes). */
const char *ctxclient_status_name(int code);

/* ---- connection ---------------------------------------------------------*/

/* Connect to `addr` ("HOST:PORT", "[IPV6]:PORT", or "HOST" for port 50051;
 * hostnames are resolved and every address is tried in turn) and send the
 * HTTP/2 preface and SETTINGS. `timeout_ms` bounds the connect (0: 10 s),
 * and also the server's answer to it: a call that is still waiting for the
 * server's first HTTP/2 frame that long after ctxclient_connect() began
 * fails with UNAVAILABLE ("HOST:PORT accepted the connection but sent no
 * HTTP/2 within N ms"), even a call without a deadline of its own. The
 * connect itself does not wait for that answer.
 * On success *out is a new client the caller frees with ctxclient_close().
 * Errors: CTXCLIENT_EINVAL (bad address: status INVALID_ARGUMENT),
 * CTXCLIENT_ESTATUS with UNAVAILABLE ("connect to HOST:PORT: Connection
 * refused", "resolve HOST: ...") or DEADLINE_EXCEEDED. */
int ctxclient_connect(const char *addr, int timeout_ms, ctxclient **out,
                      ctxclient_status *st);

/* TLS settings for ctxclient_connect_tls(). Every pointer may be NULL;
 * the strings are read during the connect only. */
typedef struct ctxclient_tls {
  /* PEM file of the CA certificates that may sign the server's certificate;
   * NULL: the system's trust store (/etc/ssl/certs). */
  const char *ca_file;
  /* PEM client certificate (chain) to present (mTLS); NULL: none. */
  const char *cert_file;
  /* Its private key (PEM, unencrypted); NULL: read from cert_file. */
  const char *key_file;
  /* The name the server's certificate must carry (a DNS name, or an IP
   * address checked against its IP subjectAltNames), also sent as SNI when
   * it is a DNS name; NULL: the host part of the address. Set it when you
   * connect by an address the certificate does not name. */
  const char *server_name;
} ctxclient_tls;

/* As ctxclient_connect(), over TLS 1.2 or later: the server's certificate
 * is verified against tls->ca_file (or the system's CAs) and must name the
 * server (tls->server_name or the address's host; a wildcard covers one
 * label), and the server must select ALPN "h2". Unlike h2c, the connect
 * also waits (within `timeout_ms`) for the server's first HTTP/2 frame,
 * so that a client certificate refused after the handshake (TLS 1.3)
 * fails here. tls == NULL is ctxclient_connect().
 * Errors, besides ctxclient_connect()'s:
 *   CTXCLIENT_EINVAL with INVALID_ARGUMENT for local files that cannot be
 *     used ("cannot read CA file F: No such file or directory", "cannot
 *     load client key F: ...", "client certificate F does not match key
 *     K", "a client key (F) needs a client certificate");
 *   CTXCLIENT_ESTATUS with UNAVAILABLE: "TLS handshake with ADDR failed:
 *     certificate verify failed: REASON (depth N: SUBJECT; verified against
 *     ...)", for a name mismatch "...: the certificate (SUBJECT) is for
 *     DNS:a, IP:b, not "NAME" ...", "... (is the server using TLS? it
 *     answered in cleartext)", "ADDR did not agree to HTTP/2 over TLS
 *     (ALPN "h2") ...", "read from ADDR: TLS error: ... (the server
 *     refused our client certificate)" or "(the server requires a client
 *     certificate)"; DEADLINE_EXCEEDED when the handshake does not finish
 *     within `timeout_ms`.
 * A cleartext ctxclient_connect() to a TLS port fails at its first call
 * with UNAVAILABLE "ADDR answered with TLS: it is a TLS port ..." or
 * "... closed by server (before the server spoke HTTP/2; is it a TLS
 * port?)". */
int ctxclient_connect_tls(const char *addr, int timeout_ms,
                          const ctxclient_tls *tls, ctxclient **out,
                          ctxclient_status *st);

/* Send `token` as "authorization: Bearer TOKEN" on every call from now on
 * (copied; NULL stops sending it). The header is marked never-indexed for
 * HPACK. It is sent over h2c too: use TLS for anything but loopback.
 * Errors: CTXCLIENT_EINVAL with INVALID_ARGUMENT for an empty token, one
 * over 4096 bytes or one with a byte outside printable ASCII (spaces and
 * line breaks included); the previous token is then kept. */
int ctxclient_set_token(ctxclient *c, const char *token,
                        ctxclient_status *st);

/* Refuse response messages above `max` bytes (default 64 MiB); checked
 * from the length prefix, before anything is allocated. */
void ctxclient_set_max_message(ctxclient *c, size_t max);

/* Send GOAWAY, close the socket and free everything, including streams not
 * yet freed (their handles become invalid). NULL is a no-op. */
void ctxclient_close(ctxclient *c);

/* ---- generic calls ------------------------------------------------------*/

/* A unary call: send one request message to `path` ("/ctxd.v1.Admin/Stats")
 * and wait for one response message and the status. `timeout_ms` > 0 is the
 * call's deadline (sent as grpc-timeout and enforced locally), 0 = none.
 * On success *resp is a malloc'd copy of the response (NULL when it is
 * empty) that the caller frees with free(), and *resp_len its length.
 * Errors: CTXCLIENT_ESTATUS (status in `st`; *resp is NULL), including a
 * call that ended OK without exactly one response (INTERNAL). */
int ctxclient_unary(ctxclient *c, const char *path, const uint8_t *req,
                    size_t req_len, int64_t timeout_ms, uint8_t **resp,
                    size_t *resp_len, ctxclient_status *st);

/* Open a streaming call to `path`: sends the request HEADERS only.
 * `timeout_ms` > 0 is a deadline for the whole stream, 0 = none. Works for
 * client-, server- and bidirectional streaming methods. *out is freed with
 * ctxclient_stream_free(). Errors: CTXCLIENT_ESTATUS (UNAVAILABLE when the
 * connection is gone). */
int ctxclient_stream_open(ctxclient *c, const char *path, int64_t timeout_ms,
                          ctxclient_stream **out, ctxclient_status *st);

/* Queue one message (copied) and write it. Blocks while more than about
 * 1 MiB of this stream's messages are waiting for HTTP/2 flow-control
 * window; while blocked it keeps reading, so responses the server sends
 * meanwhile (acks) are queued for ctxclient_stream_recv() and a server
 * that waits for its responses to drain cannot deadlock us.
 * Errors: CTXCLIENT_EINVAL after ctxclient_stream_close_send();
 * CTXCLIENT_ESTATUS once the call has ended (the server answered early,
 * e.g. with an error - its status is in `st` - or the deadline passed or
 * the connection failed). */
int ctxclient_stream_send(ctxclient_stream *s, const uint8_t *msg, size_t len,
                          ctxclient_status *st);

/* Half-close: tell the server no more messages follow. Idempotent. Returns
 * after the END_STREAM has been handed to the socket or the call ended
 * (CTXCLIENT_ESTATUS only for an ended call with a non-OK status). */
int ctxclient_stream_close_send(ctxclient_stream *s, ctxclient_status *st);

/* Wait up to `wait_ms` (0: just poll, <0: until the stream's deadline) for
 * the next response message. Returns:
 *   0 with *msg set (malloc'd, caller frees; NULL if the message is empty -
 *     then *len is 0 and *msg NULL, which also happens at the end, so
 *     check *done) and *done = 0: one message;
 *   0 with *done = 1: the call ended with status OK and no more messages;
 *   CTXCLIENT_EAGAIN: nothing yet, the stream is still open;
 *   CTXCLIENT_ESTATUS: the call ended with a non-OK status (in `st`) and
 *     every message that arrived before the status has been returned. */
int ctxclient_stream_recv(ctxclient_stream *s, int wait_ms, uint8_t **msg,
                          size_t *len, int *done, ctxclient_status *st);

/* Half-close if not done yet, wait for the end of the call (discarding
 * response messages not yet received) and report its final status:
 * 0 for OK, else CTXCLIENT_ESTATUS. */
int ctxclient_stream_finish(ctxclient_stream *s, ctxclient_status *st);

/* Free a stream. If the call is still running it is cancelled
 * (RST_STREAM CANCEL). NULL is a no-op. */
void ctxclient_stream_free(ctxclient_stream *s);

/* ---- typed helpers ------------------------------------------------------*/
/* Each packs the request, makes the unary call with `timeout_ms` as above
 * and unpacks the response into *resp, which the caller frees with the
 * type's protobuf-c free_unpacked function (e.g.
 * ctxd__v1__put_response__free_unpacked(resp, NULL)). Errors as for
 * ctxclient_unary(); a response that does not parse is INTERNAL. */

int ctxclient_put(ctxclient *c, const Ctxd__V1__PutRequest *req,
                  int64_t timeout_ms, Ctxd__V1__PutResponse **resp,
                  ctxclient_status *st);
int ctxclient_get(ctxclient *c, const Ctxd__V1__GetRequest *req,
                  int64_t timeout_ms, Ctxd__V1__GetResponse **resp,
                  ctxclient_status *st);
int ctxclient_delete(ctxclient *c, const Ctxd__V1__DeleteRequest *req,
                     int64_t timeout_ms, Ctxd__V1__DeleteResponse **resp,
                     ctxclient_status *st);
int ctxclient_list(ctxclient *c, const Ctxd__V1__ListRequest *req,
                   int64_t timeout_ms, Ctxd__V1__ListResponse **resp,
                   ctxclient_status *st);
int ctxclient_chunk(ctxclient *c, const Ctxd__V1__ChunkRequest *req,
                    int64_t timeout_ms, Ctxd__V1__ChunkResponse **resp,
                    ctxclient_status *st);
/* Stats carries one CollectionInfo per collection (resp->collections). */
int ctxclient_stats(ctxclient *c, int64_t timeout_ms,
                    Ctxd__V1__StatsResponse **resp, ctxclient_status *st);
int ctxclient_verify(ctxclient *c, int64_t timeout_ms,
                     Ctxd__V1__VerifyResponse **resp, ctxclient_status *st);
/* Admin.Backup into `target` (a directory under the server's
 * backup.root) and Admin.Compact; both answer when done. */
int ctxclient_backup(ctxclient *c, const char *target, int64_t timeout_ms,
                     Ctxd__V1__BackupResponse **resp, ctxclient_status *st);
int ctxclient_compact(ctxclient *c, int64_t timeout_ms,
                      Ctxd__V1__CompactResponse **resp, ctxclient_status *st);

/* Retrieval.Search: the chunks that best match req->text and/or
 * req->vector (see retrieval.proto for modes, filters and limits). Server
 * errors: INVALID_ARGUMENT (k above 1000, unknown mode, a vector of the
 * wrong dimension, no query), NOT_FOUND (no such collection). */
int ctxclient_search(ctxclient *c, const Ctxd__V1__SearchRequest *req,
                     int64_t timeout_ms, Ctxd__V1__SearchResponse **resp,
                     ctxclient_status *st);

/* Retrieval.SearchBatch: several searches in one call (at most 1024).
 * On success (*resp)->n_results == req->n_queries, result i answering
 * query i; a response with another count is INTERNAL. One bad query fails
 * the whole call. */
int ctxclient_search_batch(ctxclient *c,
                           const Ctxd__V1__SearchBatchRequest *req,
                           int64_t timeout_ms,
                           Ctxd__V1__SearchBatchResponse **resp,
                           ctxclient_status *st);

/* Admin.CreateCollection with `config` (zero/empty fields: the server's
 * defaults; config->dim is ignored, the embedder decides it). *resp is the
 * new collection's CollectionInfo, its config complete. Server errors:
 * ALREADY_EXISTS, INVALID_ARGUMENT (bad name, embedder, metric or index
 * spec). */
int ctxclient_create_collection(ctxclient *c,
                                const Ctxd__V1__CollectionConfig *config,
                                int64_t timeout_ms,
                                Ctxd__V1__CollectionInfo **resp,
                                ctxclient_status *st);

/* Admin.DropCollection: removes collection `name` with all its documents
 * ((*resp)->documents says how many). Server errors: NOT_FOUND. */
int ctxclient_drop_collection(ctxclient *c, const char *name,
                              int64_t timeout_ms,
                              Ctxd__V1__DropCollectionResponse **resp,
                              ctxclient_status *st);

/* Admin.ListCollections: every collection's CollectionInfo. */
int ctxclient_list_collections(ctxclient *c, int64_t timeout_ms,
                               Ctxd__V1__ListCollectionsResponse **resp,
                               ctxclient_status *st);

/* Called for each RebuildProgress of ctxclient_rebuild_index(); `p` is
 * valid during the call only. Return 0 to go on following the rebuild,
 * non-zero to stop. */
typedef int (*ctxclient_progress_fn)(const Ctxd__V1__RebuildProgress *p,
                                     void *ud);

/* Admin.RebuildIndex: start rebuilding `collection`'s vector index (NULL or
 * "": "default") and follow its progress until it ends, calling
 * `on_progress` (may be NULL) for every message the server streams.
 * `timeout_ms` > 0 bounds the whole call (0: none). If `last` is not NULL,
 * *last receives the last progress message seen (NULL if none), which the
 * caller frees with ctxd__v1__rebuild_progress__free_unpacked(), on
 * success and on failure.
 * Returns 0 when the rebuild finished (state "done"). Errors
 * (CTXCLIENT_ESTATUS):
 *   - the server's status, e.g. NOT_FOUND for an unknown collection, or a
 *     local one (UNAVAILABLE, DEADLINE_EXCEEDED) as for any call;
 *   - ABORTED "rebuild of collection X failed: ERROR" when the server
 *     reports state "failed" (the old index stays in use);
 *   - CANCELLED when `on_progress` asked to stop: the stream is cancelled,
 *     but the rebuild goes on in the server (Stats shows its progress);
 *   - INTERNAL for a progress message that does not parse, or a stream
 *     that ends OK without a final "done" or "failed". */
int ctxclient_rebuild_index(ctxclient *c, const char *collection,
                            int64_t timeout_ms,
                            ctxclient_progress_fn on_progress, void *ud,
                            Ctxd__V1__RebuildProgress **last,
                            ctxclient_status *st);

/* Admin.LoadModel: load req->path (a GGUF on the server's disk) as the
 * model, or with tokenizer_only as the tokenizer vocabulary; unload (no
 * path) empties that slot. Requests already running finish on the old
 * model. Server errors: NOT_FOUND (no such file), INVALID_ARGUMENT (a
 * vocabulary-only file as the model, path and unload both or neither),
 * INTERNAL (llama.cpp cannot load it: its reason). */
int ctxclient_load_model(ctxclient *c, const Ctxd__V1__LoadModelRequest *req,
                         int64_t timeout_ms, Ctxd__V1__LoadModelResponse **resp,
                         ctxclient_status *st);

/* Called for each RechunkProgress of ctxclient_rechunk() (valid during the
 * call only); non-zero stops following (the rechunk goes on). */
typedef int (*ctxclient_rechunk_fn)(const Ctxd__V1__RechunkProgress *p,
                                    void *ud);

/* Admin.Rechunk: re-chunk every stored document with the server's current
 * tokenizer (or follow the run already going) until it ends, as
 * ctxclient_rebuild_index() follows a rebuild; *last (may be NULL) as
 * there. Errors: ABORTED "rechunk failed: ..." when the server reports
 * state "failed", CANCELLED when on_progress stopped, INTERNAL for a
 * stream without a final state, or the call's status. */
int ctxclient_rechunk(ctxclient *c, int64_t timeout_ms,
                      ctxclient_rechunk_fn on_progress, void *ud,
                      Ctxd__V1__RechunkProgress **last, ctxclient_status *st);

/* Retrieval.SelectContext: the key context of req->doc_id (a stored
 * document of req->collection) or req->text for req->question under
 * req->token_budget tokens. Server errors: INVALID_ARGUMENT (unknown
 * method, no question where needed, both or neither of doc_id and text,
 * options over their limits), NOT_FOUND (no such document or collection),
 * FAILED_PRECONDITION (xl3m/infiniretri with no model loaded; embedding
 * with a collection that has no embedder), RESOURCE_EXHAUSTED
 * (model.max_concurrent selections running). */
int ctxclient_select(ctxclient *c, const Ctxd__V1__SelectContextRequest *req,
                     int64_t timeout_ms,
                     Ctxd__V1__SelectContextResponse **resp,
                     ctxclient_status *st);

/* Called for each progress event of ctxclient_select_stream() (not the
 * last, which carries the result); non-zero cancels the selection. */
typedef int (*ctxclient_select_fn)(const Ctxd__V1__SelectContextEvent *ev,
                                   void *ud);

/* Retrieval.SelectContextStream: as ctxclient_select(), with progress.
 * On success *result is the last event (phase "done"), whose ->result is
 * the SelectContextResponse; free it with
 * ctxd__v1__select_context_event__free_unpacked(). Errors as
 * ctxclient_select(), CANCELLED when on_event stopped it, INTERNAL for a
 * stream that ends without a result. */
int ctxclient_select_stream(ctxclient *c,
                            const Ctxd__V1__SelectContextRequest *req,
                            int64_t timeout_ms, ctxclient_select_fn on_event,
                            void *ud, Ctxd__V1__SelectContextEvent **result,
                            ctxclient_status *st);

/* ---- Corpus jobs ---------------------------------------------------------*/

/* Called for each ReorderEvent of ctxclient_reorder() and
 * ctxclient_watch_job(); `ev` is valid during the call only. Return 0 to go
 * on following the job, non-zero to stop (the stream is cancelled; the job
 * goes on in the server). */
typedef int (*ctxclient_event_fn)(const Ctxd__V1__ReorderEvent *ev, void *ud);

/* Corpus.Reorder: start a job with `req` and follow it until it ends,
 * calling `on_event` (may be NULL) for every event. `timeout_ms` > 0 bounds
 * the whole call (0: none). If `last` is not NULL, *last receives the last
 * event seen (NULL if none; its job_id names the job), which the caller
 * frees with ctxd__v1__reorder_event__free_unpacked(), on success and on
 * failure. Returns 0 when the job is done ((*last)->result holds its
 * figures). Errors (CTXCLIENT_ESTATUS):
 *   - the server's status: INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION,
 *     RESOURCE_EXHAUSTED for a request refused at once (no job exists:
 *     *last is NULL); for a job that ran and failed, its failure's status
 *     and message ("job ID: line 3: bad JSON ..."); CANCELLED when the job
 *     was cancelled; UNAVAILABLE when the server shuts down (the job resumes
 *     when it is back); or a local one as for any call;
 *   - CANCELLED "stopped following job ID" when `on_event` asked to stop;
 *   - INTERNAL for an event that does not parse, or a stream that ends OK
 *     without a final "done" event. */
int ctxclient_reorder(ctxclient *c, const Ctxd__V1__ReorderRequest *req,
                      int64_t timeout_ms, ctxclient_event_fn on_event,
                      void *ud, Ctxd__V1__ReorderEvent **last,
                      ctxclient_status *st);

/* Corpus.WatchJob: follow job `job_id` as ctxclient_reorder() does (a job
 * that has ended gives its last event at once). Errors as there, and
 * NOT_FOUND for an unknown job. */
int ctxclient_watch_job(ctxclient *c, const char *job_id, int64_t timeout_ms,
                        ctxclient_event_fn on_event, void *ud,
                        Ctxd__V1__ReorderEvent **last, ctxclient_status *st);

/* Corpus.GetJob and Corpus.CancelJob: *resp is the Job (after a cancel:
 * "cancelled", or still "running" with cancel_requested when it did not
 * stop within the server's wait). Server errors: NOT_FOUND;
 * FAILED_PRECONDITION for a cancel of a job that has ended. */
int ctxclient_get_job(ctxclient *c, const char *job_id, int64_t timeout_ms,
                      Ctxd__V1__Job **resp, ctxclient_status *st);
int ctxclient_cancel_job(ctxclient *c, const char *job_id, int64_t timeout_ms,
                         Ctxd__V1__Job **resp, ctxclient_status *st);

/* Corpus.ListJobs (req->state filters, req->limit: the most recent N).
 * Server errors: INVALID_ARGUMENT (unknown state, limit above 10000). */
int ctxclient_list_jobs(ctxclient *c, const Ctxd__V1__ListJobsRequest *req,
                        int64_t timeout_ms, Ctxd__V1__ListJobsResponse **resp,
                        ctxclient_status *st);

/* Called for each ResultChunk of ctxclient_fetch_result() (valid during
 * the call only); non-zero stops the download (CANCELLED). */
typedef int (*ctxclient_chunk_fn)(const Ctxd__V1__ResultChunk *ch, void *ud);

/* Corpus.FetchResult: download a done job's output files as pieces, in
 * order (see corpus.proto). Server errors: NOT_FOUND, FAILED_PRECONDITION
 * (the job is not done, or a file changed on disk since), INVALID_ARGUMENT
 * (an unknown file name, chunk_bytes above 3 MiB). */
int ctxclient_fetch_result(ctxclient *c,
                           const Ctxd__V1__FetchResultRequest *req,
                           int64_t timeout_ms, ctxclient_chunk_fn on_chunk,
                           void *ud, ctxclient_status *st);

/* grpc.health.v1.Health/Check for `service` ("" or NULL: the server as a
 * whole). *serving is the response's ServingStatus (1 = SERVING). */
int ctxclient_health_check(ctxclient *c, const char *service,
                           int64_t timeout_ms, int *serving,
                           ctxclient_status *st);

/* Documents.PutStream: open with ctxclient_putstream_open(), send any
 * number of requests with ctxclient_putstream_send() (same blocking and
 * errors as ctxclient_stream_send()), read acks with
 * ctxclient_putstream_recv() (same returns as ctxclient_stream_recv(); *ack
 * is NULL when *done is set, else freed by the caller with
 * ctxd__v1__put_ack__free_unpacked), and end with ctxclient_stream_finish()
 * or ctxclient_stream_close_send() + recv until done. */
int ctxclient_putstream_open(ctxclient *c, int64_t timeout_ms,
                             ctxclient_stream **out, ctxclient_status *st);
int ctxclient_putstream_send(ctxclient_stream *s,
                             const Ctxd__V1__PutRequest *req,
                             ctxclient_status *st);
int ctxclient_putstream_recv(ctxclient_stream *s, int wait_ms,
                             Ctxd__V1__PutAck **ack, int *done,
                             ctxclient_status *st);

#endif
