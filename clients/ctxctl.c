/* ctxctl.c - the ctxd admin CLI: health, stats, storing, reading, listing,
 * deleting and chunking documents, search, collections, store
 * verification, and corpus jobs (reorder, jobs), all through ctxclient
 * over gRPC (h2c, or TLS with --tls), with a bearer token when given.
 *
 * Output meant for people goes to stdout (tables) or, for progress, to
 * stderr when it is a terminal; --json gives machine-readable output.
 * Errors are one line each on stderr: "ctxctl: CMD: MESSAGE (STATUS)". */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "backup.h"
#include "ctxclient.h"

enum {
  EXIT_OK = 0,
  EXIT_FAILED = 1,      /* the operation failed or something was rejected */
  EXIT_USAGE = 2,       /* bad command line */
  EXIT_UNREACHABLE = 3, /* could not talk to the server */
  EXIT_DENIED = 4,      /* UNAUTHENTICATED or PERMISSION_DENIED */
};

#define DEFAULT_ADDR "127.0.0.1:50051"
#define DEFAULT_TIMEOUT_MS 30000
#define CTXCTL_MAX_RESPONSE (1u << 30) /* largest response message accepted */
#define MAX_TOKEN_FILE 65536              /* a token file is one short line */

static const char *g_cmd = NULL; /* for messages */

static const char usage_text[] =
    "usage: ctxctl [--addr HOST:PORT] [--timeout SECONDS] [--tls] [--ca FILE]\n"
    "              [--cert FILE [--key FILE]] [--server-name NAME]\n"
    "              [--token TOKEN | --token-file FILE] COMMAND [ARGS]\n"
    "\n"
    "The ctxd admin CLI. Talks gRPC over HTTP/2 to a ctxd server, in\n"
    "cleartext (h2c) or with --tls over TLS.\n"
    "\n"
    "Commands:\n"
    "  status                     health check; prints SERVING\n"
    "  stats [--json]             store and per-collection statistics\n"
    "  put [OPTIONS] INPUT...     store documents (files, directories, -, "
    "--jsonl FILE)\n"
    "  get ID [--text] [--chunks] [--vectors] [--json]\n"
    "                             show a document\n"
    "  rm [-f] ID...              delete documents\n"
    "  ls [--limit N] [--all] [--ids] [--json]\n"
    "                             list documents\n"
    "  search QUERY... [-k N] [--mode vector|lexical|hybrid] [--doc ID]...\n"
    "         [--meta KEY=VALUE]... [--text] [--ef N] [--nprobe N] [--json]\n"
    "                             find the chunks that best match a query\n"
    "  collection create NAME [OPTIONS] | drop NAME [--yes] | ls [--json]\n"
    "                             manage collections\n"
    "  reindex [-q]               rebuild a collection's vector index\n"
    "  reorder (--input FILE | -c NAME) --out DIR [--mode iclm|decompose]\n"
    "          [-k N] [--window N] [--seed N] [--fetch LOCALDIR] [--detach]\n"
    "                             order a corpus for pretraining and pack it\n"
    "  jobs [ls] | jobs show|cancel|watch ID | jobs fetch ID LOCALDIR\n"
    "                             list, inspect, cancel, follow corpus jobs\n"
    "  chunk [FILE|-] [--max-tokens N] [--overlap N] [--json]\n"
    "                             show how the server would chunk a text\n"
    "  select (--doc ID | --file F) --question Q [--budget N] [--method M]\n"
    "         [-v] [--json]      the key context of a long text for a question\n"
    "  model load PATH [--tokenizer] | unload [--tokenizer] | info [--json]\n"
    "                             load, unload or show the language model\n"
    "  rechunk [-q]               re-chunk the store with the current tokenizer\n"
    "  verify                     check the store's consistency\n"
    "  backup DIR [--json]        hot backup of the store into DIR on the server\n"
    "  restore BACKUP_DIR DATA_DIR [--check]\n"
    "                             check a backup and restore it (offline)\n"
    "  compact [--json]           give the space of deleted data back\n"
    "  help [COMMAND]             this text, or a command's details\n"
    "\n"
    "put, get, rm, ls, search, select and reindex take -c/--collection NAME\n"
    "(default: the collection named \"default\").\n"
    "\n"
    "Global options:\n"
    "  --addr HOST:PORT     server address (default $CTXD_ADDR, "
    "else " DEFAULT_ADDR
    ");\n"
    "                       IPv6 as [ADDR]:PORT; hostnames are resolved\n"
    "  --timeout SECONDS    deadline of each call (default 30; put, reindex,\n"
    "                       reorder, jobs watch and jobs fetch: none unless\n"
    "                       given)\n"
    "  --tls                TLS (ALPN h2) instead of cleartext; the server's\n"
    "                       certificate is verified (default $CTXD_TLS=1)\n"
    "  --ca FILE            PEM CA certificates that sign the server's\n"
    "                       certificate (default $CTXD_CA, else the system's\n"
    "                       store); implies --tls\n"
    "  --cert FILE          client certificate for mTLS (default $CTXD_CERT);\n"
    "  --key FILE           its key (default $CTXD_KEY, else in --cert's file);\n"
    "                       both imply --tls\n"
    "  --server-name NAME   the name the server's certificate must carry\n"
    "                       (default the host of --addr); implies --tls\n"
    "  --token TOKEN        bearer token sent with every call (default\n"
    "                       $CTXD_TOKEN; on the command line it is visible\n"
    "                       in ps: prefer --token-file or $CTXD_TOKEN)\n"
    "  --token-file FILE    read the token from FILE (default $CTXD_TOKEN_FILE)\n"
    "  -h, --help           this text\n"
    "  --version            print the version\n"
    "\n"
    "Exit status:\n"
    "  0  success\n"
    "  1  the operation failed or was rejected (e.g. a document was refused,\n"
    "     not found, no such collection, a rebuild or a job failed, verify\n"
    "     found problems, server not SERVING)\n"
    "  2  usage error\n"
    "  3  server unreachable (connection refused or lost, name not "
    "resolved,\n"
    "     TLS handshake failed)\n"
    "  4  not allowed: no or a bad token (UNAUTHENTICATED), or the token's\n"
    "     role does not allow the call (PERMISSION_DENIED)\n"
    "\n"
    "Global options may also follow the command. Run 'ctxctl help COMMAND'\n"
    "for a command's options.\n";

typedef struct cmd_help {
  const char *name;
  const char *text;
} cmd_help;

static const cmd_help cmd_helps[] = {
    {"status",
     "usage: ctxctl status\n"
     "\n"
     "Calls grpc.health.v1.Health/Check and prints the serving status.\n"
     "Exit 0 when SERVING, 1 when the server answers anything else, 3 when\n"
     "it cannot be reached.\n"},
    {"stats",
     "usage: ctxctl stats [--json]\n"
     "\n"
     "Prints the server's store statistics (Admin/Stats), then a table of\n"
     "its collections as 'collection ls' shows it: documents, chunks,\n"
     "vectors, index type, whether the index is trained, and how many\n"
     "deleted vectors the index still masks. --json prints one JSON object\n"
     "(the StatsResponse field names; per collection, CollectionInfo's).\n"},
    {"put",
     "usage: ctxctl put [OPTIONS] INPUT...\n"
     "\n"
     "Stores documents through Documents/PutStream. Inputs:\n"
     "  FILE            one document; its id is the path as given\n"
     "  DIR             every regular file below DIR, recursively; the id is\n"
     "                  the path relative to DIR\n"
     "  -               one document read from standard input (id from --id,\n"
     "                  else the server generates one)\n"
     "  --jsonl FILE    one document per line: {\"id\": ..., \"text\": ...,\n"
     "                  \"metadata\": {\"key\": \"value\"}, \"collection\": ...}\n"
     "                  (metadata and collection optional; FILE may be -)\n"
     "Options:\n"
     "  --id ID             id for a single FILE or - input\n"
     "  --prefix P          prepend P to the ids of FILE and DIR inputs\n"
     "                      (put --prefix docs/ docs gives docs/a.md)\n"
     "  --meta KEY=VALUE    metadata for file inputs (repeatable)\n"
     "  --max-tokens N      chunk size in tokens (0: server default)\n"
     "  --overlap N         overlap between chunks in tokens\n"
     "  -c, --collection NAME\n"
     "                      store into collection NAME (default \"default\";\n"
     "                      a JSONL line's \"collection\" key overrides it);\n"
     "                      an unknown name is created with the server's\n"
     "                      defaults\n"
     "  -q, --quiet         no summary line\n"
     "Files are sent as they are; the server checks that text is UTF-8 and\n"
     "its refusal is shown per document. A progress bar is drawn on stderr\n"
     "when stderr is a terminal. Exit 0 when every document was stored, 1\n"
     "when any was rejected.\n"},
    {"get",
     "usage: ctxctl get ID [-c NAME] [--text] [--chunks] [--vectors] [--json]\n"
     "\n"
     "Shows a stored document: collection, size, tokens, metadata.\n"
     "  -c, --collection NAME   the document's collection (default "
     "\"default\")\n"
     "  --text      print the document text alone (byte for byte)\n"
     "  --chunks    list its chunks (with --text: each chunk and its text)\n"
     "  --vectors   list its chunks with their vectors (the first values and\n"
     "              the dimension; every value with --json)\n"
     "  --json      one JSON object (with text/chunks/vectors when asked "
     "for)\n"
     "Exit 1 when there is no such document or collection.\n"},
    {"rm",
     "usage: ctxctl rm [-f] [-c NAME] ID...\n"
     "\n"
     "Deletes documents (of collection NAME; default \"default\"). A missing\n"
     "document is reported and makes the exit status 1, unless -f/--force\n"
     "is given.\n"},
    {"ls",
     "usage: ctxctl ls [-c NAME] [--limit N] [--all] [--ids] [--json]\n"
     "\n"
     "Lists documents (in the server's order): id, bytes, chunks, tokens.\n"
     "  -c, --collection NAME   list collection NAME (default \"default\")\n"
     "  --limit N   at most N documents (default 100)\n"
     "  --all       every document (pages through Documents/List)\n"
     "  --ids       ids only, one per line\n"
     "  --json      one JSON object per line\n"},
    {"search",
     "usage: ctxctl search QUERY... [-k N] [--mode vector|lexical|hybrid]\n"
     "         [-c NAME] [--doc ID]... [--meta KEY=VALUE]... [--text]\n"
     "         [--ef N] [--nprobe N] [--json]\n"
     "\n"
     "Finds the chunks that best match QUERY (Retrieval/Search) and prints,\n"
     "best first: rank, score, chunk ordinal, byte range [START, END) in its\n"
     "document, and document id. QUERY - reads the query from standard\n"
     "input. Several QUERY arguments are sent in one Retrieval/SearchBatch\n"
     "call, each with the same options, and printed one block each.\n"
     "  -k N                  number of hits (default 10; the server allows\n"
     "                        at most 1000)\n"
     "  --mode M              vector (embedding similarity), lexical (BM25)\n"
     "                        or hybrid (reciprocal rank fusion of both;\n"
     "                        the default)\n"
     "  -c, --collection NAME search collection NAME (default \"default\")\n"
     "  --doc ID              only chunks of document ID (repeatable)\n"
     "  --meta KEY=VALUE      only documents whose metadata has KEY=VALUE\n"
     "                        (repeatable: all must hold)\n"
     "  --text                print the start of each chunk's text under it\n"
     "  --ef N                HNSW efSearch for this search (0: index "
     "default)\n"
     "  --nprobe N            IVF nprobe for this search (0: index default)\n"
     "  --json                one JSON object per query and line:\n"
     "                        {\"query\", \"hits\": [{\"rank\", \"score\",\n"
     "                        \"doc_id\", \"ordinal\", \"byte_start\",\n"
     "                        \"byte_end\", \"tokens\", \"text\" (--text)}]}\n"
     "Scores: cosine similarity (metric ip) or minus the L2 distance for\n"
     "vector, BM25 for lexical, the fused reciprocal-rank score for hybrid;\n"
     "higher is better. No hits is not an error (exit 0). Exit 1 when the\n"
     "server refuses the search (no such collection, k above its limit, a\n"
     "query it cannot run), 2 for a bad option (-k 0, an unknown --mode).\n"},
    {"collection",
     "usage: ctxctl collection create NAME [--embedder E] [--metric ip|l2]\n"
     "                         [--index SPEC] [--chunk-tokens N] [--overlap N]\n"
     "                         [--json]\n"
     "       ctxctl collection drop NAME [--yes]\n"
     "       ctxctl collection ls [--json]\n"
     "\n"
     "Collections hold documents with their own embedder, vector index and\n"
     "chunking. Settings are fixed at creation; options left out take the\n"
     "server's configured defaults.\n"
     "create (Admin/CreateCollection):\n"
     "  --embedder E        \"hash\", \"hash:dim=512,...\", \"none:dim=N\"\n"
     "                      (clients supply every vector), or \"model\"\n"
     "                      (\"model:max_tokens=N,pooling=mean\": the loaded\n"
     "                      model's embeddings; the collection records it)\n"
     "  --metric ip|l2      inner product on normalised vectors (cosine), or\n"
     "                      L2 distance\n"
     "  --index SPEC        FAISS factory string: Flat, HNSW32,\n"
     "                      IVF1024,Flat, IVF4096,PQ32, ...\n"
     "  --chunk-tokens N    chunk size in tokens\n"
     "  --overlap N         overlap between chunks in tokens\n"
     "  --json              print the new collection as JSON\n"
     "  Exit 1 if it exists already or the server refuses a setting.\n"
     "drop (Admin/DropCollection): deletes the collection and all its\n"
     "  documents. Asks first when standard input is a terminal; otherwise\n"
     "  --yes (-y) is required (exit 2 without it). Exit 1 if there is no\n"
     "  such collection or the answer is not yes.\n"
     "ls (Admin/ListCollections): a table of collection, documents,\n"
     "  chunks, vectors, index type, trained (yes/no) and masked (vectors\n"
     "  deleted but still held by an HNSW index until it is rebuilt), and a\n"
     "  note for an index not trained yet, being rebuilt, or whose last\n"
     "  rebuild failed. --json: one CollectionInfo object per line.\n"},
    {"reindex",
     "usage: ctxctl reindex [-c NAME] [-q]\n"
     "\n"
     "Rebuilds collection NAME's vector index (default \"default\") from\n"
     "the stored vectors (Admin/RebuildIndex) and follows its progress\n"
     "until it is done, with a progress bar on stderr when stderr is a\n"
     "terminal. Searches go on meanwhile on the old index; the new one\n"
     "replaces it at once when complete. Interrupting ctxctl does not stop\n"
     "the rebuild ('ctxctl stats' shows its progress). No deadline unless\n"
     "--timeout is given.\n"
     "  -c, --collection NAME   the collection to rebuild\n"
     "  -q, --quiet             no summary line\n"
     "Exit 0 when the rebuild is done, 1 when it failed or the collection\n"
     "does not exist.\n"},
    {"reorder",
     "usage: ctxctl reorder (--input FILE | [-c NAME] [--doc ID]...\n"
     "                      [--meta KEY=VALUE]...) --out DIR [OPTIONS]\n"
     "\n"
     "Starts a corpus job (Corpus/Reorder): the documents are ordered so\n"
     "that related ones sit next to each other (kNN graph, near-duplicate\n"
     "removal, a greedy maximum travelling-salesman path) and packed into\n"
     "windows of N tokens (iclm) or cut into power-of-two pieces\n"
     "(decompose). A progress bar per phase is drawn on stderr when it is a\n"
     "terminal; the summary figures follow on stdout. The job runs in the\n"
     "server: interrupting ctxctl does not stop it ('ctxctl jobs watch ID'\n"
     "follows it again, 'ctxctl jobs cancel ID' stops it). No deadline\n"
     "unless --timeout is given.\n"
     "Input (on the server's disk, or stored documents):\n"
     "  --input FILE        JSONL, one {\"id\", \"text\", \"vector\"} object per\n"
     "                      line (vector optional)\n"
     "  -c, --collection NAME\n"
     "                      the stored documents of NAME (default \"default\"\n"
     "                      when --input is not given)\n"
     "  --doc ID            only this stored document (repeatable)\n"
     "  --meta KEY=VALUE    only stored documents with this metadata\n"
     "                      (repeatable: all must hold)\n"
     "  --out DIR           output directory on the server (created; files of\n"
     "                      an earlier job there are replaced)\n"
     "Relative FILE and DIR paths are made absolute with ctxctl's working\n"
     "directory (right when ctxctl and the server share a machine).\n"
     "Options:\n"
     "  --mode M            iclm (default), decompose, or order (the order\n"
     "                      only, no packing)\n"
     "  -k N                neighbours per document (default 20, at most\n"
     "                      1000)\n"
     "  --window N          window length L in tokens (default 8192)\n"
     "  --seed N            seed of ties, samples and the random baseline\n"
     "                      (default 0)\n"
     "  --vectors V         auto (stored or given vectors, the rest\n"
     "                      embedded; default), embed (embed every text),\n"
     "                      given (every document must have one)\n"
     "  --embedder E        embedder of missing vectors: hash or\n"
     "                      hash:dim=...,... (default: the collection's)\n"
     "  --dedup X           near-duplicate cosine threshold (default 0.95;\n"
     "                      above 1: no duplicate removal)\n"
     "  --jaccard X         also require character 3-gram Jaccard >= X\n"
     "  --decompose-min N   smallest piece 2^N tokens (default 8)\n"
     "  --decompose-max N   largest piece 2^N tokens (default log2 of the\n"
     "                      window)\n"
     "  --separator S       between documents (default <|endoftext|>)\n"
     "  --no-separator      nothing between documents\n"
     "  --keep-checkpoints  keep vectors.ckpt and knn.ckpt in DIR\n"
     "  --fetch LOCALDIR    when the job is done, download its output files\n"
     "                      into LOCALDIR (Corpus/FetchResult; sizes and\n"
     "                      CRC-32s checked)\n"
     "  --detach            print the job id once it is queued and exit\n"
     "  --json              print the result as JSON (ReorderResult fields)\n"
     "  -q, --quiet         no progress and no summary\n"
     "Output files in DIR: order.jsonl, windows.jsonl, duplicates.jsonl,\n"
     "summary.json. Exit 0 when the job is done, 1 when it was refused,\n"
     "failed or cancelled (the reason is printed), 2 for a bad option.\n"},
    {"jobs",
     "usage: ctxctl jobs [ls] [--state S] [--limit N] [--json]\n"
     "       ctxctl jobs show ID [--json]\n"
     "       ctxctl jobs cancel ID\n"
     "       ctxctl jobs watch ID [--fetch LOCALDIR] [-q] [--json]\n"
     "       ctxctl jobs fetch ID LOCALDIR [--file NAME]... [-q]\n"
     "\n"
     "Corpus jobs (started by 'ctxctl reorder'). Jobs keep their state in\n"
     "the server's store: they survive a restart of the server and resume\n"
     "where they were (or end failed, with the reason).\n"
     "ls      the most recent jobs (default 100), oldest first: id, state\n"
     "        (queued, running, done, failed, cancelled), mode, phase,\n"
     "        progress, age, output directory; --state keeps one state;\n"
     "        --json: one Job object per line\n"
     "show    one job: its input, output, phases with their times, the\n"
     "        error of a failed job, the figures of a done one\n"
     "cancel  stop a job: a queued one at once, a running one at its next\n"
     "        check (exit 1 for a job that has ended already)\n"
     "watch   follow a job with a progress bar per phase until it ends, as\n"
     "        reorder does; exit 0 when it is done, 1 otherwise\n"
     "fetch   download a done job's output files into LOCALDIR (created if\n"
     "        missing); --file limits them (repeatable)\n"},
    {"chunk",
     "usage: ctxctl chunk [FILE|-] [--max-tokens N] [--overlap N] [--json]\n"
     "\n"
     "Sends a text (FILE, or standard input) to Documents/Chunk and shows\n"
     "the chunks the server would store: ordinal, byte range, tokens and\n"
     "the start of each chunk's text. Nothing is stored. --json prints the\n"
     "whole response, chunk texts included.\n"},
    {"select",
     "usage: ctxctl select (--doc ID | --file F | --text T) --question Q\n"
     "                     [--budget N] [--method M] [-c NAME] [OPTIONS]\n"
     "                     [-v] [--json]\n"
     "\n"
     "Selects the key context of a long text for a question\n"
     "(Retrieval/SelectContextStream): the segments that matter most, at\n"
     "most N tokens (--budget, default 1024), in their original order, and\n"
     "prints that context. The text is a stored document (--doc, of\n"
     "collection -c) or a local file (--file, '-' for stdin; sent inline).\n"
     "--method: auto (default: infiniretri when the server has a model,\n"
     "bm25 otherwise), xl3m, infiniretri, bm25, embedding (the collection's\n"
     "embedder). xl3m may go without --question (it then asks the text's\n"
     "last --tail tokens).\n"
     "  -v               also the segments (bytes, tokens, score) and figures\n"
     "                   on stderr\n"
     "  --json           one JSON object: method, tokens, context, segments,\n"
     "                   stats\n"
     "  --segment N      segment size in tokens (xl3m, bm25, embedding; 256)\n"
     "  --overlap N      tokens of whole sentences repeated between segments\n"
     "  --tail N         xl3m without a question: the last N tokens (64)\n"
     "  --score S        xl3m: entropy (default) or logprob\n"
     "  --batch N        xl3m: segments per model call (8)\n"
     "  --window N       infiniretri window in tokens (1024)\n"
     "  --top-k N        infiniretri tokens kept per window (300)\n"
     "  --filter N       infiniretri box filter width (8; 1 = none)\n"
     "  --layer N        infiniretri attention layer: N > 0 from the first,\n"
     "                   N < 0 from the end (default: the last)\n"
     "  --no-question-weights\n"
     "                   infiniretri: do not weight rows by the question's\n"
     "                   attention to itself\n"
     "  --cache N        infiniretri cache cap in tokens\n"
     "A progress line is drawn on stderr when it is a terminal. No deadline\n"
     "unless --timeout is given. Exit 1 when the server refuses (no model\n"
     "for a model method: FAILED_PRECONDITION; no such document).\n"},
    {"model",
     "usage: ctxctl model load PATH [--tokenizer] [--json]\n"
     "       ctxctl model unload [--tokenizer]\n"
     "       ctxctl model info [--json]\n"
     "\n"
     "load: the server loads the GGUF at PATH (a path on the server's\n"
     "machine; a relative one is made absolute with this directory) and swaps\n"
     "it in (Admin/LoadModel); calls already running finish on the old\n"
     "one. --tokenizer loads only its vocabulary, as tokenizer.path does.\n"
     "When the tokenizer in use changes while documents are stored, the\n"
     "answer says so: run 'ctxctl rechunk'.\n"
     "unload: empties the model (or --tokenizer: the vocabulary) slot.\n"
     "info: the loaded model and tokenizer, as 'ctxctl stats' shows them.\n"},
    {"rechunk",
     "usage: ctxctl rechunk [-q]\n"
     "\n"
     "Re-chunks every stored document with the server's current tokenizer\n"
     "(Admin/Rechunk), re-embeds and re-indexes it, then records that\n"
     "tokenizer in the store (clearing the tokenizer mismatch 'ctxctl stats'\n"
     "reports). Follows the run already going, if any. Documents written\n"
     "meanwhile are left as they are (counted as skipped). A progress bar is\n"
     "drawn on stderr when it is a terminal; leaving with Ctrl-C stops only\n"
     "the following. Exit 1 when the rechunk fails.\n"},
    {"verify",
     "usage: ctxctl verify\n"
     "\n"
     "Asks the server to check the store (Admin/Verify). Exit 0 when it is\n"
     "consistent, 1 with each problem printed otherwise.\n"},
    {"backup",
     "usage: ctxctl backup DIR [--json]\n"
     "\n"
     "Asks the server for a hot backup (Admin/Backup): a consistent copy of\n"
     "the store and of every collection's vector index, with manifest.json\n"
     "(sizes and SHA-256 of each file, counters, versions), into DIR on the\n"
     "server's disk. DIR must lie under the server's backup.root (a relative\n"
     "DIR is taken under it) and must not exist or be empty. The server\n"
     "keeps serving meanwhile. A failed backup leaves no DIR. No deadline\n"
     "unless --timeout is given.\n"},
    {"restore",
     "usage: ctxctl restore BACKUP_DIR DATA_DIR [--check]\n"
     "\n"
     "Offline: no server is involved, and none may use DATA_DIR. Checks the\n"
     "backup first (manifest, every file present with its size and SHA-256,\n"
     "a store schema version this ctxctl supports) and copies nothing if a\n"
     "check fails, naming the file; then copies it into DATA_DIR, which must\n"
     "not exist or be empty (a failed restore leaves no DATA_DIR). Start\n"
     "ctxd with --data DATA_DIR afterwards. --check only checks (DATA_DIR\n"
     "is then not given).\n"},
    {"compact",
     "usage: ctxctl compact [--json]\n"
     "\n"
     "Asks the server to compact its store file (Admin/Compact): a\n"
     "compacting copy swapped in atomically, so the space of deleted\n"
     "documents goes back to the file system. The server keeps serving;\n"
     "writes wait during the swap. Prints the file size before and after.\n"
     "No deadline unless --timeout is given.\n"},
    {"help",
     "usage: ctxctl help [COMMAND]\n"
     "\n"
     "Prints the overview of commands and options, or COMMAND's usage and\n"
     "options ('ctxctl COMMAND --help' does the same).\n"},
};

/* ---- messages -----------------------------------------------------------*/

__attribute__((format(printf, 1, 2))) static void errorf(const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "ctxctl: ");
  if (g_cmd) fprintf(stderr, "%s: ", g_cmd);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt,
                                                             ...) {
  va_list ap;
  fprintf(stderr, "ctxctl: ");
  if (g_cmd) fprintf(stderr, "%s: ", g_cmd);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  if (g_cmd && strcmp(g_cmd, "help") != 0)
    fprintf(stderr, "\nTry 'ctxctl help %s'.\n", g_cmd);
  else
    fprintf(stderr, "\nTry 'ctxctl --help'.\n");
  return EXIT_USAGE;
}

/* Exit status for a failed call: 3 when the server could not be reached,
 * 4 when it refused us (token or role). */
static int status_exit(const ctxclient_status *st) {
  if (st->code == 16 || st->code == 7) return EXIT_DENIED;
  return st->code == 14 ? EXIT_UNREACHABLE : EXIT_FAILED;
}

/* Set by main(): whether a token is being sent, for the hint below. */
static int g_have_token = 0;

/* What to do about UNAUTHENTICATED / PERMISSION_DENIED, appended to the
 * error line ("" for other codes). */
static const char *denied_hint(int code) {
  if (code == 16)
    return g_have_token ? "; the server did not accept the token"
                        : "; the server requires a token: --token-file FILE,"
                          " $CTXD_TOKEN or --token TOKEN";
  if (code == 7) return "; the token's role does not allow this call";
  return "";
}

/* Report a failed call ("ctxctl: get: what: message (CODE)") and return
 * its exit status. `what` may be NULL; it is left out when the server's
 * message already names it ("document x: not found"). */
static int report(const char *what, const ctxclient_status *st) {
  if (what && !strstr(st->message, what))
    errorf("%s: %s (%s%s)", what, st->message[0] ? st->message : "failed",
           ctxclient_status_name(st->code), denied_hint(st->code));
  else
    errorf("%s (%s%s)", st->message[0] ? st->message : "failed",
           ctxclient_status_name(st->code), denied_hint(st->code));
  return status_exit(st);
}

/* Ids in messages: one over SHOW_ID_MAX bytes is shown as its first 120
 * bytes (cut at a UTF-8 boundary) and "...", so that a 1,500-byte id (a
 * long path) gives a readable line. */
#define SHOW_ID_MAX 200
static const char *show_id(const char *id, char *buf, size_t len) {
  size_t n = strlen(id);
  if (n <= SHOW_ID_MAX) return id;
  size_t keep = 120;
  while (keep > 0 && ((unsigned char)id[keep] & 0xC0) == 0x80) keep--;
  snprintf(buf, len, "%.*s...", (int)keep, id);
  return buf;
}

/* The message for an error about document `id`: `msg` as is when it names
 * the document already ("document x not found"), else "document x: msg";
 * a long id is shortened (show_id) in both cases. */
static void doc_message(const char *id, const char *msg, char *out,
                        size_t len) {
  char sb[SHOW_ID_MAX], *what;
  const char *shown = show_id(id, sb, sizeof sb);
  size_t wl = strlen(id) + 10;
  what = malloc(wl);
  const char *at = NULL;
  if (what) {
    snprintf(what, wl, "document %s", id);
    at = strstr(msg, what);
  }
  if (at)
    snprintf(out, len, "%.*sdocument %s%s", (int)(at - msg), msg, shown,
             at + wl - 1);
  else
    snprintf(out, len, "document %s: %s", shown, msg);
  free(what);
}

/* report() for a call about one document. */
static int report_doc(const char *id, const ctxclient_status *st) {
  char m[1400];
  doc_message(id, st->message[0] ? st->message : "failed", m, sizeof m);
  errorf("%s (%s%s)", m, ctxclient_status_name(st->code),
         denied_hint(st->code));
  return status_exit(st);
}

/* ---- option parsing -----------------------------------------------------*/

/* A tiny getopt_long for "--name VALUE", "--name=VALUE", flags and
 * positionals in any order; "--" ends options. */
typedef struct opt_spec {
  const char *name;  /* "--max-tokens" */
  const char *alias; /* "-f" or NULL */
  int has_arg;
} opt_spec;

/* -c/--collection: the option spec every command that takes one shares. */
#define COLLECTION_OPT {"--collection", "-c", 1}

typedef struct opt_iter {
  int argc, i;
  char **argv;
  int no_more_opts;
} opt_iter;

/* Next item: returns the index into `specs` of an option (with *arg set for
 * options taking one), -1 for a positional (in *arg), -2 at the end, -3 on
 * a usage error (already reported). */
static int opt_next(opt_iter *it, const opt_spec *specs, size_t n,
                    const char **arg) {
  *arg = NULL;
  if (it->i >= it->argc) return -2;
  char *a = it->argv[it->i++];
  if (it->no_more_opts || a[0] != '-' || strcmp(a, "-") == 0) {
    *arg = a;
    return -1;
  }
  if (strcmp(a, "--") == 0) {
    it->no_more_opts = 1;
    return opt_next(it, specs, n, arg);
  }
  const char *eq = strchr(a, '=');
  size_t nlen = eq && a[1] == '-' ? (size_t)(eq - a) : strlen(a);
  for (size_t k = 0; k < n; k++) {
    int match = (strlen(specs[k].name) == nlen &&
                 strncmp(specs[k].name, a, nlen) == 0) ||
                (specs[k].alias && strcmp(specs[k].alias, a) == 0);
    if (!match) continue;
    if (!specs[k].has_arg) {
      if (eq && a[1] == '-') {
        usage_error("option %s takes no value", specs[k].name);
        return -3;
      }
      return (int)k;
    }
    if (eq && a[1] == '-') {
      *arg = eq + 1;
    } else if (it->i < it->argc) {
      *arg = it->argv[it->i++];
    } else {
      usage_error("option %s needs a value", specs[k].name);
      return -3;
    }
    return (int)k;
  }
  usage_error("unknown option %s", a);
  return -3;
}

static int parse_u32(const char *opt, const char *s, uint32_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end || s[0] == '-' || v > UINT32_MAX) {
    usage_error("%s: not a number: %s", opt, s);
    return -1;
  }
  *out = (uint32_t)v;
  return 0;
}

/* A KEY=VALUE option (--meta): 0, or EXIT_USAGE (reported). */
static int check_kv(const char *opt, const char *arg) {
  if (!strchr(arg, '=') || arg[0] == '=')
    return usage_error("%s wants KEY=VALUE, got %s", opt, arg);
  return 0;
}

/* ---- shared state -------------------------------------------------------*/

typedef struct ctl {
  const char *addr;
  int64_t timeout_ms; /* per unary call */
  int timeout_given;  /* --timeout was on the command line */
  int tls;            /* --tls, or implied by a TLS option */
  ctxclient_tls tls_opts;
  const char *token;      /* from --token or $CTXD_TOKEN */
  const char *token_file; /* --token-file or $CTXD_TOKEN_FILE, when no token */
  char *token_buf;        /* the token read from token_file; freed by main */
  ctxclient *client;
} ctl;

/* A command or subcommand: its name and what runs it. */
typedef struct command {
  const char *name;
  int (*fn)(ctl *g, int argc, char **argv);
} command;

static char *read_token_file(const char *path);

static int ctl_connect(ctl *g) {
  ctxclient_status st;
  if (g->token_file && !g->token) {
    if (!(g->token_buf = read_token_file(g->token_file))) return EXIT_USAGE;
    g->token = g->token_buf;
  }
  int rc = ctxclient_connect_tls(
      g->addr,
      g->timeout_ms > 0 && g->timeout_ms < 10000 ? (int)g->timeout_ms : 10000,
      g->tls ? &g->tls_opts : NULL, &g->client, &st);
  if (rc == CTXCLIENT_EINVAL) {
    usage_error("%s", st.message);
    return EXIT_USAGE;
  }
  if (rc != 0) {
    report(NULL, &st);
    /* resolve/connect failure, connect timeout, TLS handshake failure */
    return EXIT_UNREACHABLE;
  }
  if (g->token && ctxclient_set_token(g->client, g->token, &st) != 0) {
    usage_error("%s", st.message);
    return EXIT_USAGE;
  }
  /* The library's default (64 MiB, the server's request limit) is too small
   * for a large document with its chunk texts (get --text --chunks returns
   * the text about twice); the user asked for it and the server is theirs. */
  ctxclient_set_max_message(g->client, CTXCTL_MAX_RESPONSE);
  return 0;
}

/* ---- small formatting helpers ------------------------------------------*/

static const char *human_bytes(uint64_t b, char *buf, size_t len) {
  static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = (double)b;
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    u++;
  }
  if (u == 0)
    snprintf(buf, len, "%llu B", (unsigned long long)b);
  else
    snprintf(buf, len, "%.1f %s", v, units[u]);
  return buf;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Read a whole stream. Returns a malloc'd, NUL-terminated buffer (the NUL
 * not counted in *len), or NULL with errno set. */
static char *read_stream(FILE *f, size_t *len) {
  size_t cap = 65536, n = 0;
  char *buf = malloc(cap);
  if (!buf) return NULL;
  for (;;) {
    if (cap - n < 4096 + 1) {
      char *p = realloc(buf, cap *= 2);
      if (!p) {
        free(buf);
        errno = ENOMEM;
        return NULL;
      }
      buf = p;
    }
    size_t r = fread(buf + n, 1, cap - n - 1, f);
    n += r;
    if (r == 0) {
      if (ferror(f)) {
        int e = errno ? errno : EIO;
        free(buf);
        errno = e;
        return NULL;
      }
      break;
    }
  }
  buf[n] = '\0';
  *len = n;
  return buf;
}

static char *read_path(const char *path, size_t *len) {
  if (strcmp(path, "-") == 0) return read_stream(stdin, len);
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  char *buf = read_stream(f, len);
  int e = errno;
  fclose(f);
  errno = e;
  return buf;
}

/* For commands that take no arguments of their own (status, verify): refuse
 * any, then connect. 0, or the exit code to return. */
static int connect_without_args(ctl *g, int argc, char **argv) {
  opt_iter it = {argc, 0, argv, 0};
  const char *arg;
  int k = opt_next(&it, NULL, 0, &arg);
  if (k == -3) return EXIT_USAGE;
  if (k == -1) return usage_error("unexpected argument: %s", arg);
  return ctl_connect(g);
}

/* For commands whose only option is --json: *json set when given. 0, or
 * EXIT_USAGE (reported). */
static int json_only(int argc, char **argv, int *json) {
  static const opt_spec specs[] = {{"--json", NULL, 0}};
  opt_iter it = {argc, 0, argv, 0};
  const char *arg;
  int k;
  *json = 0;
  while ((k = opt_next(&it, specs, 1, &arg)) != -2) {
    if (k == -3) return EXIT_USAGE;
    if (k == -1) return usage_error("unexpected argument: %s", arg);
    *json = 1;
  }
  return 0;
}

/* ---- status -------------------------------------------------------------*/

static int cmd_status(ctl *g, int argc, char **argv) {
  int rc = connect_without_args(g, argc, argv);
  if (rc) return rc;
  ctxclient_status st;
  int serving = 0;
  if (ctxclient_health_check(g->client, "", g->timeout_ms, &serving, &st))
    return report(NULL, &st);
  static const char *names[] = {"UNKNOWN", "SERVING", "NOT_SERVING",
                                "SERVICE_UNKNOWN"};
  if (serving >= 0 && serving <= 3)
    printf("%s\n", names[serving]);
  else
    printf("STATUS_%d\n", serving);
  return serving == 1 ? EXIT_OK : EXIT_FAILED;
}

/* ---- stats --------------------------------------------------------------*/

/* In the collections section below; stats shows the same table. */
static json_t *coll_json(const Ctxd__V1__CollectionInfo *ci);
static void print_collections(Ctxd__V1__CollectionInfo *const *v, size_t n);

/* Reals are floats from the server (scores, vectors): 9 significant
 * digits read back as the same float, where the default 17 would print
 * 0.8123 as 0.81230002641677856. */
static void print_json(json_t *j, int flags) {
  char *s = json_dumps(j, flags | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(9));
  if (s) {
    puts(s);
    free(s);
  }
  json_decref(j);
}

static const char *nz(const char *s);
static json_t *json_text(const char *s);

static json_t *model_json(const Ctxd__V1__ModelInfo *m) {
  if (!m) return json_null();
  json_t *o = json_object();
  json_object_set_new(o, "name", json_text(nz(m->name)));
  json_object_set_new(o, "architecture", json_text(nz(m->architecture)));
  json_object_set_new(o, "path", json_text(nz(m->path)));
  json_object_set_new(o, "tokenizer", json_text(nz(m->tokenizer)));
  json_object_set_new(o, "context_length", json_integer(m->context_length));
  json_object_set_new(o, "layers", json_integer(m->layers));
  json_object_set_new(o, "heads", json_integer(m->heads));
  json_object_set_new(o, "kv_heads", json_integer(m->kv_heads));
  json_object_set_new(o, "embedding_length",
                      json_integer(m->embedding_length));
  json_object_set_new(o, "vocab_size", json_integer(m->vocab_size));
  json_object_set_new(o, "params", json_integer((json_int_t)m->params));
  json_object_set_new(o, "size_bytes",
                      json_integer((json_int_t)m->size_bytes));
  json_object_set_new(o, "vocab_only", json_boolean(m->vocab_only));
  return o;
}

static json_t *rechunk_json(const Ctxd__V1__RechunkProgress *p) {
  if (!p) return json_null();
  return json_pack("{s:o, s:o, s:I, s:I, s:I, s:I, s:o, s:I, s:I}", "state",
                   json_text(nz(p->state)), "tokenizer",
                   json_text(nz(p->tokenizer)), "documents_done",
                   (json_int_t)p->documents_done, "documents_total",
                   (json_int_t)p->documents_total, "chunks",
                   (json_int_t)p->chunks, "skipped", (json_int_t)p->skipped,
                   "error", json_text(nz(p->error)), "started_at",
                   (json_int_t)p->started_at, "seconds",
                   (json_int_t)p->seconds);
}

/* "model           NAME (ARCH, 24 layers, 14/2 heads, ctx 32768, 494M
 * params)" and its path; "-" when none. */
static void print_model(const char *label, const Ctxd__V1__ModelInfo *m) {
  if (!m) {
    printf("%-15s -\n", label);
    return;
  }
  if (m->vocab_only)
    printf("%-15s %s (%s vocabulary, %u tokens)\n", label, nz(m->name),
           nz(m->architecture), m->vocab_size);
  else
    printf("%-15s %s (%s, %u layers, %u/%u heads, width %u, context %u, "
           "%.1fM params)\n",
           label, nz(m->name), nz(m->architecture), m->layers, m->heads,
           m->kv_heads, m->embedding_length, m->context_length,
           (double)m->params / 1e6);
  printf("%-15s %s\n", "", nz(m->path));
}

static int cmd_stats(ctl *g, int argc, char **argv) {
  int json, rc;
  if ((rc = json_only(argc, argv, &json)) || (rc = ctl_connect(g))) return rc;
  ctxclient_status st;
  Ctxd__V1__StatsResponse *r;
  if (ctxclient_stats(g->client, g->timeout_ms, &r, &st))
    return report(NULL, &st);
  if (json) {
    json_t *o = json_pack(
        "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:i, s:s, s:I, s:s, s:I}",
        "documents", (json_int_t)r->documents, "chunks", (json_int_t)r->chunks,
        "bytes", (json_int_t)r->bytes, "tokens", (json_int_t)r->tokens,
        "store_bytes", (json_int_t)r->store_bytes, "map_bytes",
        (json_int_t)r->map_bytes, "map_used_bytes",
        (json_int_t)r->map_used_bytes, "schema_version", (int)r->schema_version,
        "version", r->version ? r->version : "", "uptime_seconds",
        (json_int_t)r->uptime_seconds, "tokenizer",
        r->tokenizer ? r->tokenizer : "", "last_seq", (json_int_t)r->last_seq);
    json_t *a = json_array();
    for (size_t i = 0; i < r->n_collections; i++)
      json_array_append_new(a, coll_json(r->collections[i]));
    json_object_set_new(o, "collections", a);
    json_object_set_new(o, "model", model_json(r->model));
    json_object_set_new(o, "tokenizer_model", model_json(r->tokenizer_model));
    json_object_set_new(o, "store_tokenizer",
                        json_text(nz(r->store_tokenizer)));
    json_object_set_new(o, "tokenizer_mismatch",
                        json_boolean(r->tokenizer_mismatch));
    json_object_set_new(o, "rechunk", rechunk_json(r->rechunk));
    json_object_set_new(o, "selections_running",
                        json_integer(r->selections_running));
    print_json(o, JSON_INDENT(2));
  } else {
    char b1[32], b2[32], b3[32], b4[32];
    uint64_t up = r->uptime_seconds;
    printf("documents       %llu\n", (unsigned long long)r->documents);
    printf("chunks          %llu\n", (unsigned long long)r->chunks);
    printf("text            %s (%llu bytes)\n",
           human_bytes(r->bytes, b1, sizeof b1), (unsigned long long)r->bytes);
    printf("tokens          %llu\n", (unsigned long long)r->tokens);
    printf("store file      %s\n", human_bytes(r->store_bytes, b2, sizeof b2));
    printf("map             %s used of %s (%.1f%%)\n",
           human_bytes(r->map_used_bytes, b3, sizeof b3),
           human_bytes(r->map_bytes, b4, sizeof b4),
           r->map_bytes
               ? 100.0 * (double)r->map_used_bytes / (double)r->map_bytes
               : 0.0);
    printf("tokenizer       %s\n",
           r->tokenizer && *r->tokenizer ? r->tokenizer : "-");
    if (r->tokenizer_mismatch)
      printf("                MISMATCH: the stored chunks were counted with "
             "%s; run 'ctxctl rechunk'\n",
             nz(r->store_tokenizer));
    print_model("model", r->model);
    if (r->tokenizer_model) print_model("vocabulary", r->tokenizer_model);
    if (r->rechunk)
      printf("rechunk         %s, %llu/%llu documents, %llu skipped%s%s\n",
             nz(r->rechunk->state),
             (unsigned long long)r->rechunk->documents_done,
             (unsigned long long)r->rechunk->documents_total,
             (unsigned long long)r->rechunk->skipped,
             r->rechunk->error && *r->rechunk->error ? ": " : "",
             nz(r->rechunk->error));
    printf("last seq        %llu\n", (unsigned long long)r->last_seq);
    printf("schema version  %u\n", r->schema_version);
    printf("server version  %s\n",
           r->version && *r->version ? r->version : "-");
    printf("uptime          %llud %02lluh %02llum %02llus\n",
           (unsigned long long)(up / 86400),
           (unsigned long long)(up / 3600 % 24),
           (unsigned long long)(up / 60 % 60), (unsigned long long)(up % 60));
    printf("\n");
    print_collections(r->collections, r->n_collections);
  }
  ctxd__v1__stats_response__free_unpacked(r, NULL);
  return EXIT_OK;
}

/* ---- put ----------------------------------------------------------------*/

typedef struct put_input {
  char *path; /* file to read; "-" = stdin */
  char *id;   /* document id (may be "") */
} put_input;

/* A progress line on stderr, redrawn in place while stderr is a terminal:
 * "[####....] DONE/TOTAL UNITS  ...". */
typedef struct progress {
  int on; /* draw (stderr is a terminal) */
  double t0, last_draw;
  int drawn; /* a line is on the screen */
} progress;

static void progress_start(progress *pg) {
  pg->on = isatty(2);
  pg->t0 = now_s();
  pg->last_draw = 0;
  pg->drawn = 0;
}

static void progress_clear(progress *pg) {
  if (pg->drawn) {
    fputs("\r\033[K", stderr);
    pg->drawn = 0;
  }
}

/* Start redrawing the line with a bar filled to bar_done/total and
 * "DONE[/TOTAL] UNITS" (no bar and no total while total is 0, i.e.
 * unknown). Returns 0 when nothing is to be drawn: off, or the last draw
 * was under 0.1 s ago and `force` is not set. The caller appends the rest
 * of the line and calls progress_end(). */
static int progress_begin(progress *pg, int force, uint64_t bar_done,
                          uint64_t done, uint64_t total, const char *units) {
  if (!pg->on) return 0;
  double t = now_s();
  if (!force && t - pg->last_draw < 0.1) return 0;
  pg->last_draw = t;
  char bar[32] = "";
  if (total) {
    int w = 24, fill = (int)((double)w * (double)bar_done / (double)total);
    if (fill > w) fill = w;
    bar[0] = '[';
    for (int i = 0; i < w; i++) bar[1 + i] = i < fill ? '#' : '.';
    bar[w + 1] = ']';
    bar[w + 2] = ' ';
    bar[w + 3] = '\0';
  }
  fprintf(stderr, "\r\033[K%s%llu", bar, (unsigned long long)done);
  if (total) fprintf(stderr, "/%llu", (unsigned long long)total);
  fprintf(stderr, " %s", units);
  return 1;
}

static void progress_end(progress *pg) {
  fflush(stderr);
  pg->drawn = 1;
}

/* Seconds since progress_start(). */
static double progress_elapsed(const progress *pg) {
  return now_s() - pg->t0;
}

typedef struct put_state {
  ctl *g;
  ctxclient_stream *s;
  uint32_t max_tokens, overlap;
  int have_chunking;
  const char *collection; /* -c; "" = the server's default */
  char **meta_kv;         /* "k=v" strings from --meta */
  size_t n_meta;
  /* counters */
  uint64_t sent, stored, rejected, local_rejected, bytes;
  uint64_t total; /* known number of documents, 0 = unknown */
  progress pg;
  int failed_stream; /* stream ended with an error: stop */
  ctxclient_status st;
  char last_sent[SHOW_ID_MAX]; /* last document handed to the stream */
  uint64_t sent_unnamed;       /* documents sent with no id (stdin) */
  char last_acked[SHOW_ID_MAX]; /* the last id the server acknowledged */
} put_state;

static void put_progress_draw(put_state *p, int force) {
  /* The bar follows what was sent; the count is what the server stored. */
  if (!progress_begin(&p->pg, force, p->sent, p->stored, p->total, "docs"))
    return;
  double el = progress_elapsed(&p->pg);
  double rate = el > 0 ? (double)p->stored / el : 0;
  char hb[32];
  fprintf(stderr, "  %s  %.0f docs/s",
          human_bytes(p->bytes, hb, sizeof hb), rate);
  if (p->rejected + p->local_rejected)
    fprintf(stderr, "  %llu rejected",
            (unsigned long long)(p->rejected + p->local_rejected));
  progress_end(&p->pg);
}

static void put_note_ack(put_state *p, Ctxd__V1__PutAck *ack) {
  p->stored += ack->n_ids;
  if (ack->n_ids) {
    char sb[SHOW_ID_MAX];
    snprintf(p->last_acked, sizeof p->last_acked, "%s",
             show_id(ack->ids[ack->n_ids - 1], sb, sizeof sb));
  }
  for (size_t i = 0; i < ack->n_errors; i++) {
    progress_clear(&p->pg);
    const Ctxd__V1__PutError *e = ack->errors[i];
    const char *id = e->id && *e->id ? e->id : "(no id)";
    const char *reason = e->reason && *e->reason ? e->reason : "rejected";
    char m[1400];
    doc_message(id, reason, m, sizeof m);
    errorf("%s", m);
    p->rejected++;
  }
}

/* Read acks that have arrived. wait_ms: 0 = only what is there,
 * -1 = until the end of the stream. */
static void put_drain(put_state *p, int wait_ms) {
  while (!p->failed_stream) {
    Ctxd__V1__PutAck *ack;
    int done;
    int rc = ctxclient_putstream_recv(p->s, wait_ms, &ack, &done, &p->st);
    if (rc == CTXCLIENT_EAGAIN) break;
    if (rc != 0) {
      p->failed_stream = 1;
      break;
    }
    if (done) break;
    put_note_ack(p, ack);
    ctxd__v1__put_ack__free_unpacked(ack, NULL);
  }
  put_progress_draw(p, 0);
}

/* The stream ended early: count the acks that came before the status, and
 * keep that status in p->st for the final report. */
static void put_failed(put_state *p) {
  ctxclient_status st = p->st;
  p->failed_stream = 0;
  put_drain(p, 0);
  p->failed_stream = 1;
  p->st = st;
}

/* Send one document. `text` has `len` bytes. */
static void put_send(put_state *p, const char *id, const char *text, size_t len,
                     Ctxd__V1__Document__MetadataEntry **meta, size_t n_meta,
                     const char *collection) {
  if (p->failed_stream) return;
  /* protobuf-c strings are NUL-terminated, so a NUL byte would silently cut
   * the text short: refuse here rather than store half a document. */
  const char *nul = memchr(text, '\0', len);
  if (nul) {
    char sb[SHOW_ID_MAX];
    progress_clear(&p->pg);
    errorf(
        "document %s: text contains a NUL byte at byte offset %zu "
        "(binary file?); not sent",
        *id ? show_id(id, sb, sizeof sb) : "(stdin)", (size_t)(nul - text));
    p->local_rejected++;
    return;
  }
  Ctxd__V1__Document doc = CTXD__V1__DOCUMENT__INIT;
  Ctxd__V1__ChunkOptions ch = CTXD__V1__CHUNK_OPTIONS__INIT;
  Ctxd__V1__PutRequest req = CTXD__V1__PUT_REQUEST__INIT;
  doc.id = (char *)id;
  doc.text = (char *)text;
  doc.metadata = meta;
  doc.n_metadata = n_meta;
  doc.collection = (char *)collection;
  req.document = &doc;
  if (p->have_chunking) {
    ch.max_tokens = p->max_tokens;
    ch.overlap_tokens = p->overlap;
    req.chunking = &ch;
  }
  char sb[SHOW_ID_MAX];
  snprintf(p->last_sent, sizeof p->last_sent, "%s",
           *id ? show_id(id, sb, sizeof sb) : "(no id)");
  if (ctxclient_putstream_send(p->s, &req, &p->st) != 0) {
    put_failed(p);
    return;
  }
  p->sent++;
  p->sent_unnamed += !*id;
  p->bytes += len;
  put_drain(p, 0);
}

/* Metadata entries from --meta KEY=VALUE. */
static Ctxd__V1__Document__MetadataEntry **meta_from_kv(put_state *p,
                                                        size_t *n) {
  *n = 0;
  if (!p->n_meta) return NULL;
  Ctxd__V1__Document__MetadataEntry **v =
      calloc(p->n_meta, sizeof *v + sizeof **v);
  if (!v) return NULL;
  Ctxd__V1__Document__MetadataEntry *e =
      (Ctxd__V1__Document__MetadataEntry *)(v + p->n_meta);
  for (size_t i = 0; i < p->n_meta; i++) {
    Ctxd__V1__Document__MetadataEntry init =
        CTXD__V1__DOCUMENT__METADATA_ENTRY__INIT;
    e[i] = init;
    char *eq = strchr(p->meta_kv[i], '=');
    *eq = '\0'; /* checked when parsed; the string is ours */
    e[i].key = p->meta_kv[i];
    e[i].value = eq + 1;
    v[i] = &e[i];
  }
  *n = p->n_meta;
  return v;
}

static void meta_restore(put_state *p) {
  for (size_t i = 0; i < p->n_meta; i++)
    p->meta_kv[i][strlen(p->meta_kv[i])] = '=';
}

static void put_file(put_state *p, const put_input *in) {
  size_t len;
  char *text = read_path(in->path, &len);
  if (!text) {
    progress_clear(&p->pg);
    errorf("%s: %s", strcmp(in->path, "-") ? in->path : "stdin",
           strerror(errno));
    p->local_rejected++;
    return;
  }
  size_t n_meta;
  Ctxd__V1__Document__MetadataEntry **meta = meta_from_kv(p, &n_meta);
  put_send(p, in->id, text, len, meta, n_meta, p->collection);
  if (meta) meta_restore(p);
  free(meta);
  free(text);
}

static const char *json_type_name(const json_t *j) {
  switch (json_typeof(j)) {
    case JSON_OBJECT:
      return "an object";
    case JSON_ARRAY:
      return "an array";
    case JSON_STRING:
      return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
      return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
      return "a boolean";
    default:
      return "null";
  }
}

static void put_jsonl(put_state *p, const char *path) {
  FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
  const char *name = strcmp(path, "-") == 0 ? "stdin" : path;
  if (!f) {
    errorf("%s: %s", path, strerror(errno));
    p->local_rejected++;
    return;
  }
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  unsigned long lineno = 0;
  while (!p->failed_stream && (n = getline(&line, &cap, f)) >= 0) {
    lineno++;
    size_t len = (size_t)n;
    char *start = line;
    /* A UTF-8 byte order mark (editors on Windows write one) is not JSON:
     * skip it at the start of the file. */
    if (lineno == 1 && len >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0) {
      start += 3;
      len -= 3;
    }
    while (len && (start[len - 1] == '\n' || start[len - 1] == '\r')) len--;
    size_t sp = 0;
    while (sp < len && (start[sp] == ' ' || start[sp] == '\t')) sp++;
    if (sp == len) continue; /* blank line */
    json_error_t jerr;
    json_t *o = json_loadb(start, len, JSON_REJECT_DUPLICATES, &jerr);
    const char *why = NULL;
    char why_buf[200];
    json_t *jid = NULL, *jtext = NULL, *jmeta = NULL, *jcoll = NULL;
    if (!o) {
      progress_clear(&p->pg);
      errorf("%s:%lu: invalid JSON: %s", name, lineno, jerr.text);
      p->local_rejected++;
      continue;
    }
    jid = json_object_get(o, "id");
    jtext = json_object_get(o, "text");
    jmeta = json_object_get(o, "metadata");
    jcoll = json_object_get(o, "collection");
    if (!json_is_object(o))
      why = "not a JSON object";
    else if (jid && !json_is_string(jid) && !json_is_null(jid))
      why = "\"id\" must be a string";
    else if (!json_is_string(jtext))
      why = "\"text\" must be a string";
    else if (jmeta && !json_is_object(jmeta) && !json_is_null(jmeta))
      why = "\"metadata\" must be an object of strings";
    else if (jcoll && !json_is_string(jcoll) && !json_is_null(jcoll))
      why = "\"collection\" must be a string";
    size_t n_meta = json_is_object(jmeta) ? json_object_size(jmeta) : 0;
    Ctxd__V1__Document__MetadataEntry **mv = NULL, *me = NULL;
    if (!why && n_meta) {
      mv = calloc(n_meta, sizeof *mv);
      me = calloc(n_meta, sizeof *me);
      if (!mv || !me) why = "out of memory";
    }
    if (!why && n_meta) {
      const char *key;
      json_t *val;
      size_t i = 0;
      json_object_foreach(jmeta, key, val) {
        if (!json_is_string(val)) {
          snprintf(why_buf, sizeof why_buf,
                   "\"metadata\" values must be strings (\"%.100s\" is %s)",
                   key, json_type_name(val));
          why = why_buf;
          break;
        }
        Ctxd__V1__Document__MetadataEntry init =
            CTXD__V1__DOCUMENT__METADATA_ENTRY__INIT;
        me[i] = init;
        me[i].key = (char *)key;
        me[i].value = (char *)json_string_value(val);
        mv[i] = &me[i];
        i++;
      }
    }
    if (why) {
      progress_clear(&p->pg);
      errorf("%s:%lu: %s", name, lineno, why);
      p->local_rejected++;
    } else {
      put_send(p, jid && json_is_string(jid) ? json_string_value(jid) : "",
               json_string_value(jtext), json_string_length(jtext), mv, n_meta,
               json_is_string(jcoll) ? json_string_value(jcoll)
                                     : p->collection);
    }
    free(mv);
    free(me);
    json_decref(o);
  }
  free(line);
  if (f != stdin) fclose(f);
}

typedef struct input_list {
  put_input *v;
  size_t n, cap;
} input_list;

/* put --prefix: prepended to the ids of FILE and DIR inputs. */
static const char *put_prefix = "";

static int inputs_add(input_list *l, const char *path, const char *id) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 64;
    put_input *v = realloc(l->v, cap * sizeof *v);
    if (!v) return -1;
    l->v = v;
    l->cap = cap;
  }
  l->v[l->n].path = strdup(path);
  const char *pre = strcmp(path, "-") ? put_prefix : "";
  l->v[l->n].id = malloc(strlen(pre) + strlen(id) + 1);
  if (l->v[l->n].id) sprintf(l->v[l->n].id, "%s%s", pre, id);
  if (!l->v[l->n].path || !l->v[l->n].id) return -1;
  l->n++;
  return 0;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Add every regular file below `dir`; ids relative to the top directory
 * (`rel` is the part below it, "" at the top). Symlinked directories are
 * not followed (no loops); symlinked files are. Errors are reported and
 * counted in *errs. */
static int walk_dir(input_list *l, const char *dir, const char *rel,
                    int *errs) {
  DIR *d = opendir(dir);
  if (!d) {
    errorf("%s: %s", dir, strerror(errno));
    (*errs)++;
    return 0;
  }
  char **names = NULL;
  size_t n = 0, cap = 0;
  struct dirent *de;
  int rerr = 0;
  for (;;) {
    errno = 0;
    if (!(de = readdir(d))) {
      rerr = errno;
      break;
    }
    if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 32;
      char **nn = realloc(names, cap * sizeof *nn);
      if (!nn) {
        rerr = ENOMEM;
        break;
      }
      names = nn;
    }
    if (!(names[n] = strdup(de->d_name))) {
      rerr = ENOMEM;
      break;
    }
    n++;
  }
  closedir(d);
  if (rerr) {
    errorf("%s: %s", dir, strerror(rerr));
    (*errs)++;
  }
  if (n) qsort(names, n, sizeof *names, cmp_str);
  int rc = 0;
  for (size_t i = 0; i < n; i++) {
    size_t plen = strlen(dir) + strlen(names[i]) + 2;
    size_t rlen = strlen(rel) + strlen(names[i]) + 2;
    char *path = malloc(plen), *r = malloc(rlen);
    if (!path || !r) {
      free(path);
      free(r);
      rc = -1;
      break;
    }
    int slash = dir[strlen(dir) - 1] == '/';
    snprintf(path, plen, "%s%s%s", dir, slash ? "" : "/", names[i]);
    snprintf(r, rlen, "%s%s%s", rel, *rel ? "/" : "", names[i]);
    struct stat lst, sst;
    if (lstat(path, &lst) < 0) {
      /* e.g. ENAMETOOLONG below a deep tree: say so, never skip silently */
      errorf("%s: %s", path, strerror(errno));
      (*errs)++;
    } else {
      if (S_ISDIR(lst.st_mode)) {
        rc = walk_dir(l, path, r, errs);
      } else if (S_ISREG(lst.st_mode)) {
        rc = inputs_add(l, path, r);
      } else if (S_ISLNK(lst.st_mode)) {
        if (stat(path, &sst) != 0)
          /* dangling or a loop: nothing to store, but say so */
          fprintf(stderr, "ctxctl: put: skipping symbolic link %s: %s\n",
                  path, strerror(errno));
        else if (S_ISREG(sst.st_mode))
          rc = inputs_add(l, path, r);
      }
    }
    free(path);
    free(r);
    if (rc) break;
  }
  for (size_t i = 0; i < n; i++) free(names[i]);
  free(names);
  return rc;
}

static int cmd_put(ctl *g, int argc, char **argv) {
  static const opt_spec specs[] = {
      {"--jsonl", NULL, 1},      {"--id", NULL, 1},      {"--meta", NULL, 1},
      {"--max-tokens", NULL, 1}, {"--overlap", NULL, 1}, {"--quiet", "-q", 0},
      {"--prefix", NULL, 1},     COLLECTION_OPT,
  };
  put_state p;
  memset(&p, 0, sizeof p);
  p.g = g;
  p.collection = "";
  input_list files = {0};
  const char **jsonl = calloc((size_t)argc + 1, sizeof *jsonl);
  char **meta = calloc((size_t)argc + 1, sizeof *meta);
  /* Order of inputs: files/dirs/- first (as given), then --jsonl files. */
  const char **pos = calloc((size_t)argc + 1, sizeof *pos);
  size_t n_jsonl = 0, n_pos = 0;
  const char *id = NULL;
  int quiet = 0, rc = EXIT_OK, errs = 0, k;
  opt_iter it = {argc, 0, argv, 0};
  const char *arg;
  if (!jsonl || !meta || !pos) {
    errorf("out of memory");
    rc = EXIT_FAILED;
    goto out;
  }
  p.meta_kv = meta;
  while ((k = opt_next(&it, specs, sizeof specs / sizeof specs[0], &arg)) !=
         -2) {
    switch (k) {
      case -3:
        rc = EXIT_USAGE;
        goto out;
      case -1:
        pos[n_pos++] = arg;
        break;
      case 0:
        jsonl[n_jsonl++] = arg;
        break;
      case 1:
        id = arg;
        break;
      case 2:
        if ((rc = check_kv("--meta", arg))) goto out;
        meta[p.n_meta++] = (char *)arg;
        break;
      case 3:
        if (parse_u32("--max-tokens", arg, &p.max_tokens)) {
          rc = EXIT_USAGE;
          goto out;
        }
        p.have_chunking = 1;
        break;
      case 4:
        if (parse_u32("--overlap", arg, &p.overlap)) {
          rc = EXIT_USAGE;
          goto out;
        }
        p.have_chunking = 1;
        break;
      case 5:
        quiet = 1;
        break;
      case 6:
        put_prefix = arg;
        break;
      case 7:
        p.collection = arg;
        break;
    }
  }
  if (n_pos == 0 && n_jsonl == 0) {
    rc = usage_error(
        "nothing to store: give files, directories, - or "
        "--jsonl FILE");
    goto out;
  }
  int stdin_uses = 0;
  for (size_t i = 0; i < n_pos; i++) stdin_uses += !strcmp(pos[i], "-");
  for (size_t i = 0; i < n_jsonl; i++) stdin_uses += !strcmp(jsonl[i], "-");
  if (stdin_uses > 1) {
    rc = usage_error("standard input (-) can be read only once");
    goto out;
  }
  if (id && (n_pos != 1 || n_jsonl)) {
    rc = usage_error("--id needs exactly one FILE or - input");
    goto out;
  }
  /* Expand directories now, so that the total is known for the bar. */
  for (size_t i = 0; i < n_pos; i++) {
    struct stat sb;
    const char *a = pos[i];
    if (strcmp(a, "-") == 0) {
      if (inputs_add(&files, "-", id ? id : "")) goto oom;
      continue;
    }
    if (stat(a, &sb) < 0) {
      errorf("%s: %s", a, strerror(errno));
      errs++;
      continue;
    }
    if (S_ISDIR(sb.st_mode)) {
      if (walk_dir(&files, a, "", &errs)) goto oom;
    } else {
      const char *fid = id ? id : a;
      while (fid == a && fid[0] == '.' && fid[1] == '/') fid += 2;
      if (inputs_add(&files, a, fid)) goto oom;
    }
  }
  p.local_rejected += (uint64_t)errs;

  if ((rc = ctl_connect(g))) goto out;
  if (ctxclient_putstream_open(g->client, g->timeout_given ? g->timeout_ms : 0,
                               &p.s, &p.st)) {
    rc = report(NULL, &p.st);
    goto out;
  }
  p.total = n_jsonl ? 0 : files.n;
  progress_start(&p.pg);
  put_progress_draw(&p, 1);
  for (size_t i = 0; i < files.n && !p.failed_stream; i++)
    put_file(&p, &files.v[i]);
  for (size_t i = 0; i < n_jsonl && !p.failed_stream; i++)
    put_jsonl(&p, jsonl[i]);
  if (!p.failed_stream) {
    if (ctxclient_stream_close_send(p.s, &p.st) != 0)
      put_failed(&p);
    else
      put_drain(&p, -1);
  }
  put_progress_draw(&p, 1);
  progress_clear(&p.pg);
  if (p.failed_stream && status_exit(&p.st) == EXIT_DENIED) {
    /* Refused for the token: no document is to blame. */
    rc = report(NULL, &p.st);
  } else if (p.failed_stream) {
    /* The server ends the whole stream for some errors (a message above
     * its size limit); name the last document sent, the likely cause. */
    char what[1200];
    snprintf(what, sizeof what, "stream ended at document %s", p.last_sent);
    rc = report(p.last_sent[0] ? what : NULL, &p.st);
    errorf(
        "the stream ended: documents not yet acknowledged were not "
        "stored");
  } else {
    uint64_t missing = p.sent - p.stored - p.rejected;
    if (p.stored + p.rejected > p.sent) missing = 0;
    if (missing) {
      errorf("%llu documents were sent but not acknowledged",
             (unsigned long long)missing);
      rc = EXIT_FAILED;
    }
    if (p.rejected || p.local_rejected) rc = EXIT_FAILED;
  }
  if (!quiet) {
    char hb[32];
    double el = progress_elapsed(&p.pg);
    printf("stored %llu document%s (%s) in %.2f s",
           (unsigned long long)p.stored, p.stored == 1 ? "" : "s",
           human_bytes(p.bytes, hb, sizeof hb), el);
    if (p.rejected + p.local_rejected)
      printf(", %llu rejected",
             (unsigned long long)(p.rejected + p.local_rejected));
    /* One document sent without an id (stdin): say the id it was given. */
    if (p.sent == 1 && p.sent_unnamed == 1 && p.stored == 1)
      printf(", id %s", p.last_acked);
    printf("\n");
  }
  goto out;
oom:
  errorf("out of memory");
  rc = EXIT_FAILED;
out:
  ctxclient_stream_free(p.s);
  for (size_t i = 0; i < files.n; i++) {
    free(files.v[i].path);
    free(files.v[i].id);
  }
  free(files.v);
  free(jsonl);
  free(meta);
  free(pos);
  return rc;
}

/* ---- get ----------------------------------------------------------------*/

static json_t *meta_json(Ctxd__V1__Document__MetadataEntry **m, size_t n) {
  json_t *o = json_object();
  for (size_t i = 0; i < n; i++)
    json_object_set_new(o, m[i]->key, json_string(m[i]->value));
  return o;
}

/* json_stringn() refuses invalid UTF-8 (which a server might return):
 * fall back to a lossy copy instead of dropping the field. */
static json_t *json_text(const char *s) {
  json_t *j = json_string(s);
  if (j) return j;
  size_t n = strlen(s);
  char *c = malloc(n + 1);
  if (!c) return json_null();
  for (size_t i = 0; i <= n; i++)
    c[i] = (unsigned char)s[i] >= 0x80 ? '?' : s[i];
  j = json_string(c);
  free(c);
  return j;
}

static json_t *floats_json(const float *v, size_t n) {
  json_t *a = json_array();
  for (size_t i = 0; i < n; i++) json_array_append_new(a, json_real(v[i]));
  return a;
}

static json_t *chunk_json(const Ctxd__V1__Chunk *c, int with_text) {
  json_t *o = json_pack("{s:i, s:I, s:I, s:i}", "ordinal", (int)c->ordinal,
                        "byte_start", (json_int_t)c->byte_start, "byte_end",
                        (json_int_t)c->byte_end, "tokens", (int)c->tokens);
  if (with_text) json_object_set_new(o, "text", json_text(c->text));
  if (c->n_vector)
    json_object_set_new(o, "vector", floats_json(c->vector, c->n_vector));
  return o;
}

static int cmd_get(ctl *g, int argc, char **argv) {
  static const opt_spec specs[] = {{"--text", NULL, 0},
                                   {"--chunks", NULL, 0},
                                   {"--json", NULL, 0},
                                   COLLECTION_OPT,
                                   {"--vectors", NULL, 0}};
  opt_iter it = {argc, 0, argv, 0};
  const char *arg, *id = NULL, *coll = "";
  int text = 0, chunks = 0, json = 0, vectors = 0, k;
  while ((k = opt_next(&it, specs, 5, &arg)) != -2) {
    if (k == -3) return EXIT_USAGE;
    if (k == -1) {
      if (id) return usage_error("one ID at a time");
      id = arg;
    }
    if (k == 0) text = 1;
    if (k == 1) chunks = 1;
    if (k == 2) json = 1;
    if (k == 3) coll = arg;
    if (k == 4) vectors = chunks = 1;
  }
  if (!id) return usage_error("missing document ID");
  int rc = ctl_connect(g);
  if (rc) return rc;
  Ctxd__V1__GetRequest req = CTXD__V1__GET_REQUEST__INIT;
  Ctxd__V1__GetResponse *r;
  ctxclient_status st;
  req.id = (char *)id;
  req.with_text = text;
  req.with_chunks = chunks;
  req.with_vectors = vectors;
  req.collection = (char *)coll;
  if (ctxclient_get(g->client, &req, g->timeout_ms, &r, &st))
    return report_doc(id, &st);
  Ctxd__V1__Document *d = r->document;
  const char *did = d && d->id ? d->id : id;
  const char *dcoll = d && d->collection && *d->collection ? d->collection
                      : *coll                                ? coll
                                                             : "default";
  if (json) {
    json_t *o = json_pack("{s:s, s:s, s:I, s:I}", "id", did, "collection",
                          dcoll, "bytes", (json_int_t)r->bytes, "tokens",
                          (json_int_t)r->tokens);
    if (!o) o = json_object();
    json_object_set_new(
        o, "metadata",
        d ? meta_json(d->metadata, d->n_metadata) : json_object());
    if (text)
      json_object_set_new(o, "text", json_text(d && d->text ? d->text : ""));
    if (chunks) {
      json_t *a = json_array();
      for (size_t i = 0; i < r->n_chunks; i++)
        json_array_append_new(a, chunk_json(r->chunks[i], text));
      json_object_set_new(o, "chunks", a);
    }
    print_json(o, JSON_INDENT(2));
  } else if (text && !chunks) {
    const char *t = d && d->text ? d->text : "";
    fwrite(t, 1, strlen(t), stdout);
  } else {
    printf("id          %s\n", did);
    printf("collection  %s\n", dcoll);
    printf("bytes       %llu\n", (unsigned long long)r->bytes);
    printf("tokens      %llu\n", (unsigned long long)r->tokens);
    for (size_t i = 0; d && i < d->n_metadata; i++)
      printf("%s%s=%s\n", i ? "            " : "metadata    ",
             d->metadata[i]->key, d->metadata[i]->value);
    if (chunks) {
      printf("chunks      %zu\n", r->n_chunks);
      if (!text)
        printf("%8s  %12s  %12s  %8s%s\n", "ORDINAL", "START", "END", "TOKENS",
               vectors ? "  VECTOR" : "");
      for (size_t i = 0; i < r->n_chunks; i++) {
        const Ctxd__V1__Chunk *c = r->chunks[i];
        if (text) {
          printf("--- chunk %u  bytes [%llu, %llu)  %u tokens\n", c->ordinal,
                 (unsigned long long)c->byte_start,
                 (unsigned long long)c->byte_end, c->tokens);
          printf("%s\n", c->text ? c->text : "");
        } else {
          printf("%8u  %12llu  %12llu  %8u", c->ordinal,
                 (unsigned long long)c->byte_start,
                 (unsigned long long)c->byte_end, c->tokens);
          /* the first components and the dimension; --json has them all */
          for (size_t j = 0; vectors && j < c->n_vector && j < 4; j++)
            printf("%s%.4f", j ? " " : "  ", (double)c->vector[j]);
          if (vectors)
            printf("%s(%zu floats)\n", c->n_vector > 4 ? " ... " : "  ",
                   c->n_vector);
          else
            printf("\n");
        }
      }
    }
  }
  ctxd__v1__get_response__free_unpacked(r, NULL);
  return EXIT_OK;
}

/* ---- rm -----------------------------------------------------------------*/

static int cmd_rm(ctl *g, int argc, char **argv) {
  static const opt_spec specs[] = {{"--force", "-f", 0}, COLLECTION_OPT};
  opt_iter it = {argc, 0, argv, 0};
  const char *arg, *coll = "";
  int force = 0, k, rc;
  const char **ids = calloc((size_t)argc + 1, sizeof *ids);
  size_t n = 0;
  if (!ids) return EXIT_FAILED;
  while ((k = opt_next(&it, specs, 2, &arg)) != -2) {
    if (k == -3) {
      free(ids);
      return EXIT_USAGE;
    }
    if (k == -1) ids[n++] = arg;
    if (k == 0) force = 1;
    if (k == 1) coll = arg;
  }
  if (n == 0) {
    free(ids);
    return usage_error("missing document ID");
  }
  if ((rc = ctl_connect(g))) {
    free(ids);
    return rc;
  }
  for (size_t i = 0; i < n; i++) {
    Ctxd__V1__DeleteRequest req = CTXD__V1__DELETE_REQUEST__INIT;
    Ctxd__V1__DeleteResponse *r;
    ctxclient_status st;
    req.id = (char *)ids[i];
    req.collection = (char *)coll;
    if (ctxclient_delete(g->client, &req, g->timeout_ms, &r, &st)) {
      int e = report_doc(ids[i], &st);
      if (e > rc) rc = e;
      if (e == EXIT_UNREACHABLE || e == EXIT_DENIED) break;
      continue;
    }
    if (r->deleted) {
      printf("deleted %s (%u chunk%s)\n", ids[i], r->chunks,
             r->chunks == 1 ? "" : "s");
    } else if (!force) {
      char sb[SHOW_ID_MAX];
      errorf("document %s: no such document", show_id(ids[i], sb, sizeof sb));
      if (rc < EXIT_FAILED) rc = EXIT_FAILED;
    }
    ctxd__v1__delete_response__free_unpacked(r, NULL);
  }
  free(ids);
  return rc;
}

/* ---- ls -----------------------------------------------------------------*/

static int cmd_ls(ctl *g, int argc, char **argv) {
  static const opt_spec specs[] = {{"--limit", "-n", 1},
                                   {"--all", "-a", 0},
                                   {"--ids", NULL, 0},
                                   {"--json", NULL, 0},
                                   COLLECTION_OPT};
  opt_iter it = {argc, 0, argv, 0};
  const char *arg, *coll = "";
  uint32_t limit = 100;
  int all = 0, ids_only = 0, json = 0, k, rc;
  while ((k = opt_next(&it, specs, 5, &arg)) != -2) {
    if (k == -3) return EXIT_USAGE;
    if (k == -1) return usage_error("unexpected argument: %s", arg);
    if (k == 0 && parse_u32("--limit", arg, &limit)) return EXIT_USAGE;
    if (k == 1) all = 1;
    if (k == 2) ids_only = 1;
    if (k == 3) json = 1;
    if (k == 4) coll = arg;
  }
  if ((rc = ctl_connect(g))) return rc;
  uint64_t shown = 0;
  char *token = strdup("");
  int header = !ids_only && !json;
  int more = 0;
  while (token && (all || shown < limit)) {
    Ctxd__V1__ListRequest req = CTXD__V1__LIST_REQUEST__INIT;
    Ctxd__V1__ListResponse *r;
    ctxclient_status st;
    uint64_t want = all ? 1000 : limit - shown;
    req.page_size = (uint32_t)(want > 1000 ? 1000 : want);
    req.page_token = token;
    req.collection = (char *)coll;
    if (ctxclient_list(g->client, &req, g->timeout_ms, &r, &st)) {
      free(token);
      return report(NULL, &st);
    }
    if (header) {
      printf("%-40s  %12s  %8s  %10s\n", "ID", "BYTES", "CHUNKS", "TOKENS");
      header = 0;
    }
    size_t i = 0;
    for (; i < r->n_documents && (all || shown < limit); i++, shown++) {
      const Ctxd__V1__DocumentInfo *d = r->documents[i];
      if (ids_only) {
        printf("%s\n", d->id);
      } else if (json) {
        json_t *o = json_pack("{s:o, s:I, s:i, s:I}", "id", json_text(d->id),
                              "bytes", (json_int_t)d->bytes, "chunks",
                              (int)d->chunks, "tokens", (json_int_t)d->tokens);
        json_object_set_new(
            o, "metadata",
            meta_json((Ctxd__V1__Document__MetadataEntry **)d->metadata,
                      d->n_metadata));
        print_json(o, JSON_COMPACT);
      } else {
        printf("%-40s  %12llu  %8u  %10llu\n", d->id,
               (unsigned long long)d->bytes, d->chunks,
               (unsigned long long)d->tokens);
      }
    }
    free(token);
    token = NULL;
    more = i < r->n_documents || (r->next_page_token && *r->next_page_token);
    if (r->next_page_token && *r->next_page_token && i == r->n_documents)
      token = strdup(r->next_page_token);
    ctxd__v1__list_response__free_unpacked(r, NULL);
  }
  free(token);
  fflush(stdout);
  if (more && !all)
    fprintf(stderr,
            "ctxctl: ls: showing the first %llu documents; use "
            "--all or --limit N for more\n",
            (unsigned long long)shown);
  return EXIT_OK;
}

/* ---- chunk --------------------------------------------------------------*/

/* A one-line preview of a chunk's text: control characters shown as
 * spaces, at most `max` bytes, cut at a UTF-8 boundary. */
static void preview(const char *s, size_t max, char *out) {
  size_t n = 0;
  for (; s[n] && n < max; n++) out[n] = (unsigned char)s[n] < 0x20 ? ' ' : s[n];
  if (s[n]) {
    while (n > 0 && ((unsigned char)out[n] & 0xC0) == 0x80 && s[n]) n--;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) n--;
    memcpy(out + n, "...", 4);
    return;
  }
  out[n] = '\0';
}

static int cmd_chunk(ctl *g, int argc, char **argv) {
  static const opt_spec specs[] = {
      {"--max-tokens", NULL, 1}, {"--overlap", NULL, 1}, {"--json", NULL, 0}};
  opt_iter it = {argc, 0, argv, 0};
  const char *arg, *path = NULL;
  uint32_t max_tokens = 0, overlap = 0;
  int json = 0, k, rc;
  while ((k = opt_next(&it, specs, 3, &arg)) != -2) {
    if (k == -3) return EXIT_USAGE;
    if (k == -1) {
      if (path) return usage_error("one FILE at a time");
      path = arg;
    }
    if (k == 0 && parse_u32("--max-tokens", arg, &max_tokens))
      return EXIT_USAGE;
    if (k == 1 && parse_u32("--overlap", arg, &overlap)) return EXIT_USAGE;
    if (k == 2) json = 1;
  }
  if (!path) path = "-";
  size_t len;
  char *text = read_path(path, &len);
  if (!text) {
    errorf("%s: %s", strcmp(path, "-") ? path : "stdin", strerror(errno));
    return EXIT_FAILED;
  }
  if (memchr(text, '\0', len)) {
    errorf("%s: text contains a NUL byte at byte offset %zu",
           strcmp(path, "-") ? path : "stdin",
           (size_t)((char *)memchr(text, '\0', len) - text));
    free(text);
    return EXIT_FAILED;
  }
  if ((rc = ctl_connect(g))) {
    free(text);
    return rc;
  }
  Ctxd__V1__ChunkRequest req = CTXD__V1__CHUNK_REQUEST__INIT;
  Ctxd__V1__ChunkOptions opts = CTXD__V1__CHUNK_OPTIONS__INIT;
  Ctxd__V1__ChunkResponse *r;
  ctxclient_status st;
  opts.max_tokens = max_tokens;
  opts.overlap_tokens = overlap;
  req.text = text;
  req.chunking = &opts;
  req.with_text = 1;
  rc = ctxclient_chunk(g->client, &req, g->timeout_ms, &r, &st);
  free(text);
  if (rc) return report(NULL, &st);
  if (json) {
    json_t *o = json_pack("{s:I, s:s}", "tokens", (json_int_t)r->tokens,
                          "tokenizer", r->tokenizer ? r->tokenizer : "");
    json_t *a = json_array();
    for (size_t i = 0; i < r->n_chunks; i++)
      json_array_append_new(a, chunk_json(r->chunks[i], 1));
    json_object_set_new(o, "chunks", a);
    print_json(o, JSON_INDENT(2));
  } else {
    printf("%7s  %10s  %10s  %6s  %s\n", "ORDINAL", "START", "END", "TOKENS",
           "TEXT");
    for (size_t i = 0; i < r->n_chunks; i++) {
      const Ctxd__V1__Chunk *c = r->chunks[i];
      char pv[64];
      preview(c->text ? c->text : "", 48, pv);
      printf("%7u  %10llu  %10llu  %6u  %s\n", c->ordinal,
             (unsigned long long)c->byte_start, (unsigned long long)c->byte_end,
             c->tokens, pv);
    }
    printf("%zu chunk%s, %llu tokens (tokenizer %s)\n", r->n_chunks,
           r->n_chunks == 1 ? "" : "s", (unsigned long long)r->tokens,
           r->tokenizer && *r->tokenizer ? r->tokenizer : "-");
  }
  ctxd__v1__chunk_response__free_unpacked(r, NULL);
  return EXIT_OK;
}

/* ---- verify -------------------------------------------------------------*/

static int cmd_verify(ctl *g, int argc, char **argv) {
  int rc = connect_without_args(g, argc, argv);
  if (rc) return rc;
  Ctxd__V1__VerifyResponse *r;
  ctxclient_status st;
  if (ctxclient_verify(g->client, g->timeout_ms, &r, &st))
    return report(NULL, &st);
  if (r->ok && r->n_problems == 0) {
    printf("ok: %llu documents, %llu chunks checked\n",
           (unsigned long long)r->documents_checked,
           (unsigned long long)r->chunks_checked);
    rc = EXIT_OK;
  } else {
    for (size_t i = 0; i < r->n_problems; i++)
      printf("problem: %s\n", r->problems[i]);
    printf("FAILED: %zu problem%s in %llu documents, %llu chunks checked\n",
           r->n_problems, r->n_problems == 1 ? "" : "s",
           (unsigned long long)r->documents_checked,
           (unsigned long long)r->chunks_checked);
    rc = EXIT_FAILED;
  }
  ctxd__v1__verify_response__free_unpacked(r, NULL);
  return rc;
}

/* ---- backup, restore, compact ------------------------------------------*/

static int cmd_backup(ctl *g, int argc, char **argv) {
  static const opt_spec specs[] = {{"--json", NULL, 0}};
  opt_iter it = {argc, 0, argv, 0};
  const char *arg, *dir = NULL;
  int k, json = 0, rc;
  while ((k = opt_next(&it, specs, 1, &arg)) != -2) {
    if (k == -3) return EXIT_USAGE;
    if (k == 0) {
      json = 1;
    } else if (dir) {
      return usage_error("one DIR at a time");
    } else {
      dir = arg;
    }
  }
  if (!dir) return usage_error("missing DIR (on the server, under backup.root)");
  if ((rc = ctl_connect(g))) return rc;
  Ctxd__V1__BackupResponse *r;
  ctxclient_status st;
  if (ctxclient_backup(g->client, dir, g->timeout_given ? g->timeout_ms : 0,
                       &r, &st))
    return report(NULL, &st);
  if (json) {
    print_json(json_pack("{s:s, s:i, s:I, s:I, s:I, s:I, s:I, s:i, s:f}",
                         "path", r->path, "files", (int)r->files, "bytes",
                         (json_int_t)r->bytes, "documents",
                         (json_int_t)r->documents, "chunks",
                         (json_int_t)r->chunks, "vectors",
                         (json_int_t)r->vectors, "last_seq",
                         (json_int_t)r->last_seq, "schema_version",
                         (int)r->schema_version, "seconds", r->seconds),
               JSON_INDENT(2));
  } else {
    char hb[32];
    printf("backup %s: %u files, %s, %llu documents, %llu chunks, %llu "
           "vectors, up to change %llu, in %.2f s\n",
           r->path, r->files, human_bytes(r->bytes, hb, sizeof hb),
           (unsigned long long)r->documents, (unsigned long long)r->chunks,
           (unsigned long long)r->vectors, (unsigned long long)r->last_seq,
           r->seconds);
  }
  ctxd__v1__backup_response__free_unpacked(r, NULL);
  return EXIT_OK;
}

static int cmd_restore(ctl *g, int argc, char **argv) {
  static const opt_spec specs[] = {{"--check", NULL, 0}};
  opt_iter it = {argc, 0, argv, 0};
  const char *arg, *pos[2] = {NULL, NULL};
  int k, check = 0, npos = 0;
  (void)g;
  while ((k = opt_next(&it, specs, 1, &arg)) != -2) {
    if (k == -3) return EXIT_USAGE;
    if (k == 0) {
      check = 1;
    } else if (npos == 2) {
      return usage_error("unexpected argument: %s", arg);
    } else {
      pos[npos++] = arg;
    }
  }
  if (npos != (check ? 1 : 2))
    return usage_error(check ? "--check takes BACKUP_DIR only"
                             : "want BACKUP_DIR and DATA_DIR");
  backup_manifest *m = NULL;
  ctxd_error e;
  ctxd_clearerr(&e);
  double t0 = now_s();
  int rc = check ? backup_check(pos[0], &m, &e)
                 : backup_restore(pos[0], pos[1], &m, &e);
  if (rc) {
    errorf("%s", e.msg);
    return EXIT_FAILED;
  }
  char hb[32];
  printf("%s %s: %zu files, %s, %llu documents, %llu chunks, schema %u, "
         "made by ctxd %s at %s, in %.2f s\n",
         check ? "backup ok" : "restored", check ? pos[0] : pos[1],
         m->n_files, human_bytes(m->total_bytes, hb, sizeof hb),
         (unsigned long long)m->documents, (unsigned long long)m->chunks,
         m->schema_version, m->ctxd_version, m->created, now_s() - t0);
  backup_manifest_free(m);
  return EXIT_OK;
}

static int cmd_compact(ctl *g, int argc, char **argv) {
  int json, rc;
  if ((rc = json_only(argc, argv, &json)) || (rc = ctl_connect(g))) return rc;
  Ctxd__V1__CompactResponse *r;
  ctxclient_status st;
  if (ctxclient_compact(g->client, g->timeout_given ? g->timeout_ms : 0, &r,
                        &st))
    return report(NULL, &st);
  if (json) {
    print_json(json_pack("{s:I, s:I, s:f, s:b}", "bytes_before",
                         (json_int_t)r->bytes_before, "bytes_after",
                         (json_int_t)r->bytes_after, "seconds", r->seconds,
                         "paused_writers", r->paused_writers),
               JSON_INDENT(2));
  } else {
    char b1[32], b2[32];
    printf("compacted: %s -> %s in %.2f s\n",
           human_bytes(r->bytes_before, b1, sizeof b1),
           human_bytes(r->bytes_after, b2, sizeof b2), r->seconds);
  }
  ctxd__v1__compact_response__free_unpacked(r, NULL);
  return EXIT_OK;
}

/* ---- collections --------------------------------------------------------*/

static const char *nz(const char *s) {
  return s ? s : "";
}

static const Ctxd__V1__CollectionConfig *coll_config(
    const Ctxd__V1__CollectionInfo *ci) {
  static const Ctxd__V1__CollectionConfig none =
      CTXD__V1__COLLECTION_CONFIG__INIT;
  return ci->config ? ci->config : &none;
}

/* A CollectionInfo as JSON, with the proto's field names. */
static json_t *coll_json(const Ctxd__V1__CollectionInfo *ci) {
  const Ctxd__V1__CollectionConfig *c = coll_config(ci);
  json_t *cfg = json_pack(
      "{s:o, s:o, s:i, s:o, s:o, s:i, s:i}", "name", json_text(nz(c->name)),
      "embedder", json_text(nz(c->embedder)), "dim", (int)c->dim, "metric",
      json_text(nz(c->metric)), "index_spec", json_text(nz(c->index_spec)),
      "chunk_max_tokens", (int)c->chunk_max_tokens, "chunk_overlap_tokens",
      (int)c->chunk_overlap_tokens);
  json_t *o = json_pack(
      "{s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b, s:b, s:I, s:b, s:I, "
      "s:I, s:o, s:I}",
      "config", cfg ? cfg : json_object(), "documents",
      (json_int_t)ci->documents, "chunks", (json_int_t)ci->chunks, "bytes",
      (json_int_t)ci->bytes, "tokens", (json_int_t)ci->tokens, "vectors",
      (json_int_t)ci->vectors, "indexed", (json_int_t)ci->indexed, "masked",
      (json_int_t)ci->masked, "trained", (int)ci->trained,
      "exact_until_trained", (int)ci->exact_until_trained, "min_train",
      (json_int_t)ci->min_train, "rebuilding", (int)ci->rebuilding,
      "rebuild_done", (json_int_t)ci->rebuild_done, "rebuild_total",
      (json_int_t)ci->rebuild_total, "rebuild_error",
      json_text(nz(ci->rebuild_error)), "covered_seq",
      (json_int_t)ci->covered_seq);
  return o ? o : json_object();
}

/* The collections table (collection ls, stats), then a note for each
 * collection whose index is not in its final state. */
static void print_collections(Ctxd__V1__CollectionInfo *const *v, size_t n) {
  printf("%-24s  %10s  %10s  %10s  %-16s  %-7s  %8s\n", "COLLECTION",
         "DOCUMENTS", "CHUNKS", "VECTORS", "INDEX", "TRAINED", "MASKED");
  for (size_t i = 0; i < n; i++) {
    const Ctxd__V1__CollectionConfig *c = coll_config(v[i]);
    printf("%-24s  %10llu  %10llu  %10llu  %-16s  %-7s  %8llu\n", nz(c->name),
           (unsigned long long)v[i]->documents,
           (unsigned long long)v[i]->chunks, (unsigned long long)v[i]->vectors,
           *nz(c->index_spec) ? c->index_spec : "-",
           v[i]->trained ? "yes" : "no", (unsigned long long)v[i]->masked);
  }
  for (size_t i = 0; i < n; i++) {
    const Ctxd__V1__CollectionInfo *ci = v[i];
    const char *name = nz(coll_config(ci)->name);
    if (ci->exact_until_trained)
      printf("%s: not trained yet, exact search until %llu vectors\n", name,
             (unsigned long long)ci->min_train);
    if (ci->rebuilding)
      printf("%s: rebuilding the index, %llu/%llu vectors\n", name,
             (unsigned long long)ci->rebuild_done,
             (unsigned long long)ci->rebuild_total);
    if (*nz(ci->rebuild_error))
      printf("%s: the last rebuild failed: %s\n", name, ci->rebuild_error);
  }
}

static int coll_create(ctl *g, int argc, char **argv) {
  static const opt_spec specs[] = {
      {"--embedder", NULL, 1},     {"--metric", NULL, 1},
      {"--index", NULL, 1},        {"--chunk-tokens", NULL, 1},
      {"--overlap", NULL, 1},      {"--json", NULL, 0},
  };
  opt_iter it = {argc, 0, argv, 0};
  const char *arg;
  Ctxd__V1__CollectionConfig cfg = CTXD__V1__COLLECTION_CONFIG__INIT;
  int json = 0, k, rc;
  cfg.name = NULL;
  while ((k = opt_next(&it, specs, 6, &arg)) != -2) {
    if (k == -3) return EXIT_USAGE;
    if (k == -1) {
      if (cfg.name) return usage_error("one NAME at a time");
      cfg.name = (char *)arg;
    }
    if (k == 0) cfg.embedder = (char *)arg;
    if (k == 1) {
      if (strcmp(arg, "ip") && strcmp(arg, "l2"))
        return usage_error("--metric: want ip or l2, got %s", arg);
      cfg.metric = (char *)arg;
    }
    if (k == 2) cfg.index_spec = (char *)arg;
    if (k == 3 && parse_u32("--chunk-tokens", arg, &cfg.chunk_max_tokens))
      return EXIT_USAGE;
    if (k == 4 && parse_u32("--overlap", arg, &cfg.chunk_overlap_tokens))
      return EXIT_USAGE;
    if (k == 5) json = 1;
  }
  if (!cfg.name) return usage_error("missing collection NAME");
  if ((rc = ctl_connect(g))) return rc;
  Ctxd__V1__CollectionInfo *r;
  ctxclient_status st;
  if (ctxclient_create_collection(g->client, &cfg, g->timeout_ms, &r, &st))
    return report(NULL, &st);
  if (json) {
    print_json(coll_json(r), JSON_INDENT(2));
  } else {
    const Ctxd__V1__CollectionConfig *c = coll_config(r);
    printf(
        "created collection %s: embedder %s (dimension %u), metric %s, "
        "index %s, chunks of %u tokens with %u overlap\n",
        *nz(c->name) ? c->name : cfg.name, nz(c->embedder), c->dim,
        nz(c->metric), nz(c->index_spec), c->chunk_max_tokens,
        c->chunk_overlap_tokens);
  }
  ctxd__v1__collection_info__free_unpacked(r, NULL);
  return EXIT_OK;
}

/* Ask on the terminal before dropping `name`; 1 when the answer is yes.
 * Says how many documents go with it when the server lists it. */
static int confirm_drop(ctl *g, const char *name) {
  Ctxd__V1__ListCollectionsResponse *r;
  ctxclient_status st;
  long long docs = -1;
  if (ctxclient_list_collections(g->client, g->timeout_ms, &r, &st) == 0) {
    for (size_t i = 0; i < r->n_collections; i++)
      if (!strcmp(nz(coll_config(r->collections[i])->name), name))
        docs = (long long)r->collections[i]->documents;
    ctxd__v1__list_collections_response__free_unpacked(r, NULL);
  }
  if (docs >= 0)
    fprintf(stderr, "Drop collection %s and its %lld document%s? [y/N] ",
            name, docs, docs == 1 ? "" : "s");
  else
    fprintf(stderr, "Drop collection %s and all its documents? [y/N] ", name);
  char line[16];
  if (!fgets(line, sizeof line, stdin)) return 0;
  return line[0] == 'y' || line[0] == 'Y';
}

static int coll_drop(ctl *g, int argc, char **argv) {
  static const opt_spec specs[] = {{"--yes", "-y", 0}};
  opt_iter it = {argc, 0, argv, 0};
  const char *arg, *name = NULL;
  int yes = 0, k, rc;
  while ((k = opt_next(&it, specs, 1, &arg)) != -2) {
    if (k == -3) return EXIT_USAGE;
    if (k == -1) {
      if (name) return usage_error("one NAME at a time");
      name = arg;
    }
    if (k == 0) yes = 1;
  }
  if (!name) return usage_error("missing collection NAME");
  /* Without a terminal to ask on, dropping needs --yes: a script must say
   * it means to delete the documents. */
  if (!yes && !isatty(0))
    return usage_error(
        "dropping collection %s deletes its documents; confirm with --yes",
        name);
  if ((rc = ctl_connect(g))) return rc;
  if (!yes && !confirm_drop(g, name)) {
    errorf("collection %s not dropped", name);
    return EXIT_FAILED;
  }
  Ctxd__V1__DropCollectionResponse *r;
  ctxclient_status st;
  if (ctxclient_drop_collection(g->client, name, g->timeout_ms, &r, &st))
    return report(NULL, &st);
  printf("dropped collection %s (%llu document%s)\n", name,
         (unsigned long long)r->documents, r->documents == 1 ? "" : "s");
  ctxd__v1__drop_collection_response__free_unpacked(r, NULL);
  return EXIT_OK;
}

static int coll_ls(ctl *g, int argc, char **argv) {
  int json, rc;
  if ((rc = json_only(argc, argv, &json)) || (rc = ctl_connect(g))) return rc;
  Ctxd__V1__ListCollectionsResponse *r;
  ctxclient_status st;
  if (ctxclient_list_collections(g->client, g->timeout_ms, &r, &st))
    return report(NULL, &st);
  if (json)
    for (size_t i = 0; i < r->n_collections; i++)
      print_json(coll_json(r->collections[i]), JSON_COMPACT);
  else
    print_collections(r->collections, r->n_collections);
  ctxd__v1__list_collections_response__free_unpacked(r, NULL);
  return EXIT_OK;
}

static int cmd_collection(ctl *g, int argc, char **argv) {
  static const command subs[] = {
      {"create", coll_create}, {"drop", coll_drop}, {"ls", coll_ls}};
  if (argc < 1) return usage_error("missing subcommand: create, drop or ls");
  for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
    if (!strcmp(argv[0], subs[i].name))
      return subs[i].fn(g, argc - 1, argv + 1);
  return usage_error("unknown subcommand %s (want create, drop or ls)",
                     argv[0]);
}

/* ---- model, rechunk -------------------------------------------------------*/

static const char *abs_path(const char *p, char **buf);

static int model_load(ctl *g, int argc, char **argv, int unload) {
  static const opt_spec specs[] = {{"--tokenizer", NULL, 0},
                                   {"--json", NULL, 0}};
  opt_iter it = {argc, 0, argv, 0};
  const char *arg, *path = NULL;
  int tok_only = 0, json = 0, k, rc;
  char *abs = NULL;
  while ((k = opt_next(&it, specs, 2, &arg)) != -2) {
    if (k == -3) return EXIT_USAGE;
    if (k == 0) tok_only = 1;
    if (k == 1) json = 1;
    if (k == -1) {
      if (path || unload) return usage_error("unexpected argument: %s", arg);
      path = arg;
    }
  }
  if (!unload && !path) return usage_error("missing PATH (a GGUF file)");
  if ((rc = ctl_connect(g))) return rc;
  Ctxd__V1__LoadModelRequest req = CTXD__V1__LOAD_MODEL_REQUEST__INIT;
  req.path = unload ? (char *)"" : (char *)abs_path(path, &abs);
  req.tokenizer_only = tok_only;
  req.unload = unload;
  Ctxd__V1__LoadModelResponse *r;
  ctxclient_status st;
  rc = ctxclient_load_model(g->client, &req, g->timeout_ms, &r, &st);
  free(abs);
  if (rc) return report(NULL, &st);
  if (json) {
    json_t *o = json_object();
    json_object_set_new(o, "model", model_json(r->model));
    json_object_set_new(o, "tokenizer", json_text(nz(r->tokenizer)));
    json_object_set_new(o, "store_tokenizer", json_text(nz(r->store_tokenizer)));
    json_object_set_new(o, "tokenizer_mismatch",
                        json_boolean(r->tokenizer_mismatch));
    print_json(o, JSON_INDENT(2));
  } else {
    if (unload)
      printf("unloaded the %s\n", tok_only ? "tokenizer vocabulary" : "model");
    else
      print_model(tok_only ? "vocabulary" : "model", r->model);
    printf("tokenizer       %s\n", nz(r->tokenizer));
    if (r->tokenizer_mismatch)
      printf("the stored chunks were counted with %s: run 'ctxctl rechunk'\n",
             nz(r->store_tokenizer));
  }
  ctxd__v1__load_model_response__free_unpacked(r, NULL);
  return EXIT_OK;
}

static int model_load_cmd(ctl *g, int argc, char **argv) {
  return model_load(g, argc, argv, 0);
}

static int model_unload_cmd(ctl *g, int argc, char **argv) {
  return model_load(g, argc, argv, 1);
}

static int model_info_cmd(ctl *g, int argc, char **argv) {
  int json, rc;
  if ((rc = json_only(argc, argv, &json)) || (rc = ctl_connect(g))) return rc;
  Ctxd__V1__StatsResponse *r;
  ctxclient_status st;
  if (ctxclient_stats(g->client, g->timeout_ms, &r, &st))
    return report(NULL, &st);
  if (json) {
    json_t *o = json_object();
    json_object_set_new(o, "model", model_json(r->model));
    json_object_set_new(o, "tokenizer_model", model_json(r->tokenizer_model));
    json_object_set_new(o, "tokenizer", json_text(nz(r->tokenizer)));
    json_object_set_new(o, "tokenizer_mismatch",
                        json_boolean(r->tokenizer_mismatch));
    print_json(o, JSON_INDENT(2));
  } else {
    print_model("model", r->model);
    if (r->tokenizer_model) print_model("vocabulary", r->tokenizer_model);
    printf("tokenizer       %s%s\n", nz(r->tokenizer),
           r->tokenizer_mismatch ? " (MISMATCH: run 'ctxctl rechunk')" : "");
  }
  ctxd__v1__stats_response__free_unpacked(r, NULL);
  return EXIT_OK;
}

static int cmd_model(ctl *g, int argc, char **argv) {
  static const command subs[] = {{"load", model_load_cmd},
                                 {"unload", model_unload_cmd},
                                 {"info", model_info_cmd}};
  if (argc < 1) return usage_error("missing subcommand: load, unload or info");
  for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
    if (!strcmp(argv[0], subs[i].name))
      return subs[i].fn(g, argc - 1, argv + 1);
  return usage_error("unknown subcommand %s (want load, unload or info)",
                     argv[0]);
}

static int rechunk_progress(const Ctxd__V1__RechunkProgress *p, void *ud) {
  progress *pg = ud;
  if (progress_begin(pg, 0, p->documents_done, p->documents_done,
                     p->documents_total, "docs")) {
    double el = progress_elapsed(pg);
    fprintf(stderr, "  %.0f docs/s",
            el > 0 ? (double)p->documents_done / el : 0);
    progress_end(pg);
  }
  return 0;
}

static int cmd_rechunk(ctl *g, int argc, char **argv) {
  static const opt_spec specs[] = {{"--quiet", "-q", 0}};
  opt_iter it = {argc, 0, argv, 0};
  const char *arg;
  int quiet = 0, k, rc;
  while ((k = opt_next(&it, specs, 1, &arg)) != -2) {
    if (k == -3) return EXIT_USAGE;
    if (k == -1) return usage_error("unexpected argument: %s", arg);
    quiet = 1;
  }
  if ((rc = ctl_connect(g))) return rc;
  progress pg;
  Ctxd__V1__RechunkProgress *last = NULL;
  ctxclient_status st;
  progress_start(&pg);
  rc = ctxclient_rechunk(g->client, g->timeout_given ? g->timeout_ms : 0,
                         rechunk_progress, &pg, &last, &st);
  progress_clear(&pg);
  if (rc == 0 && !quiet)
    printf("re-chunked %llu documents with %s: %llu chunks, %llu skipped "
           "(changed meanwhile) in %.2f s\n",
           (unsigned long long)(last ? last->documents_done : 0),
           last ? nz(last->tokenizer) : "-",
           (unsigned long long)(last ? last->chunks : 0),
           (unsigned long long)(last ? last->skipped : 0),
           progress_elapsed(&pg));
  if (last) ctxd__v1__rechunk_progress__free_unpacked(last, NULL);
  return rc == 0 ? EXIT_OK : report(NULL, &st);
}

/* ---- select ----------------------------------------------------------------*/

static int select_progress(const Ctxd__V1__SelectContextEvent *ev, void *ud) {
  progress *pg = ud;
  if (progress_begin(pg, 0, ev->done, ev->done, ev->total, nz(ev->phase))) {
    fprintf(stderr, "  %.1f s", progress_elapsed(pg));
    progress_end(pg);
  }
  return 0;
}

static json_t *select_json(const Ctxd__V1__SelectContextResponse *r) {
  json_t *o = json_object(), *a = json_array();
  json_object_set_new(o, "method", json_text(nz(r->method)));
  json_object_set_new(o, "tokens", json_integer(r->tokens));
  json_object_set_new(o, "model", json_text(nz(r->model)));
  json_object_set_new(o, "tokenizer", json_text(nz(r->tokenizer)));
  json_object_set_new(o, "context", json_text(nz(r->context)));
  for (size_t i = 0; i < r->n_segments; i++) {
    const Ctxd__V1__Segment *sg = r->segments[i];
    json_array_append_new(
        a, json_pack("{s:I, s:I, s:i, s:f}", "byte_start",
                     (json_int_t)sg->byte_start, "byte_end",
                     (json_int_t)sg->byte_end, "tokens", (int)sg->tokens,
                     "score", (double)sg->score));
  }
  json_object_set_new(o, "segments", a);
  if (r->stats) {
    const Ctxd__V1__SelectStats *t = r->stats;
    json_object_set_new(
        o, "stats",
        json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
                  "input_tokens", (json_int_t)t->input_tokens, "segments",
                  (json_int_t)t->segments, "model_tokens",
                  (json_int_t)t->model_tokens, "model_decodes",
                  (json_int_t)t->model_decodes, "model_outputs",
                  (json_int_t)t->model_outputs, "model_ms",
                  (json_int_t)t->model_ms, "windows", (json_int_t)t->windows,
                  "max_seq_tokens", (json_int_t)t->max_seq_tokens,
                  "elapsed_ms", (json_int_t)t->elapsed_ms));
  }
  return o;
}

static int cmd_select(ctl *g, int argc, char **argv) {
  static const opt_spec specs[] = {
      {"--doc", NULL, 1},      {"--file", NULL, 1},    {"--text", NULL, 1},
      {"--question", "-q", 1}, {"--budget", NULL, 1},  {"--method", "-m", 1},
      COLLECTION_OPT,          {"--verbose", "-v", 0}, {"--json", NULL, 0},
      {"--segment", NULL, 1},  {"--overlap", NULL, 1}, {"--tail", NULL, 1},
      {"--score", NULL, 1},    {"--batch", NULL, 1},   {"--window", NULL, 1},
      {"--top-k", NULL, 1},    {"--filter", NULL, 1},  {"--layer", NULL, 1},
      {"--no-question-weights", NULL, 0},              {"--cache", NULL, 1}};
  opt_iter it = {argc, 0, argv, 0};
  const char *arg, *doc = NULL, *file = NULL, *text = NULL;
  int verbose = 0, json = 0, k, rc, sources = 0;
  char *buf = NULL;
  Ctxd__V1__SelectContextRequest req = CTXD__V1__SELECT_CONTEXT_REQUEST__INIT;
  Ctxd__V1__SelectOptions o = CTXD__V1__SELECT_OPTIONS__INIT;
  req.options = &o;
  while ((k = opt_next(&it, specs, sizeof specs / sizeof specs[0], &arg)) !=
         -2) {
    uint32_t *u32 = NULL;
    switch (k) {
      case -3: return EXIT_USAGE;
      case -1: return usage_error("unexpected argument: %s", arg);
      case 0: doc = arg; sources++; break;
      case 1: file = arg; sources++; break;
      case 2: text = arg; sources++; break;
      case 3: req.question = (char *)arg; break;
      case 4: u32 = &req.token_budget; break;
      case 5: req.method = (char *)arg; break;
      case 6: req.collection = (char *)arg; break;
      case 7: verbose = 1; break;
      case 8: json = 1; break;
      case 9: u32 = &o.segment_tokens; break;
      case 10: u32 = &o.segment_overlap; break;
      case 11: u32 = &o.question_tail; break;
      case 12: o.xl3m_score = (char *)arg; break;
      case 13: u32 = &o.xl3m_batch; break;
      case 14: u32 = &o.window_tokens; break;
      case 15: u32 = &o.top_k; break;
      case 16: u32 = &o.filter_width; break;
      case 17: {
        char *end;
        errno = 0;
        long v = strtol(arg, &end, 10);
        if (errno || end == arg || *end || v < -100000 || v > 100000)
          return usage_error("--layer: not a layer number: %s", arg);
        o.layer = (int32_t)v;
        break;
      }
      case 18: o.no_question_weights = 1; break;
      case 19: u32 = &o.cache_max_tokens; break;
    }
    if (u32 && parse_u32(specs[k].name, arg, u32)) return EXIT_USAGE;
  }
  if (sources != 1)
    return usage_error("give exactly one of --doc ID, --file F, --text T");
  if (file) {
    size_t len;
    if (!(buf = read_path(file, &len))) {
      errorf("%s: %s", file, strerror(errno));
      return EXIT_FAILED;
    }
    if (strlen(buf) != len) {
      free(buf);
      errorf("%s: the file holds a NUL byte (not text)", file);
      return EXIT_FAILED;
    }
    req.text = buf;
  } else if (text) {
    req.text = (char *)text;
  } else {
    req.doc_id = (char *)doc;
  }
  if ((rc = ctl_connect(g))) {
    free(buf);
    return rc;
  }
  progress pg;
  Ctxd__V1__SelectContextEvent *ev = NULL;
  ctxclient_status st;
  progress_start(&pg);
  /* A selection over a long text takes as long as it takes: no deadline
   * unless --timeout. */
  rc = ctxclient_select_stream(g->client, &req,
                               g->timeout_given ? g->timeout_ms : 0,
                               select_progress, &pg, &ev, &st);
  progress_clear(&pg);
  free(buf);
  if (rc) return doc ? report_doc(doc, &st) : report(NULL, &st);
  const Ctxd__V1__SelectContextResponse *r = ev->result;
  if (json) {
    print_json(select_json(r), JSON_INDENT(2));
  } else {
    fputs(nz(r->context), stdout);
    if (r->context && *r->context && r->context[strlen(r->context) - 1] != '\n')
      fputc('\n', stdout);
  }
  if (verbose && !json) {
    const Ctxd__V1__SelectStats *t = r->stats;
    fprintf(stderr, "method %s%s%s, %u tokens in %zu segments, tokenizer %s\n",
            nz(r->method), r->model && *r->model ? ", model " : "",
            nz(r->model), r->tokens, r->n_segments, nz(r->tokenizer));
    for (size_t i = 0; i < r->n_segments; i++)
      fprintf(stderr, "  [%llu, %llu)  %u tokens  score %.4f\n",
              (unsigned long long)r->segments[i]->byte_start,
              (unsigned long long)r->segments[i]->byte_end,
              r->segments[i]->tokens, (double)r->segments[i]->score);
    if (t)
      fprintf(stderr,
              "input %llu tokens, %llu segments scored, model %llu tokens in "
              "%llu decodes (%llu ms), %llu windows, %llu ms in all\n",
              (unsigned long long)t->input_tokens,
              (unsigned long long)t->segments,
              (unsigned long long)t->model_tokens,
              (unsigned long long)t->model_decodes,
              (unsigned long long)t->model_ms, (unsigned long long)t->windows,
              (unsigned long long)t->elapsed_ms);
  }
  ctxd__v1__select_context_event__free_unpacked(ev, NULL);
  return EXIT_OK;
}

/* ---- reindex ------------------------------------------------------------*/

typedef struct reindex_state {
  progress pg;
  uint64_t done, total;
} reindex_state;

static int reindex_progress(const Ctxd__V1__RebuildProgress *p, void *ud) {
  reindex_state *r = ud;
  r->done = p->done;
  r->total = p->total;
  if (progress_begin(&r->pg, 0, p->done, p->done, p->total, "vectors")) {
    double el = progress_elapsed(&r->pg);
    fprintf(stderr, "  %.0f vectors/s", el > 0 ? (double)p->done / el : 0);
    progress_end(&r->pg);
  }
  return 0;
}

static int cmd_reindex(ctl *g, int argc, char **argv) {
  static const opt_spec specs[] = {COLLECTION_OPT, {"--quiet", "-q", 0}};
  opt_iter it = {argc, 0, argv, 0};
  const char *arg, *coll = "";
  int quiet = 0, k, rc;
  while ((k = opt_next(&it, specs, 2, &arg)) != -2) {
    if (k == -3) return EXIT_USAGE;
    if (k == -1) return usage_error("unexpected argument: %s", arg);
    if (k == 0) coll = arg;
    if (k == 1) quiet = 1;
  }
  if ((rc = ctl_connect(g))) return rc;
  reindex_state rs = {0};
  Ctxd__V1__RebuildProgress *last = NULL;
  ctxclient_status st;
  progress_start(&rs.pg);
  /* A rebuild takes as long as it takes: no deadline unless --timeout. */
  rc = ctxclient_rebuild_index(g->client, coll,
                               g->timeout_given ? g->timeout_ms : 0,
                               reindex_progress, &rs, &last, &st);
  progress_clear(&rs.pg);
  if (rc == 0 && !quiet)
    printf("rebuilt the index of collection %s: %llu vectors in %.2f s\n",
           *coll ? coll : "default",
           (unsigned long long)(last ? last->done : 0),
           progress_elapsed(&rs.pg));
  if (last) ctxd__v1__rebuild_progress__free_unpacked(last, NULL);
  return rc == 0 ? EXIT_OK : report(NULL, &st);
}

/* ---- reorder and jobs ---------------------------------------------------*/

static int parse_u64(const char *opt, const char *s, uint64_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end || s[0] == '-') {
    usage_error("%s: not a number: %s", opt, s);
    return -1;
  }
  *out = (uint64_t)v;
  return 0;
}

static int parse_float(const char *opt, const char *s, float *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || !(v >= 0) || v > 1e6) {
    usage_error("%s: want a number >= 0, got %s", opt, s);
    return -1;
  }
  *out = (float)v;
  return 0;
}

/* The daemon reads and writes the paths of a job: a relative one is made
 * absolute with ctxctl's working directory (right when both run on one
 * machine). *buf (malloc'd) holds it when a copy was needed. */
static const char *abs_path(const char *p, char **buf) {
  char cwd[4096];
  *buf = NULL;
  if (p[0] == '/' || !getcwd(cwd, sizeof cwd)) return p;
  size_t n = strlen(cwd) + strlen(p) + 2;
  if (!(*buf = malloc(n))) return p;
  snprintf(*buf, n, "%s/%s", cwd, p);
  return *buf;
}

/* A double that may be NaN (a figure the job omits) as JSON. */
static json_t *json_figure(double d) {
  return d == d ? json_real(d) : json_null();
}

static json_t *result_json(const Ctxd__V1__ReorderResult *r) {
  if (!r) return json_null();
  json_t *o = json_pack(
      "{s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "mode",
      json_text(nz(r->mode)), "documents", (json_int_t)r->documents,
      "ordered", (json_int_t)r->ordered, "duplicates",
      (json_int_t)r->duplicates, "jumps", (json_int_t)r->jumps, "edges",
      (json_int_t)r->edges, "windows", (json_int_t)r->windows, "tokens",
      (json_int_t)r->tokens, "dropped_tokens", (json_int_t)r->dropped_tokens);
  if (!o) return json_object();
  json_t *b = json_array();
  for (size_t i = 0; i < r->n_buckets; i++)
    json_array_append_new(b, json_pack("{s:i, s:I}", "tokens",
                                       (int)r->buckets[i]->tokens, "pieces",
                                       (json_int_t)r->buckets[i]->pieces));
  json_object_set_new(o, "buckets", b);
  json_object_set_new(o, "adjacent_similarity",
                      json_figure(r->adjacent_similarity));
  json_object_set_new(o, "random_adjacent_similarity",
                      json_figure(r->random_adjacent_similarity));
  json_object_set_new(o, "window_similarity",
                      json_figure(r->window_similarity));
  json_object_set_new(o, "random_window_similarity",
                      json_figure(r->random_window_similarity));
  json_object_set_new(o, "knn_method", json_text(nz(r->knn_method)));
  json_object_set_new(o, "k", json_integer(r->k));
  json_object_set_new(o, "nprobe", json_integer(r->nprobe));
  json_object_set_new(o, "knn_recall", json_figure(r->knn_recall));
  json_object_set_new(o, "resumed_vectors", json_boolean(r->resumed_vectors));
  json_object_set_new(o, "resumed_knn", json_boolean(r->resumed_knn));
  if (r->timings) {
    const Ctxd__V1__ReorderTimings *t = r->timings;
    json_object_set_new(
        o, "timings",
        json_pack("{s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "read", t->read,
                  "embed", t->embed, "knn", t->knn, "dedup", t->dedup,
                  "traverse", t->traverse, "pack", t->pack, "total",
                  t->total));
  }
  json_object_set_new(o, "output_dir", json_text(nz(r->output_dir)));
  json_t *f = json_array();
  for (size_t i = 0; i < r->n_files; i++)
    json_array_append_new(
        f, json_pack("{s:o, s:o, s:I, s:I}", "name",
                     json_text(nz(r->files[i]->name)), "path",
                     json_text(nz(r->files[i]->path)), "bytes",
                     (json_int_t)r->files[i]->bytes, "crc32",
                     (json_int_t)r->files[i]->crc32));
  json_object_set_new(o, "files", f);
  return o;
}

static json_t *job_json(const Ctxd__V1__Job *j) {
  const Ctxd__V1__ReorderRequest *q = j->request;
  json_t *o = json_pack("{s:o, s:o}", "job_id", json_text(nz(j->job_id)),
                        "state", json_text(nz(j->state)));
  if (!o) return json_object();
  if (q) {
    json_t *rq = json_pack(
        "{s:o, s:o, s:i, s:i, s:I, s:o, s:o, s:o, s:o}", "output_dir",
        json_text(nz(q->output_dir)), "mode", json_text(nz(q->mode)), "k",
        (int)q->k, "window_tokens", (int)q->window_tokens, "seed",
        (json_int_t)q->seed, "input_jsonl", json_text(nz(q->input_jsonl)),
        "collection", json_text(nz(q->collection)), "vectors",
        json_text(nz(q->vectors)), "embedder", json_text(nz(q->embedder)));
    json_object_set_new(o, "request", rq ? rq : json_object());
  }
  json_object_set_new(o, "phase", json_text(nz(j->phase)));
  json_object_set_new(o, "unit", json_text(nz(j->unit)));
  json_object_set_new(o, "done", json_integer((json_int_t)j->done));
  json_object_set_new(o, "total", json_integer((json_int_t)j->total));
  json_object_set_new(o, "rate", json_real(j->rate));
  json_object_set_new(o, "eta_seconds", json_real(j->eta_seconds));
  json_t *ph = json_array();
  for (size_t i = 0; i < j->n_phases; i++) {
    const Ctxd__V1__JobPhase *p = j->phases[i];
    json_array_append_new(
        ph, json_pack("{s:o, s:o, s:I, s:I, s:f}", "name", json_text(nz(p->name)),
                      "unit", json_text(nz(p->unit)), "done",
                      (json_int_t)p->done, "total", (json_int_t)p->total,
                      "seconds", p->seconds));
  }
  json_object_set_new(o, "phases", ph);
  json_object_set_new(o, "result", result_json(j->result));
  json_object_set_new(o, "error", json_text(nz(j->error)));
  json_object_set_new(o, "error_status", json_text(nz(j->error_status)));
  json_object_set_new(o, "created_ms", json_integer(j->created_ms));
  json_object_set_new(o, "started_ms", json_integer(j->started_ms));
  json_object_set_new(o, "finished_ms", json_integer(j->finished_ms));
  json_object_set_new(o, "updated_ms", json_integer(j->updated_ms));
  json_object_set_new(o, "resumes", json_integer(j->resumes));
  json_object_set_new(o, "interruptions", json_integer(j->interruptions));
  json_object_set_new(o, "cancel_requested",
                      json_boolean(j->cancel_requested));
  return o;
}

/* The figures of a done job, for people. */
static void print_result(const char *job_id, double seconds,
                         const Ctxd__V1__ReorderResult *r) {
  char hb[32];
  printf("job %s done in %.2f s\n", job_id, seconds);
  if (!r) return;
  printf("  documents   %llu: %llu ordered, %llu duplicates, %llu jumps, "
         "%llu kNN edges\n",
         (unsigned long long)r->documents, (unsigned long long)r->ordered,
         (unsigned long long)r->duplicates, (unsigned long long)r->jumps,
         (unsigned long long)r->edges);
  if (strcmp(nz(r->mode), "decompose") == 0) {
    printf("  pieces      %llu (%llu tokens; %llu dropped)\n",
           (unsigned long long)r->windows, (unsigned long long)r->tokens,
           (unsigned long long)r->dropped_tokens);
    for (size_t i = 0; i < r->n_buckets; i++)
      printf("  bucket %-6u %llu pieces\n", r->buckets[i]->tokens,
             (unsigned long long)r->buckets[i]->pieces);
  } else if (strcmp(nz(r->mode), "order") != 0) {
    printf("  windows     %llu (%llu tokens)\n", (unsigned long long)r->windows,
           (unsigned long long)r->tokens);
  }
  if (r->adjacent_similarity == r->adjacent_similarity)
    printf("  similarity  adjacent %.3f (random order %.3f)\n",
           r->adjacent_similarity, r->random_adjacent_similarity);
  if (r->window_similarity == r->window_similarity)
    printf("              in windows %.3f (random order %.3f)\n",
           r->window_similarity, r->random_window_similarity);
  printf("  kNN         %s, k %u, recall %.3f\n", nz(r->knn_method), r->k,
         (double)r->knn_recall);
  if (r->resumed_vectors || r->resumed_knn)
    printf("  resumed     from %s%s%s\n", r->resumed_vectors ? "vectors.ckpt" : "",
           r->resumed_vectors && r->resumed_knn ? " and " : "",
           r->resumed_knn ? "knn.ckpt" : "");
  printf("  output      %s\n", nz(r->output_dir));
  for (size_t i = 0; i < r->n_files; i++)
    printf("              %-18s %s\n", nz(r->files[i]->name),
           human_bytes(r->files[i]->bytes, hb, sizeof hb));
}

/* Following a job: a progress bar per phase on stderr (when it is a
 * terminal); a phase that ended stays on its own line. */
typedef struct job_view {
  progress pg;
  char phase[32];  /* the phase the current line shows */
  int detach;      /* stop after the first event */
  int stopped;     /* ... and did */
  char job_id[64];
} job_view;

static void job_view_line(job_view *v, const Ctxd__V1__ReorderEvent *ev,
                          int force) {
  const char *ph = nz(ev->phase);
  if (!*ph) {
    if (progress_begin(&v->pg, force, 0, 0, 0, "")) {
      fprintf(stderr, "\r\033[Kjob %s %s", nz(ev->job_id), nz(ev->state));
      progress_end(&v->pg);
    }
    return;
  }
  if (!progress_begin(&v->pg, force, ev->done, ev->done, ev->total,
                      nz(ev->unit)))
    return;
  fprintf(stderr, "  %-8s", ph);
  if (ev->phase_done || (ev->total && ev->done >= ev->total))
    fprintf(stderr, "  %.2f s", ev->rate > 0 ? (double)ev->done / ev->rate : 0);
  else {
    if (ev->rate > 0) fprintf(stderr, "  %.0f/s", ev->rate);
    if (ev->eta_seconds >= 0) fprintf(stderr, "  eta %.0f s", ev->eta_seconds);
  }
  progress_end(&v->pg);
}

static int job_view_event(const Ctxd__V1__ReorderEvent *ev, void *ud) {
  job_view *v = ud;
  snprintf(v->job_id, sizeof v->job_id, "%s", nz(ev->job_id));
  if (v->detach) {
    v->stopped = 1;
    return 1;
  }
  const char *ph = nz(ev->phase);
  if (strcmp(v->phase, ph) != 0) {
    if (v->pg.drawn && *v->phase) {
      fputc('\n', stderr); /* the last phase stays on screen */
      v->pg.drawn = 0;
    }
    snprintf(v->phase, sizeof v->phase, "%s", ph);
  }
  if (ev->phase_done) {
    job_view_line(v, ev, 1);
    if (v->pg.drawn) {
      fputc('\n', stderr);
      v->pg.drawn = 0;
    }
    v->phase[0] = '\0';
    return 0;
  }
  /* the final event repeats the last phase: nothing new to draw */
  if (strcmp(nz(ev->state), "running") == 0 || !*ph) job_view_line(v, ev, 0);
  return 0;
}

/* Downloading a job's files into a local directory: each file is written
 * to NAME.part and renamed once complete, its size and CRC-32 checked
 * against what the job recorded. */
typedef struct fetch_dl {
  const char *dir;
  const Ctxd__V1__ReorderResult *result; /* for the CRC-32s; may be NULL */
  FILE *f;
  char name[256];
  char tmp[4352], dst[4352];
  uLong crc;
  uint64_t got, total, files;
  char err[512];
} fetch_dl;

static int fetch_fail(fetch_dl *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int fetch_fail(fetch_dl *d, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(d->err, sizeof d->err, fmt, ap);
  va_end(ap);
  if (d->f) {
    fclose(d->f);
    d->f = NULL;
    unlink(d->tmp);
  }
  return 1;
}

static int fetch_chunk(const Ctxd__V1__ResultChunk *ch, void *ud) {
  fetch_dl *d = ud;
  const char *name = nz(ch->file);
  if (!d->f) {
    if (!*name || strchr(name, '/') || !strcmp(name, ".") ||
        !strcmp(name, "..") || strlen(name) >= sizeof d->name)
      return fetch_fail(d, "the server sent a file named \"%.100s\"", name);
    snprintf(d->name, sizeof d->name, "%s", name);
    snprintf(d->dst, sizeof d->dst, "%s/%s", d->dir, name);
    snprintf(d->tmp, sizeof d->tmp, "%s/%s.part", d->dir, name);
    if (!(d->f = fopen(d->tmp, "wb")))
      return fetch_fail(d, "%s: %s", d->tmp, strerror(errno));
    d->crc = crc32(0L, Z_NULL, 0);
    d->got = 0;
  } else if (strcmp(d->name, name) != 0) {
    return fetch_fail(d, "%s ended without its last piece", d->name);
  }
  if (ch->offset != d->got)
    return fetch_fail(d, "%s: a piece at byte %llu, expected %llu", d->name,
                      (unsigned long long)ch->offset,
                      (unsigned long long)d->got);
  if (ch->data.len && fwrite(ch->data.data, 1, ch->data.len, d->f) != ch->data.len)
    return fetch_fail(d, "%s: %s", d->tmp, strerror(errno));
  d->crc = crc32(d->crc, ch->data.data, (uInt)ch->data.len);
  d->got += ch->data.len;
  d->total += ch->data.len;
  if (!ch->last) return 0;
  if (fclose(d->f) != 0) {
    d->f = NULL;
    unlink(d->tmp);
    return fetch_fail(d, "%s: %s", d->tmp, strerror(errno));
  }
  d->f = NULL;
  if (d->got != ch->size)
    return fetch_fail(d, "%s: got %llu bytes of %llu", d->name,
                      (unsigned long long)d->got,
                      (unsigned long long)ch->size);
  for (size_t i = 0; d->result && i < d->result->n_files; i++)
    if (!strcmp(nz(d->result->files[i]->name), d->name) &&
        d->result->files[i]->crc32 != (uint32_t)d->crc) {
      unlink(d->tmp);
      return fetch_fail(d, "%s: CRC-32 %08lx differs from the job's %08x",
                        d->name, (unsigned long)d->crc,
                        d->result->files[i]->crc32);
    }
  if (rename(d->tmp, d->dst) != 0)
    return fetch_fail(d, "%s: %s", d->dst, strerror(errno));
  d->files++;
  return 0;
}

/* FetchResult of job `id` into `dir` (created if missing); `names`
 * (n of them) limits the files. An exit status. */
static int fetch_into(ctl *g, const char *id, const char *dir,
                      const Ctxd__V1__ReorderResult *result, char **names,
                      size_t n, int quiet) {
  Ctxd__V1__FetchResultRequest req = CTXD__V1__FETCH_RESULT_REQUEST__INIT;
  Ctxd__V1__Job *job = NULL;
  ctxclient_status st;
  fetch_dl d;
  char hb[32];
  memset(&d, 0, sizeof d);
  d.dir = dir;
  d.result = result;
  if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
    errorf("%s: %s", dir, strerror(errno));
    return EXIT_FAILED;
  }
  if (!result && ctxclient_get_job(g->client, id, g->timeout_ms, &job, &st) == 0)
    d.result = job->result;
  req.job_id = (char *)id;
  req.files = names;
  req.n_files = n;
  double t0 = now_s();
  int rc = ctxclient_fetch_result(g->client, &req,
                                  g->timeout_given ? g->timeout_ms : 0,
                                  fetch_chunk, &d, &st);
  if (d.f) {
    fclose(d.f);
    unlink(d.tmp);
  }
  if (job) ctxd__v1__job__free_unpacked(job, NULL);
  if (d.err[0]) {
    errorf("fetch: %s", d.err);
    return EXIT_FAILED;
  }
  if (rc) return report(NULL, &st);
  if (!quiet)
    printf("fetched %llu files (%s) into %s in %.2f s\n",
           (unsigned long long)d.files, human_bytes(d.total, hb, sizeof hb),
           dir, now_s() - t0);
  return EXIT_OK;
}

/* How a followed job ended (after ctxclient_reorder/watch_job): the summary
 * on stdout, or the error. */
static int job_followed(ctl *g, int rc, job_view *v,
                        Ctxd__V1__ReorderEvent *last,
                        const ctxclient_status *st, int json, int quiet,
                        const char *fetch) {
  progress_clear(&v->pg);
  if (v->stopped) { /* --detach */
    printf("%s\n", v->job_id);
    return EXIT_OK;
  }
  if (rc) {
    if (last && strcmp(nz(last->state), "running") != 0 &&
        strcmp(nz(last->state), "queued") != 0)
      errorf("job %s %s: %s (%s)", nz(last->job_id), nz(last->state),
             *nz(last->error) ? last->error : st->message,
             ctxclient_status_name(st->code));
    else
      report(NULL, st);
    return status_exit(st);
  }
  if (json) {
    json_t *o = json_pack("{s:o, s:o, s:f}", "job_id",
                          json_text(nz(last->job_id)), "state",
                          json_text(nz(last->state)), "seconds",
                          last->elapsed_seconds);
    json_object_set_new(o, "result", result_json(last->result));
    print_json(o, JSON_INDENT(2));
  } else if (!quiet) {
    print_result(nz(last->job_id), last->elapsed_seconds, last->result);
  }
  if (fetch)
    return fetch_into(g, last->job_id, fetch, last->result, NULL, 0,
                      quiet || json);
  return EXIT_OK;
}

static int cmd_reorder(ctl *g, int argc, char **argv) {
  static const opt_spec specs[] = {
      {"--input", NULL, 1},        COLLECTION_OPT,
      {"--out", NULL, 1},          {"--mode", NULL, 1},
      {"-k", NULL, 1},             {"--window", NULL, 1},
      {"--seed", NULL, 1},         {"--doc", NULL, 1},
      {"--meta", NULL, 1},         {"--vectors", NULL, 1},
      {"--embedder", NULL, 1},     {"--dedup", NULL, 1},
      {"--jaccard", NULL, 1},      {"--decompose-min", NULL, 1},
      {"--decompose-max", NULL, 1}, {"--separator", NULL, 1},
      {"--no-separator", NULL, 0}, {"--keep-checkpoints", NULL, 0},
      {"--fetch", NULL, 1},        {"--detach", NULL, 0},
      {"--json", NULL, 0},         {"--quiet", "-q", 0},
  };
  Ctxd__V1__ReorderRequest req = CTXD__V1__REORDER_REQUEST__INIT;
  size_t n = (size_t)argc + 1;
  opt_iter it = {argc, 0, argv, 0};
  const char *arg, *fetch = NULL, *input = NULL, *out = NULL;
  char *in_buf = NULL, *out_buf = NULL;
  int json = 0, quiet = 0, detach = 0, k, rc = EXIT_FAILED;
  Ctxd__V1__MetadataFilter *mf = calloc(n, sizeof *mf);
  req.doc_ids = calloc(n, sizeof *req.doc_ids);
  req.metadata = calloc(n, sizeof *req.metadata);
  req.window_tokens = 8192;
  if (!mf || !req.doc_ids || !req.metadata) {
    errorf("out of memory");
    goto done;
  }
  while ((k = opt_next(&it, specs, sizeof specs / sizeof specs[0], &arg)) !=
         -2) {
    if (k == -3) {
      rc = EXIT_USAGE;
      goto done;
    }
    int bad = 0;
    switch (k) {
      case -1:
        rc = usage_error("unexpected argument: %s", arg);
        goto done;
      case 0: input = arg; break;
      case 1: req.collection = (char *)arg; break;
      case 2: out = arg; break;
      case 3:
        if (strcmp(arg, "iclm") && strcmp(arg, "decompose") &&
            strcmp(arg, "order")) {
          rc = usage_error("--mode: want iclm, decompose or order, got %s",
                           arg);
          goto done;
        }
        req.mode = (char *)arg;
        break;
      case 4: bad = parse_u32("-k", arg, &req.k); break;
      case 5: bad = parse_u32("--window", arg, &req.window_tokens); break;
      case 6: bad = parse_u64("--seed", arg, &req.seed); break;
      case 7: req.doc_ids[req.n_doc_ids++] = (char *)arg; break;
      case 8: {
        if (check_kv("--meta", arg)) {
          rc = EXIT_USAGE;
          goto done;
        }
        Ctxd__V1__MetadataFilter init = CTXD__V1__METADATA_FILTER__INIT;
        Ctxd__V1__MetadataFilter *f = &mf[req.n_metadata];
        *f = init;
        char *eq = strchr(arg, '=');
        *eq = '\0';
        f->key = (char *)arg;
        f->value = eq + 1;
        req.metadata[req.n_metadata++] = f;
        break;
      }
      case 9: req.vectors = (char *)arg; break;
      case 10: req.embedder = (char *)arg; break;
      case 11: bad = parse_float("--dedup", arg, &req.dedup_cosine); break;
      case 12: bad = parse_float("--jaccard", arg, &req.dedup_jaccard); break;
      case 13:
        bad = parse_u32("--decompose-min", arg, &req.decompose_min_log2);
        break;
      case 14:
        bad = parse_u32("--decompose-max", arg, &req.decompose_max_log2);
        break;
      case 15: req.separator = (char *)arg; break;
      case 16: req.no_separator = 1; break;
      case 17: req.keep_checkpoints = 1; break;
      case 18: fetch = arg; break;
      case 19: detach = 1; break;
      case 20: json = 1; break;
      case 21: quiet = 1; break;
    }
    if (bad) {
      rc = EXIT_USAGE;
      goto done;
    }
  }
  if (!out) {
    rc = usage_error("missing --out DIR (the output directory on the server)");
    goto done;
  }
  if (input && (*nz(req.collection) || req.n_doc_ids || req.n_metadata)) {
    rc = usage_error("--input reads a file; -c, --doc and --meta select "
                     "stored documents instead");
    goto done;
  }
  if (detach && fetch) {
    rc = usage_error("--fetch needs the job to end: not with --detach");
    goto done;
  }
  req.output_dir = (char *)abs_path(out, &out_buf);
  if (input) req.input_jsonl = (char *)abs_path(input, &in_buf);
  if ((rc = ctl_connect(g))) goto done;
  job_view v;
  memset(&v, 0, sizeof v);
  v.detach = detach;
  progress_start(&v.pg);
  if (quiet || json) v.pg.on = 0;
  Ctxd__V1__ReorderEvent *last = NULL;
  ctxclient_status st;
  /* A job takes as long as it takes: no deadline unless --timeout. */
  int r = ctxclient_reorder(g->client, &req,
                            g->timeout_given ? g->timeout_ms : 0,
                            job_view_event, &v, &last, &st);
  rc = job_followed(g, r, &v, last, &st, json, quiet, fetch);
  if (last) ctxd__v1__reorder_event__free_unpacked(last, NULL);
done:
  free(mf);
  free(req.doc_ids);
  free(req.metadata);
  free(in_buf);
  free(out_buf);
  return rc;
}

/* "12.3 s ago"-style age of a Unix time in ms; "-" for 0. */
static const char *age(int64_t ms, char *buf, size_t len) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  if (!ms) return "-";
  double s = (double)(now - ms) / 1000;
  if (s < 0) s = 0;
  if (s < 120)
    snprintf(buf, len, "%.0fs ago", s);
  else if (s < 7200)
    snprintf(buf, len, "%.0fm ago", s / 60);
  else if (s < 172800)
    snprintf(buf, len, "%.0fh ago", s / 3600);
  else
    snprintf(buf, len, "%.0fd ago", s / 86400);
  return buf;
}

static int jobs_ls(ctl *g, int argc, char **argv) {
  static const opt_spec specs[] = {
      {"--state", NULL, 1}, {"--limit", NULL, 1}, {"--json", NULL, 0}};
  Ctxd__V1__ListJobsRequest req = CTXD__V1__LIST_JOBS_REQUEST__INIT;
  opt_iter it = {argc, 0, argv, 0};
  const char *arg;
  int json = 0, k, rc;
  while ((k = opt_next(&it, specs, 3, &arg)) != -2) {
    if (k == -3) return EXIT_USAGE;
    if (k == -1) return usage_error("unexpected argument: %s", arg);
    if (k == 0) req.state = (char *)arg;
    if (k == 1 && parse_u32("--limit", arg, &req.limit)) return EXIT_USAGE;
    if (k == 2) json = 1;
  }
  if ((rc = ctl_connect(g))) return rc;
  Ctxd__V1__ListJobsResponse *r;
  ctxclient_status st;
  if (ctxclient_list_jobs(g->client, &req, g->timeout_ms, &r, &st))
    return report(NULL, &st);
  if (!json)
    printf("%-16s  %-9s  %-9s  %-9s  %-23s  %-10s  %s\n", "JOB", "STATE",
           "MODE", "PHASE", "PROGRESS", "CREATED", "OUTPUT");
  for (size_t i = 0; i < r->n_jobs; i++) {
    const Ctxd__V1__Job *j = r->jobs[i];
    if (json) {
      print_json(job_json(j), JSON_COMPACT);
      continue;
    }
    char prog[64] = "-", ab[32];
    if (j->total)
      snprintf(prog, sizeof prog, "%llu/%llu %s",
               (unsigned long long)j->done, (unsigned long long)j->total,
               nz(j->unit));
    const char *mode = j->request && *nz(j->request->mode) ? j->request->mode
                                                           : "iclm";
    printf("%-16s  %-9s  %-9s  %-9s  %-23s  %-10s  %s\n", nz(j->job_id),
           nz(j->state), mode, *nz(j->phase) ? j->phase : "-", prog,
           age(j->created_ms, ab, sizeof ab),
           j->request ? nz(j->request->output_dir) : "");
  }
  if (!json && r->n_jobs == 0) printf("no jobs\n");
  ctxd__v1__list_jobs_response__free_unpacked(r, NULL);
  return EXIT_OK;
}

/* One job ID argument (and the options of `specs`, handled by `fn`). */
static int one_id(int argc, char **argv, const opt_spec *specs, size_t ns,
                  const char **id, int *flags) {
  opt_iter it = {argc, 0, argv, 0};
  const char *arg;
  int k;
  *id = NULL;
  while ((k = opt_next(&it, specs, ns, &arg)) != -2) {
    if (k == -3) return EXIT_USAGE;
    if (k == -1) {
      if (*id) return usage_error("one job ID at a time");
      *id = arg;
    } else {
      *flags |= 1 << k;
    }
  }
  if (!*id) return usage_error("missing the job ID ('ctxctl jobs' lists them)");
  return 0;
}

static int jobs_show(ctl *g, int argc, char **argv) {
  static const opt_spec specs[] = {{"--json", NULL, 0}};
  const char *id;
  int flags = 0, rc;
  if ((rc = one_id(argc, argv, specs, 1, &id, &flags)) || (rc = ctl_connect(g)))
    return rc;
  Ctxd__V1__Job *j;
  ctxclient_status st;
  char ab[32];
  if (ctxclient_get_job(g->client, id, g->timeout_ms, &j, &st))
    return report(NULL, &st);
  if (flags & 1) {
    print_json(job_json(j), JSON_INDENT(2));
    ctxd__v1__job__free_unpacked(j, NULL);
    return EXIT_OK;
  }
  const Ctxd__V1__ReorderRequest *q = j->request;
  printf("job         %s\n", nz(j->job_id));
  printf("state       %s%s\n", nz(j->state),
         j->cancel_requested && !strcmp(nz(j->state), "running")
             ? " (cancel requested)"
             : "");
  if (q) {
    printf("mode        %s\n", *nz(q->mode) ? q->mode : "iclm");
    if (*nz(q->input_jsonl))
      printf("input       %s\n", q->input_jsonl);
    else
      printf("input       collection %s%s\n",
             *nz(q->collection) ? q->collection : "default",
             q->n_doc_ids || q->n_metadata ? " (filtered)" : "");
    printf("output      %s\n", nz(q->output_dir));
  }
  printf("created     %s\n", age(j->created_ms, ab, sizeof ab));
  if (j->resumes)
    printf("resumed     %u times after a restart (%u unclean stops)\n",
           j->resumes, j->interruptions);
  for (size_t i = 0; i < j->n_phases; i++) {
    const Ctxd__V1__JobPhase *p = j->phases[i];
    printf("  %-9s %llu/%llu %s  %.2f s\n", nz(p->name),
           (unsigned long long)p->done, (unsigned long long)p->total,
           nz(p->unit), p->seconds);
  }
  if (*nz(j->error))
    printf("error       %s (%s)\n", j->error, nz(j->error_status));
  if (j->result)
    print_result(nz(j->job_id),
                 j->finished_ms > j->started_ms
                     ? (double)(j->finished_ms - j->started_ms) / 1000
                     : 0,
                 j->result);
  ctxd__v1__job__free_unpacked(j, NULL);
  return EXIT_OK;
}

static int jobs_cancel(ctl *g, int argc, char **argv) {
  const char *id;
  int flags = 0, rc;
  if ((rc = one_id(argc, argv, NULL, 0, &id, &flags)) || (rc = ctl_connect(g)))
    return rc;
  Ctxd__V1__Job *j;
  ctxclient_status st;
  if (ctxclient_cancel_job(g->client, id, g->timeout_ms, &j, &st))
    return report(NULL, &st);
  if (!strcmp(nz(j->state), "cancelled"))
    printf("job %s cancelled\n", nz(j->job_id));
  else
    printf("job %s: cancel requested; it is still %s and stops at its next "
           "check\n",
           nz(j->job_id), nz(j->state));
  ctxd__v1__job__free_unpacked(j, NULL);
  return EXIT_OK;
}

static int jobs_watch(ctl *g, int argc, char **argv) {
  static const opt_spec specs[] = {{"--json", NULL, 0}, {"--quiet", "-q", 0},
                                   {"--fetch", NULL, 1}};
  opt_iter it = {argc, 0, argv, 0};
  const char *arg, *id = NULL, *fetch = NULL;
  int json = 0, quiet = 0, k, rc;
  while ((k = opt_next(&it, specs, 3, &arg)) != -2) {
    if (k == -3) return EXIT_USAGE;
    if (k == -1) {
      if (id) return usage_error("one job ID at a time");
      id = arg;
    }
    if (k == 0) json = 1;
    if (k == 1) quiet = 1;
    if (k == 2) fetch = arg;
  }
  if (!id) return usage_error("missing the job ID ('ctxctl jobs' lists them)");
  if ((rc = ctl_connect(g))) return rc;
  job_view v;
  memset(&v, 0, sizeof v);
  progress_start(&v.pg);
  if (quiet || json) v.pg.on = 0;
  Ctxd__V1__ReorderEvent *last = NULL;
  ctxclient_status st;
  int r = ctxclient_watch_job(g->client, id,
                              g->timeout_given ? g->timeout_ms : 0,
                              job_view_event, &v, &last, &st);
  rc = job_followed(g, r, &v, last, &st, json, quiet, fetch);
  if (last) ctxd__v1__reorder_event__free_unpacked(last, NULL);
  return rc;
}

static int jobs_fetch(ctl *g, int argc, char **argv) {
  static const opt_spec specs[] = {{"--file", NULL, 1}, {"--quiet", "-q", 0}};
  opt_iter it = {argc, 0, argv, 0};
  const char *arg, *id = NULL, *dir = NULL;
  char **names = calloc((size_t)argc + 1, sizeof *names);
  size_t n = 0;
  int quiet = 0, k, rc = EXIT_USAGE;
  if (!names) {
    errorf("out of memory");
    return EXIT_FAILED;
  }
  while ((k = opt_next(&it, specs, 2, &arg)) != -2) {
    if (k == -3) goto out;
    if (k == -1 && !id) {
      id = arg;
    } else if (k == -1 && !dir) {
      dir = arg;
    } else if (k == -1) {
      rc = usage_error("unexpected argument: %s", arg);
      goto out;
    }
    if (k == 0) names[n++] = (char *)arg;
    if (k == 1) quiet = 1;
  }
  if (!id || !dir) {
    rc = usage_error("want a job ID and a local DIR");
    goto out;
  }
  if ((rc = ctl_connect(g))) goto out;
  rc = fetch_into(g, id, dir, NULL, names, n, quiet);
out:
  free(names);
  return rc;
}

static int cmd_jobs(ctl *g, int argc, char **argv) {
  static const command subs[] = {{"ls", jobs_ls},         {"show", jobs_show},
                                 {"cancel", jobs_cancel}, {"watch", jobs_watch},
                                 {"fetch", jobs_fetch}};
  if (argc < 1 || argv[0][0] == '-') return jobs_ls(g, argc, argv);
  for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
    if (!strcmp(argv[0], subs[i].name))
      return subs[i].fn(g, argc - 1, argv + 1);
  return usage_error(
      "unknown subcommand %s (want ls, show, cancel, watch or fetch)",
      argv[0]);
}

/* ---- search -------------------------------------------------------------*/

static void print_hits_json(const char *query,
                            const Ctxd__V1__SearchResponse *r, int with_text) {
  json_t *a = json_array();
  for (size_t i = 0; i < r->n_hits; i++) {
    const Ctxd__V1__SearchHit *h = r->hits[i];
    static const Ctxd__V1__Chunk none = CTXD__V1__CHUNK__INIT;
    const Ctxd__V1__Chunk *c = h->chunk ? h->chunk : &none;
    json_t *o = json_object();
    json_object_set_new(o, "rank", json_integer((json_int_t)i + 1));
    json_object_set_new(o, "score", json_real(h->score));
    json_object_set_new(o, "doc_id", json_text(nz(c->doc_id)));
    json_object_update_new(o, chunk_json(c, with_text));
    json_array_append_new(a, o);
  }
  json_t *o = json_object();
  json_object_set_new(o, "query", json_text(query));
  json_object_set_new(o, "hits", a);
  print_json(o, JSON_COMPACT);
}

static void print_hits(const Ctxd__V1__SearchResponse *r, int with_text) {
  printf("%4s  %10s  %7s  %10s  %10s  %s\n", "RANK", "SCORE", "ORDINAL",
         "START", "END", "DOCUMENT");
  for (size_t i = 0; i < r->n_hits; i++) {
    const Ctxd__V1__SearchHit *h = r->hits[i];
    const Ctxd__V1__Chunk *c = h->chunk;
    char sb[SHOW_ID_MAX];
    printf("%4zu  %10.4f  %7u  %10llu  %10llu  %s\n", i + 1, (double)h->score,
           c ? c->ordinal : 0, (unsigned long long)(c ? c->byte_start : 0),
           (unsigned long long)(c ? c->byte_end : 0),
           show_id(c ? nz(c->doc_id) : "", sb, sizeof sb));
    if (with_text) {
      char pv[128];
      preview(c ? nz(c->text) : "", 100, pv);
      printf("      %s\n", pv);
    }
  }
  if (r->n_hits == 0) printf("no hits\n");
}

/* search's command line. The arrays have room for every argument. */
typedef struct search_args {
  Ctxd__V1__SearchRequest base; /* every query's options */
  char **queries;
  size_t nq;
  Ctxd__V1__MetadataFilter *mf; /* base.metadata points at these */
  int json;
} search_args;

/* Parse into `a`. --meta KEY=VALUE is split in place (argv is ours). 0, or
 * EXIT_USAGE (reported). */
static int search_parse(search_args *a, int argc, char **argv) {
  static const opt_spec specs[] = {
      {"-k", NULL, 1},     {"--mode", NULL, 1},   COLLECTION_OPT,
      {"--doc", NULL, 1},  {"--meta", NULL, 1},   {"--text", NULL, 0},
      {"--ef", NULL, 1},   {"--nprobe", NULL, 1}, {"--json", NULL, 0},
  };
  static const char *const modes[] = {"vector", "lexical", "hybrid"};
  Ctxd__V1__SearchRequest *b = &a->base;
  opt_iter it = {argc, 0, argv, 0};
  const char *arg;
  int k;
  while ((k = opt_next(&it, specs, sizeof specs / sizeof specs[0], &arg)) !=
         -2) {
    if (k == -3) return EXIT_USAGE;
    if (k == -1) a->queries[a->nq++] = (char *)arg;
    if (k == 0 && parse_u32("-k", arg, &b->k)) return EXIT_USAGE;
    if (k == 0 && b->k == 0)
      return usage_error("-k: want at least 1 hit, got 0");
    if (k == 1) {
      size_t m = 0;
      while (m < 3 && strcmp(arg, modes[m])) m++;
      if (m == 3)
        return usage_error("--mode: want vector, lexical or hybrid, got %s",
                           arg);
      b->mode = (char *)arg;
    }
    if (k == 2) b->collection = (char *)arg;
    if (k == 3) b->doc_ids[b->n_doc_ids++] = (char *)arg;
    if (k == 4) {
      if (check_kv("--meta", arg)) return EXIT_USAGE;
      Ctxd__V1__MetadataFilter *f = &a->mf[b->n_metadata];
      char *eq = strchr(arg, '=');
      *eq = '\0';
      f->key = (char *)arg;
      f->value = eq + 1;
      b->metadata[b->n_metadata++] = f;
    }
    if (k == 5) b->with_text = 1;
    if (k == 6 && parse_u32("--ef", arg, &b->ef_search)) return EXIT_USAGE;
    if (k == 7 && parse_u32("--nprobe", arg, &b->nprobe)) return EXIT_USAGE;
    if (k == 8) a->json = 1;
  }
  if (a->nq == 0) return usage_error("missing the QUERY text");
  return 0;
}

/* Replace a "-" query by standard input's text. 0, or an exit status. */
static int search_stdin(search_args *a, char **text) {
  size_t len;
  for (size_t i = 0; i < a->nq; i++) {
    if (strcmp(a->queries[i], "-")) continue;
    if (*text) return usage_error("standard input (-) can be read only once");
    if (!(*text = read_stream(stdin, &len))) {
      errorf("stdin: %s", strerror(errno));
      return EXIT_FAILED;
    }
    if (strlen(*text) != len) {
      errorf("stdin: the query contains a NUL byte");
      return EXIT_FAILED;
    }
    a->queries[i] = *text;
  }
  return 0;
}

/* Several queries: one SearchBatch call, each with the same options. */
static int search_batch(ctl *g, const search_args *a) {
  Ctxd__V1__SearchBatchRequest req = CTXD__V1__SEARCH_BATCH_REQUEST__INIT;
  Ctxd__V1__SearchBatchResponse *r;
  ctxclient_status st;
  Ctxd__V1__SearchRequest *qs = calloc(a->nq, sizeof *qs);
  Ctxd__V1__SearchRequest **qp = calloc(a->nq, sizeof *qp);
  int rc = EXIT_OK;
  if (!qs || !qp) {
    errorf("out of memory");
    rc = EXIT_FAILED;
    goto out;
  }
  for (size_t i = 0; i < a->nq; i++) {
    qs[i] = a->base;
    qs[i].text = a->queries[i];
    qp[i] = &qs[i];
  }
  req.queries = qp;
  req.n_queries = a->nq;
  if (ctxclient_search_batch(g->client, &req, g->timeout_ms, &r, &st)) {
    rc = report(NULL, &st);
    goto out;
  }
  for (size_t i = 0; i < a->nq; i++) {
    if (a->json) {
      print_hits_json(a->queries[i], r->results[i], a->base.with_text);
      continue;
    }
    char pv[96];
    preview(a->queries[i], 80, pv);
    printf("%squery %zu: %s\n", i ? "\n" : "", i + 1, pv);
    print_hits(r->results[i], a->base.with_text);
  }
  ctxd__v1__search_batch_response__free_unpacked(r, NULL);
out:
  free(qs);
  free(qp);
  return rc;
}

static int cmd_search(ctl *g, int argc, char **argv) {
  search_args a = {.base = CTXD__V1__SEARCH_REQUEST__INIT};
  char *stdin_text = NULL;
  size_t n = (size_t)argc + 1;
  int rc = EXIT_FAILED;
  a.queries = calloc(n, sizeof *a.queries);
  a.mf = calloc(n, sizeof *a.mf);
  a.base.doc_ids = calloc(n, sizeof *a.base.doc_ids);
  a.base.metadata = calloc(n, sizeof *a.base.metadata);
  if (!a.queries || !a.mf || !a.base.doc_ids || !a.base.metadata) {
    errorf("out of memory");
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    Ctxd__V1__MetadataFilter init = CTXD__V1__METADATA_FILTER__INIT;
    a.mf[i] = init;
  }
  if ((rc = search_parse(&a, argc, argv)) || (rc = search_stdin(&a, &stdin_text)) ||
      (rc = ctl_connect(g)))
    goto out;
  if (a.nq > 1) {
    rc = search_batch(g, &a);
    goto out;
  }
  Ctxd__V1__SearchResponse *r;
  ctxclient_status st;
  a.base.text = a.queries[0];
  if (ctxclient_search(g->client, &a.base, g->timeout_ms, &r, &st)) {
    rc = report(NULL, &st);
    goto out;
  }
  if (a.json)
    print_hits_json(a.queries[0], r, a.base.with_text);
  else
    print_hits(r, a.base.with_text);
  ctxd__v1__search_response__free_unpacked(r, NULL);
out:
  free(a.queries);
  free(a.mf);
  free(a.base.doc_ids);
  free(a.base.metadata);
  free(stdin_text);
  return rc;
}

/* ---- main ---------------------------------------------------------------*/

static const command commands[] = {
    {"status", cmd_status}, {"stats", cmd_stats},   {"put", cmd_put},
    {"get", cmd_get},       {"rm", cmd_rm},         {"ls", cmd_ls},
    {"chunk", cmd_chunk},   {"verify", cmd_verify}, {"search", cmd_search},
    {"collection", cmd_collection}, {"reindex", cmd_reindex},
    {"reorder", cmd_reorder},       {"jobs", cmd_jobs},
    {"select", cmd_select},         {"model", cmd_model},
    {"rechunk", cmd_rechunk},       {"backup", cmd_backup},
    {"restore", cmd_restore},       {"compact", cmd_compact},
};

static int help(const char *name) {
  if (name && (!strcmp(name, "-h") || !strcmp(name, "--help"))) name = "help";
  if (!name) {
    fputs(usage_text, stdout);
    return EXIT_OK;
  }
  for (size_t i = 0; i < sizeof cmd_helps / sizeof cmd_helps[0]; i++)
    if (strcmp(cmd_helps[i].name, name) == 0) {
      fputs(cmd_helps[i].text, stdout);
      return EXIT_OK;
    }
  g_cmd = "help";
  return usage_error("unknown command %s", name);
}

/* The options every command takes, with the environment variable that
 * gives each a default. */
enum { G_ADDR, G_TIMEOUT, G_TLS, G_CA, G_CERT, G_KEY, G_SERVER_NAME, G_TOKEN,
       G_TOKEN_FILE, G_N };
static const struct {
  const char *name, *env;
  int has_arg;
} global_opts[G_N] = {
    [G_ADDR] = {"--addr", "CTXD_ADDR", 1},
    [G_TIMEOUT] = {"--timeout", NULL, 1},
    [G_TLS] = {"--tls", "CTXD_TLS", 0},
    [G_CA] = {"--ca", "CTXD_CA", 1},
    [G_CERT] = {"--cert", "CTXD_CERT", 1},
    [G_KEY] = {"--key", "CTXD_KEY", 1},
    [G_SERVER_NAME] = {"--server-name", "CTXD_SERVER_NAME", 1},
    [G_TOKEN] = {"--token", "CTXD_TOKEN", 1},
    [G_TOKEN_FILE] = {"--token-file", "CTXD_TOKEN_FILE", 1},
};

/* Which global option `a` ("--ca", "--ca=F") is, or -1. */
static int global_opt(const char *a) {
  for (int k = 0; k < G_N; k++) {
    size_t n = strlen(global_opts[k].name);
    if (!strncmp(a, global_opts[k].name, n) && (a[n] == '\0' || a[n] == '='))
      return k;
  }
  return -1;
}

/* The token of --token-file FILE: its one line, without the line end.
 * Returns a malloc'd string, or NULL after a usage error (reported). */
static char *read_token_file(const char *path) {
  FILE *f = fopen(path, "rb");
  char *buf = NULL;
  size_t len = 0;
  if (!f) {
    usage_error("--token-file %s: %s", path, strerror(errno));
    return NULL;
  }
  struct stat sb;
  if (fstat(fileno(f), &sb) == 0 && S_ISREG(sb.st_mode) &&
      sb.st_size > MAX_TOKEN_FILE) {
    usage_error("--token-file %s: %lld bytes; a token file holds one line",
                path, (long long)sb.st_size);
    goto out;
  }
  buf = read_stream(f, &len);
  if (!buf) {
    usage_error("--token-file %s: %s", path, strerror(errno));
    goto out;
  }
  while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' ||
                     buf[len - 1] == ' ' || buf[len - 1] == '\t'))
    buf[--len] = '\0';
  if (len == 0 || strcspn(buf, " \t\r\n") != len) {
    usage_error("--token-file %s: want one token on one line (no spaces)%s",
                path, len == 0 ? ", the file is empty" : "");
    free(buf);
    buf = NULL;
  }
out:
  fclose(f);
  return buf;
}

/* Fill g from the global options (vals[k]: the value of option k, or of
 * its environment variable, or NULL; tls_flag: --tls or $CTXD_TLS given).
 * 0, or EXIT_USAGE (reported). */
static int apply_globals(ctl *g, const char *vals[G_N], int tls_flag,
                         int token_opts) {
  if (vals[G_ADDR] && *vals[G_ADDR]) g->addr = vals[G_ADDR];
  g->tls_opts.ca_file = vals[G_CA] && *vals[G_CA] ? vals[G_CA] : NULL;
  g->tls_opts.cert_file = vals[G_CERT] && *vals[G_CERT] ? vals[G_CERT] : NULL;
  g->tls_opts.key_file = vals[G_KEY] && *vals[G_KEY] ? vals[G_KEY] : NULL;
  g->tls_opts.server_name =
      vals[G_SERVER_NAME] && *vals[G_SERVER_NAME] ? vals[G_SERVER_NAME] : NULL;
  g->tls = tls_flag || g->tls_opts.ca_file || g->tls_opts.cert_file ||
           g->tls_opts.key_file || g->tls_opts.server_name;
  if (g->tls_opts.key_file && !g->tls_opts.cert_file)
    return usage_error("--key needs --cert (the client certificate)");
  if (token_opts > 1)
    return usage_error("give --token or --token-file, not both");
  if (vals[G_TOKEN] && *vals[G_TOKEN])
    g->token = vals[G_TOKEN];
  else if (vals[G_TOKEN_FILE] && *vals[G_TOKEN_FILE])
    g->token_file = vals[G_TOKEN_FILE]; /* read when connecting */
  g_have_token = g->token || g->token_file;
  return 0;
}

int main(int argc, char **argv) {
  ctl g = {0};
  g.addr = DEFAULT_ADDR;
  g.timeout_ms = DEFAULT_TIMEOUT_MS;
  /* Environment defaults first; an option on the command line replaces its
   * variable. --token and --token-file replace both token variables. */
  const char *vals[G_N] = {0};
  for (int k = 0; k < G_N; k++)
    if (global_opts[k].env) vals[k] = getenv(global_opts[k].env);
  int tls_flag = vals[G_TLS] && *vals[G_TLS] && strcmp(vals[G_TLS], "0");
  int token_opts = 0;
  /* Take the global options out of argv wherever they are (before a
   * "--"), so that "ctxctl ls --addr X" works as well as "ctxctl --addr X
   * ls"; everything else keeps its order. */
  static char **rest; /* static: still reachable at exit, not a leak */
  rest = calloc((size_t)argc + 1, sizeof *rest);
  int nrest = 0, seen_cmd = 0, dashdash = 0;
  if (!rest) return EXIT_FAILED;
  rest[nrest++] = argv[0];
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *val = NULL;
    if (dashdash || a[0] != '-' || !strcmp(a, "-")) {
      if (!dashdash && a[0] != '-' && !seen_cmd) {
        seen_cmd = 1;
        g_cmd = a;
      }
      rest[nrest++] = argv[i];
      continue;
    }
    if (!strcmp(a, "--")) dashdash = 1;
    int k = dashdash ? -1 : global_opt(a);
    if (k < 0) {
      if (!seen_cmd && strcmp(a, "-h") && strcmp(a, "--help") &&
          strcmp(a, "--version") && !dashdash)
        return usage_error("unknown option %s", a);
      rest[nrest++] = argv[i];
      continue;
    }
    const char *eq = strchr(a, '=');
    if (!global_opts[k].has_arg) {
      if (eq) return usage_error("option %s takes no value", global_opts[k].name);
      tls_flag = 1;
      continue;
    }
    if (eq)
      val = eq + 1;
    else if (i + 1 < argc)
      val = argv[++i];
    else
      return usage_error("option %s needs a value", a);
    if (k == G_TOKEN || k == G_TOKEN_FILE) {
      token_opts++;
      vals[G_TOKEN] = vals[G_TOKEN_FILE] = NULL;
      vals[k] = val;
    } else if (k != G_TIMEOUT) {
      vals[k] = val;
    } else {
      char *end;
      double s = strtod(val, &end);
      if (end == val || *end || !(s > 0) || s > 1e7)
        return usage_error("--timeout: want a number of seconds > 0, got %s",
                           val);
      g.timeout_ms = (int64_t)(s * 1000 + 0.5);
      if (g.timeout_ms < 1) g.timeout_ms = 1;
      g.timeout_given = 1;
    }
  }
  g_cmd = NULL;
  argc = nrest;
  argv = rest;
  int grc = apply_globals(&g, vals, tls_flag, token_opts);
  if (grc) return grc;
  int i = 1;
  for (; i < argc && argv[i][0] == '-'; i++) {
    if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return help(NULL);
    if (!strcmp(argv[i], "--version")) {
      printf("ctxctl %s\n", CTXD_VERSION);
      return EXIT_OK;
    }
    return usage_error("unknown option %s", argv[i]);
  }
  if (i >= argc) {
    fputs(usage_text, stderr);
    return EXIT_USAGE;
  }
  const char *name = argv[i];
  if (!strcmp(name, "help")) {
    if (i + 2 < argc) {
      g_cmd = "help";
      return usage_error("help takes at most one COMMAND");
    }
    return help(i + 1 < argc ? argv[i + 1] : NULL);
  }
  for (size_t c = 0; c < sizeof commands / sizeof commands[0]; c++) {
    if (strcmp(commands[c].name, name) != 0) continue;
    g_cmd = name;
    for (int j = i + 1; j < argc; j++) {
      if (!strcmp(argv[j], "--")) break;
      if (!strcmp(argv[j], "-h") || !strcmp(argv[j], "--help"))
        return help(name);
    }
    int rc = commands[c].fn(&g, argc - i - 1, argv + i + 1);
    ctxclient_close(g.client);
    free(g.token_buf);
    if (fflush(stdout) != 0 && rc == EXIT_OK) rc = EXIT_FAILED;
    return rc;
  }
  return usage_error("unknown command %s", name);
}
