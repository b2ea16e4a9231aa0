/* vindex.cpp - ctxd's narrow binding of FAISS 1.7.3 (vindex.h), the only C++
 * in ctxd: the label map and deletion mask of Flat/HNSW indexes, an HNSW
 * search with a real per-call efSearch, and a checked file format around
 * FAISS's serialisation. No exception crosses the extern "C" boundary. */
#include "vindex.h"

#include <errno.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/IndexPQ.h>
#include <faiss/IndexScalarQuantizer.h>
#include <faiss/impl/DistanceComputer.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/impl/io.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <queue>
#include <string>
#include <typeinfo>
#include <utility>
#include <vector>

using idx_t = faiss::Index::idx_t;

namespace {

enum Kind : uint32_t { KIND_FLAT = 1, KIND_HNSW = 2, KIND_IVF = 3 };

/* FAISS's own threshold of training points per k-means centroid. */
const uint64_t kPointsPerCentroid = 39;

/* Flat searches of at least this many queries use BLAS in FAISS, but only
 * without an IDSelector (faiss::distance_compute_blas_threshold). */
const size_t kBlasQueries = 20;

/* Most masked vectors a Flat batch search over-fetches past, to stay on the
 * BLAS path, and the most result entries (queries x k) it buffers for it. */
const uint64_t kOverfetchMaskedMax = 4096;
const size_t kOverfetchEntriesMax = size_t(1) << 22;

std::atomic<int> g_max_threads{0};

/* vindex_thread_limit(): this thread's own cap, 0 for none. */
thread_local unsigned tl_max_threads = 0;

}  // namespace

struct vindex {
  faiss::Index *index = nullptr;
  Kind kind = KIND_FLAT;
  faiss::IndexFlat *flat = nullptr;
  faiss::IndexHNSW *hnsw = nullptr;
  faiss::IndexIVF *ivf = nullptr;
  faiss::IndexHNSW *qhnsw = nullptr; /* IVF's HNSW coarse quantizer */
  bool ivf_flat = false;             /* IVF storing raw vectors */
  uint32_t dim = 0;
  vindex_metric metric = VINDEX_L2;
  char spec[VINDEX_SPEC_MAX] = {0};
  /* Flat/HNSW: position -> label, and one bit per position set when the
   * vector was removed. Both always hold index->ntotal entries. */
  std::vector<int64_t> labels;
  std::vector<uint64_t> mask;
  uint64_t masked = 0;
  mutable pthread_rwlock_t lock;

  vindex() {
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    /* Writers first: the daemon searches all the time, and a waiting add
     * must not starve behind an endless stream of overlapping readers. */
    pthread_rwlockattr_setkind_np(&a,
                                  PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&lock, &a);
    pthread_rwlockattr_destroy(&a);
  }
  ~vindex() {
    delete index;
    pthread_rwlock_destroy(&lock);
  }
  vindex(const vindex &) = delete;
  vindex &operator=(const vindex &) = delete;
};

namespace {

/* Scoped hold of the handle's rwlock, shared or exclusive. */
template <int (*acquire)(pthread_rwlock_t *)>
struct Locked {
  const vindex *v;
  explicit Locked(const vindex *x) : v(x) {
    acquire(&v->lock);
  }
  ~Locked() {
    pthread_rwlock_unlock(&v->lock);
  }
};
using ReadLock = Locked<pthread_rwlock_rdlock>;
using WriteLock = Locked<pthread_rwlock_wrlock>;

/* libgomp keeps the thread count per calling thread: set it for the
 * duration of one call and put the caller's value back. */
struct OmpThreads {
  int saved;
  explicit OmpThreads(int n) : saved(omp_get_max_threads()) {
    omp_set_num_threads(n);
  }
  ~OmpThreads() {
    omp_set_num_threads(saved);
  }
};

int thread_limit() {
#ifdef __SANITIZE_THREAD__
  /* libgomp is not instrumented: ThreadSanitizer cannot see its barriers
   * and reports every OpenMP team's hand-over as a race. One thread keeps
   * the TSan builds meaningful (no team is ever started). */
  return 1;
#else
  int lim = g_max_threads.load(std::memory_order_relaxed);
  if (lim <= 0) lim = omp_get_num_procs();
  if (tl_max_threads > 0 && int(tl_max_threads) < lim) lim = int(tl_max_threads);
  return lim;
#endif
}

int search_threads(unsigned want, uint64_t nq) {
  if (nq <= 1 || want <= 1) return 1;
  return std::min<int>(int(std::min<unsigned>(want, 1u << 16)), thread_limit());
}

/* FaissException::what() is "Error in <function> at <file>:<line>: <msg>";
 * the message alone reads better in a one-line error. */
const char *faiss_msg(const char *w) {
  if (strncmp(w, "Error in ", 9) != 0) return w;
  const char *at = strstr(w, " at ");
  const char *colon = at ? strstr(at, ": ") : nullptr;
  return colon ? colon + 2 : w;
}

/* Called inside a catch block: the current exception as a ctxd error. */
int exc_to_err(ctxd_error *e, int code, const char *what) noexcept {
  try {
    throw;
  } catch (const std::bad_alloc &) {
    return ctxd_seterr(e, CTXD_ENOMEM, "%s: out of memory", what);
  } catch (const faiss::FaissException &x) {
    return ctxd_seterr(e, code, "%s: faiss: %s", what, faiss_msg(x.what()));
  } catch (const std::exception &x) {
    return ctxd_seterr(e, code, "%s: %s", what, x.what());
  } catch (...) {
    return ctxd_seterr(e, CTXD_EINTERNAL, "%s: unknown exception", what);
  }
}

bool is_masked(const vindex *v, idx_t pos) {
  return (v->mask[size_t(pos) >> 6] >> (size_t(pos) & 63)) & 1;
}

void set_masked(vindex *v, size_t pos) {
  v->mask[pos >> 6] |= uint64_t(1) << (pos & 63);
  v->masked++;
}

size_t mask_words(size_t n) {
  return (n + 63) / 64;
}

/* The filter FAISS's searches (and ours) ask about each candidate: Flat and
 * HNSW hand it positions (masked ones are refused, the others translated to
 * labels for `allow`), IVF hands it labels. */
struct Filter : faiss::IDSelector {
  const vindex *v;
  bool positions;
  int (*allow)(int64_t, void *);
  void *arg;
  Filter(const vindex *x, bool pos, const vindex_params *p)
      : v(x),
        positions(pos),
        allow(p ? p->allow : nullptr),
        arg(p ? p->allow_arg : nullptr) {}
  bool is_member(idx_t id) const override {
    if (!positions) return allow(id, arg) != 0;
    if (is_masked(v, id)) return false;
    return !allow || allow(v->labels[size_t(id)], arg) != 0;
  }
  bool needed() const {
    return allow || (positions && v->masked > 0);
  }
};

/* ---- Distance kernels --------------------------------------------------- */

/* Debian builds FAISS for the x86-64 baseline (SSE2), where 1.7.3's
 * fvec_L2sqr and fvec_inner_product are scalar loops (fvec_L2sqr_ref: 96% of
 * a Flat search's time). These are compiled twice, for x86-64-v3 (AVX2,
 * FMA) and the baseline, and the dynamic loader picks one for the CPU (GCC
 * target_clones). Exact search of many queries still goes to BLAS. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__SANITIZE_THREAD__)
/* (Not under ThreadSanitizer: it instruments the ifunc resolver, which the
 * dynamic loader runs before the TSan runtime exists.) */
#define VX_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define VX_CLONES
#endif

typedef float v8f __attribute__((vector_size(32)));

/* Sum acc(lanes of a, lanes of b) over d floats, 8 lanes at a time (two
 * accumulators; the tail zero-padded, which adds 0 to both sums below).
 * Inlined into each clone of its callers, so it is compiled for each. */
template <class Acc>
__attribute__((always_inline)) inline float vx_reduce(const float *a,
                                                      const float *b, size_t d,
                                                      Acc acc) {
  v8f s0 = {0, 0, 0, 0, 0, 0, 0, 0}, s1 = s0, xa, xb, ya, yb;
  size_t i = 0;
  for (; i + 16 <= d; i += 16) {
    memcpy(&xa, a + i, sizeof xa);
    memcpy(&xb, b + i, sizeof xb);
    memcpy(&ya, a + i + 8, sizeof ya);
    memcpy(&yb, b + i + 8, sizeof yb);
    acc(s0, xa, xb);
    acc(s1, ya, yb);
  }
  for (; i < d; i += 8) {
    size_t m = std::min<size_t>(8, d - i);
    xa = xb = v8f{0, 0, 0, 0, 0, 0, 0, 0};
    memcpy(&xa, a + i, m * sizeof(float));
    memcpy(&xb, b + i, m * sizeof(float));
    acc(s0, xa, xb);
  }
  s0 += s1;
  return ((s0[0] + s0[4]) + (s0[1] + s0[5])) +
         ((s0[2] + s0[6]) + (s0[3] + s0[7]));
}

VX_CLONES float vx_l2sqr(const float *a, const float *b, size_t d) {
  return vx_reduce(a, b, d, [](v8f &s, const v8f &x, const v8f &y) {
    v8f t = x - y;
    s += t * t;
  });
}

VX_CLONES float vx_dot(const float *a, const float *b, size_t d) {
  return vx_reduce(a, b, d,
                   [](v8f &s, const v8f &x, const v8f &y) { s += x * y; });
}

/* "Smaller is better" distance of q to the vector at x: squared L2, or the
 * negated inner product, so one max-heap serves both metrics. */
inline float vx_dist(bool ip, const float *q, const float *x, size_t d) {
  return ip ? -vx_dot(q, x, d) : vx_l2sqr(q, x, d);
}

/* Exact top-k of one query over n rows (row j has label ids ? ids[j] : j,
 * rows `sel` refuses skipped) merged into the max-heap D/L of size k. */
void vx_scan(bool ip, const float *q, const float *rows, size_t n, size_t d,
             const idx_t *ids, const faiss::IDSelector *sel, size_t k,
             float *D, idx_t *L) {
  for (size_t j = 0; j < n; j++) {
    idx_t id = ids ? ids[j] : idx_t(j);
    if (sel && !sel->is_member(id)) continue;
    float dj = vx_dist(ip, q, rows + j * d, d);
    if (dj < D[0]) faiss::maxheap_replace_top(k, D, L, dj, id);
  }
}

/* Sort a max-heap best first and give scores the index's convention. */
void vx_finish(bool ip, size_t k, float *D, idx_t *L) {
  faiss::maxheap_reorder(k, D, L);
  if (ip)
    for (size_t i = 0; i < k; i++) D[i] = -D[i];
}

struct FastFlatDis : faiss::FlatCodesDistanceComputer {
  size_t d;
  bool ip;
  const float *q = nullptr;
  FastFlatDis(const faiss::IndexFlat &f)
      : FlatCodesDistanceComputer(f.codes.data(), f.code_size),
        d(size_t(f.d)),
        ip(f.metric_type == faiss::METRIC_INNER_PRODUCT) {}
  void set_query(const float *x) override {
    q = x;
  }
  /* The index's convention (IP: the similarity), as FAISS's own. */
  float distance_to_code(const uint8_t *code) override {
    const float *x = reinterpret_cast<const float *>(code);
    return ip ? vx_dot(q, x, d) : vx_l2sqr(q, x, d);
  }
  float symmetric_dis(idx_t i, idx_t j) override {
    const float *a = reinterpret_cast<const float *>(codes + i * code_size);
    const float *b = reinterpret_cast<const float *>(codes + j * code_size);
    return ip ? vx_dot(a, b, d) : vx_l2sqr(a, b, d);
  }
};

/* An IndexFlat whose distances are the kernels above: for the Flat kind,
 * HNSW's storage (graph building and search) and flat coarse quantizers.
 * Searches of fewer than kBlasQueries queries, or with a selector, scan
 * with the kernels; larger ones go to FAISS (BLAS). It serialises as a
 * plain IndexFlat, and is put back in place after reading. */
struct FastFlat : faiss::IndexFlat {
  FastFlat(idx_t dim, faiss::MetricType m) : faiss::IndexFlat(dim, m) {}
  faiss::FlatCodesDistanceComputer *get_FlatCodesDistanceComputer()
      const override {
    return new FastFlatDis(*this);
  }
  void search(idx_t n, const float *x, idx_t k, float *D, idx_t *L,
              const faiss::SearchParameters *p) const override {
    const faiss::IDSelector *sel = p ? p->sel : nullptr;
    if (n >= idx_t(kBlasQueries) && !sel) {
      faiss::IndexFlat::search(n, x, k, D, L, nullptr);
      return;
    }
    const bool ip = metric_type == faiss::METRIC_INNER_PRODUCT;
    const float *xb = get_xb();
#pragma omp parallel for if (n > 1)
    for (idx_t i = 0; i < n; i++) {
      float *Di = D + i * k;
      idx_t *Li = L + i * k;
      faiss::maxheap_heapify(size_t(k), Di, Li);
      vx_scan(ip, x + i * d, xb, size_t(ntotal), size_t(d), nullptr, sel,
              size_t(k), Di, Li);
      vx_finish(ip, size_t(k), Di, Li);
    }
  }
};

/* A plain (owned) IndexFlat replaced by a FastFlat holding its vectors;
 * any other index is returned as it is. */
faiss::Index *to_fast_flat(faiss::Index *ix) {
  const std::type_info &t = typeid(*ix);
  if (t != typeid(faiss::IndexFlat) && t != typeid(faiss::IndexFlatL2) &&
      t != typeid(faiss::IndexFlatIP))
    return ix;
  auto *f = static_cast<faiss::IndexFlat *>(ix);
  auto *ff = new FastFlat(f->d, f->metric_type);
  ff->codes.swap(f->codes);
  ff->ntotal = f->ntotal;
  ff->is_trained = f->is_trained;
  ff->metric_arg = f->metric_arg;
  delete f;
  return ff;
}

/* ---- HNSW search ------------------------------------------------------- */

/* Visited marks for one search, reused across searches of the same thread
 * (a fresh table per query would cost a memset of ntotal bytes). */
struct Visited {
  std::vector<uint8_t> mark;
  uint8_t no = 0;
  void start(size_t n) {
    if (mark.size() < n) mark.resize(n, 0);
    if (++no == 0) {
      std::fill(mark.begin(), mark.end(), 0);
      no = 1;
    }
  }
  bool test_and_set(int i) {
    if (mark[size_t(i)] == no) return true;
    mark[size_t(i)] = no;
    return false;
  }
};

thread_local Visited tl_visited;

using Cand = std::pair<float, int>; /* (distance, position) */

/* One query over FAISS's HNSW graph: greedy descent through the upper
 * levels, then a best-first walk of level 0 keeping the ef best vectors
 * `sel` allows (all when sel is NULL). The walk stops once the nearest
 * unexpanded candidate is farther than the worst of a full result set, so
 * filtered-out vectors make it go further instead of returning fewer
 * results. Distances are "smaller is better" inside (IP negated) and
 * returned in the index's convention. Results: k entries, -1 padded. */
template <class Dist>
void hnsw_walk(const faiss::IndexHNSW &h, Dist &&dist, size_t k, size_t ef,
               const faiss::IDSelector *sel, float *D, idx_t *L) {
  const faiss::HNSW &g = h.hnsw;
  const bool ip = h.metric_type == faiss::METRIC_INNER_PRODUCT;
  for (size_t i = 0; i < k; i++) {
    D[i] = ip ? -INFINITY : INFINITY;
    L[i] = -1;
  }
  if (g.entry_point < 0 || h.ntotal == 0) return;
  const int *nb = g.neighbors.data();
  const size_t *off = g.offsets.data();
  const int *cum = g.cum_nneighbor_per_level.data();

  int ep = g.entry_point;
  float dep = dist(ep);
  for (int level = g.max_level; level >= 1; level--) {
    for (bool moved = true; moved;) {
      moved = false;
      size_t b = off[ep] + size_t(cum[level]);
      size_t end = off[ep] + size_t(cum[level + 1]);
      for (size_t j = b; j < end; j++) {
        int u = nb[j];
        if (u < 0) break;
        float du = dist(u);
        if (du < dep) {
          ep = u;
          dep = du;
          moved = true;
        }
      }
    }
  }

  ef = std::max(ef, k);
  Visited &vis = tl_visited;
  vis.start(size_t(h.ntotal));
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> cand;
  std::priority_queue<Cand> top; /* worst on top */
  float bound = INFINITY;        /* worst of `top` once it holds ef */
  auto offer = [&](float d, int u) {
    if (sel && !sel->is_member(u)) return;
    top.emplace(d, u);
    if (top.size() > ef) top.pop();
    if (top.size() >= ef) bound = top.top().first;
  };
  vis.test_and_set(ep);
  cand.emplace(dep, ep);
  offer(dep, ep);
  while (!cand.empty()) {
    Cand c = cand.top();
    if (c.first > bound) break;
    cand.pop();
    size_t b = off[c.second] + size_t(cum[0]);
    size_t end = off[c.second] + size_t(cum[1]);
    for (size_t j = b; j < end; j++) {
      int u = nb[j];
      if (u < 0) break;
      if (vis.test_and_set(u)) continue;
      float du = dist(u);
      if (du < bound) {
        cand.emplace(du, u);
        offer(du, u);
      }
    }
  }
  while (top.size() > k) top.pop();
  for (size_t i = top.size(); i-- > 0;) {
    D[i] = ip ? -top.top().first : top.top().first;
    L[i] = top.top().second;
    top.pop();
  }
}

/* One query: the kernels straight on a FastFlat storage (no virtual call a
 * distance), FAISS's distance computer on a compressed one (dc). */
void hnsw_search_one(const faiss::IndexHNSW &h, faiss::DistanceComputer *dc,
                     const float *q, size_t k, size_t ef,
                     const faiss::IDSelector *sel, float *D, idx_t *L) {
  const bool ip = h.metric_type == faiss::METRIC_INNER_PRODUCT;
  if (!dc) {
    const float *xb = static_cast<const FastFlat *>(h.storage)->get_xb();
    size_t d = size_t(h.d);
    hnsw_walk(h, [&](int i) { return vx_dist(ip, q, xb + size_t(i) * d, d); },
              k, ef, sel, D, L);
    return;
  }
  dc->set_query(q);
  hnsw_walk(h, [&](int i) {
        float x = (*dc)(i);
        return ip ? -x : x;
      }, k, ef, sel, D, L);
}

/* FAISS's distance computer for a storage that is not a FastFlat. */
std::unique_ptr<faiss::DistanceComputer> storage_dc(const faiss::IndexHNSW &h) {
  if (dynamic_cast<const FastFlat *>(h.storage)) return nullptr;
  return std::unique_ptr<faiss::DistanceComputer>(
      h.storage->get_distance_computer());
}

/* Run fn(i0, i1) over [0, n) in chunks of `chunk` on nt OpenMP threads (or
 * directly on this thread when nt <= 1), and rethrow the first exception a
 * chunk threw once all are done: none may escape an OpenMP region. */
void omp_chunks(size_t n, size_t chunk, int nt,
                const std::function<void(size_t, size_t)> &fn) {
  if (nt <= 1 || n <= chunk) {
    fn(0, n);
    return;
  }
  std::exception_ptr err;
  std::mutex mu;
  long nchunks = long((n + chunk - 1) / chunk);
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
  for (long c = 0; c < nchunks; c++) {
    size_t i0 = size_t(c) * chunk, i1 = std::min(n, i0 + chunk);
    try {
      fn(i0, i1);
    } catch (...) {
      std::lock_guard<std::mutex> g(mu);
      if (!err) err = std::current_exception();
    }
  }
  if (err) std::rethrow_exception(err);
}

void hnsw_search(const faiss::IndexHNSW &h, const float *q, size_t nq,
                 size_t k, size_t ef, const faiss::IDSelector *sel, int nt,
                 float *D, idx_t *L) {
  size_t d = size_t(h.d);
  omp_chunks(nq, 16, nt, [&](size_t i0, size_t i1) {
    std::unique_ptr<faiss::DistanceComputer> dc = storage_dc(h);
    for (size_t i = i0; i < i1; i++)
      hnsw_search_one(h, dc.get(), q + i * d, k, ef, sel, D + i * k,
                      L + i * k);
  });
}

size_t ef_of(const faiss::IndexHNSW *h, const vindex_params *p) {
  return p && p->ef_search ? p->ef_search : size_t(h->hnsw.efSearch);
}

/* ---- Search over every kind -------------------------------------------- */

void positions_to_labels(const vindex *v, idx_t *L, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (L[i] >= 0) L[i] = v->labels[size_t(L[i])];
}

/* A Flat search of many queries with masked vectors and no `allow`: search
 * k + masked without a selector (FAISS then uses BLAS), and keep the first
 * k unmasked results of each row. Exact, as at most `masked` results of a
 * row can be masked. Returns false when it does not apply. */
bool flat_overfetch(const vindex *v, const float *q, size_t nq, size_t k,
                    const vindex_params *p, float *D, idx_t *L) {
  if ((p && p->allow) || v->masked == 0 || nq < kBlasQueries ||
      v->masked > kOverfetchMaskedMax)
    return false;
  size_t kk = std::min(k + size_t(v->masked), size_t(v->flat->ntotal));
  if (kk == 0 || nq * kk > kOverfetchEntriesMax) return false;
  std::vector<float> d(nq * kk);
  std::vector<idx_t> l(nq * kk);
  v->flat->search(idx_t(nq), q, idx_t(kk), d.data(), l.data());
  for (size_t i = 0; i < nq; i++) {
    size_t o = 0;
    for (size_t j = 0; j < kk && o < k; j++) {
      idx_t pos = l[i * kk + j];
      if (pos < 0 || is_masked(v, pos)) continue;
      D[i * k + o] = d[i * kk + j];
      L[i * k + o] = pos;
      o++;
    }
    for (; o < k; o++) L[i * k + o] = -1;
  }
  return true;
}

void ivf_search(const vindex *v, const float *q, size_t nq, size_t k,
                const vindex_params *p, const faiss::IDSelector *sel, int nt,
                float *D, idx_t *L) {
  const faiss::IndexIVF &iv = *v->ivf;
  size_t nprobe = p && p->nprobe ? p->nprobe : iv.nprobe;
  nprobe = std::max<size_t>(1, std::min(nprobe, iv.nlist));
  faiss::SearchParametersIVF sp;
  sp.nprobe = nprobe;
  sp.sel = const_cast<faiss::IDSelector *>(sel);
  size_t d = size_t(iv.d);
  /* One slice per thread, as IndexIVF::search does (the coarse quantizer
   * searches a slice at once); the global statistics it would update from
   * every thread are replaced by a local object. */
  size_t chunk = nt > 1 ? (nq + size_t(nt) - 1) / size_t(nt) : nq;
  omp_chunks(nq, chunk, nt, [&](size_t i0, size_t i1) {
    size_t n = i1 - i0;
    std::vector<idx_t> assign(n * nprobe);
    std::vector<float> coarse(n * nprobe);
    const float *x = q + i0 * d;
    if (v->qhnsw) {
      std::unique_ptr<faiss::DistanceComputer> dc = storage_dc(*v->qhnsw);
      size_t ef = ef_of(v->qhnsw, p);
      for (size_t i = 0; i < n; i++)
        hnsw_search_one(*v->qhnsw, dc.get(), x + i * d, nprobe, ef, nullptr,
                        coarse.data() + i * nprobe, assign.data() + i * nprobe);
    } else {
      iv.quantizer->search(idx_t(n), x, idx_t(nprobe), coarse.data(),
                           assign.data());
    }
    if (v->ivf_flat) { /* FAISS's IVFFlat scanner uses the scalar kernel */
      const bool ip = iv.metric_type == faiss::METRIC_INNER_PRODUCT;
      for (size_t i = 0; i < n; i++) {
        float *Di = D + (i0 + i) * k;
        idx_t *Li = L + (i0 + i) * k;
        faiss::maxheap_heapify(k, Di, Li);
        for (size_t j = 0; j < nprobe; j++) {
          idx_t list = assign[i * nprobe + j];
          if (list < 0) continue;
          size_t len = iv.invlists->list_size(size_t(list));
          if (len == 0) continue;
          faiss::InvertedLists::ScopedCodes codes(iv.invlists, size_t(list));
          faiss::InvertedLists::ScopedIds ids(iv.invlists, size_t(list));
          vx_scan(ip, x + i * d, reinterpret_cast<const float *>(codes.get()),
                  len, d, ids.get(), sel, k, Di, Li);
        }
        vx_finish(ip, k, Di, Li);
      }
      return;
    }
    faiss::IndexIVFStats stats;
    iv.search_preassigned(idx_t(n), x, idx_t(k), assign.data(), coarse.data(),
                          D + i0 * k, L + i0 * k, false, &sp, &stats);
  });
}

/* nq queries, k results each, as labels (-1 for none). Lock held. */
void search_core(const vindex *v, const float *q, size_t nq, size_t k,
                 const vindex_params *p, int nt, float *D, idx_t *L) {
  Filter f(v, v->kind != KIND_IVF, p);
  const faiss::IDSelector *sel = f.needed() ? &f : nullptr;
  switch (v->kind) {
    case KIND_FLAT:
      if (!(sel && flat_overfetch(v, q, nq, k, p, D, L))) {
        faiss::SearchParameters sp;
        sp.sel = const_cast<faiss::IDSelector *>(sel);
        v->flat->search(idx_t(nq), q, idx_t(k), D, L, sel ? &sp : nullptr);
      }
      positions_to_labels(v, L, nq * k);
      break;
    case KIND_HNSW:
      hnsw_search(*v->hnsw, q, nq, k, ef_of(v->hnsw, p), sel, nt, D, L);
      positions_to_labels(v, L, nq * k);
      break;
    case KIND_IVF:
      ivf_search(v, q, nq, k, p, sel, nt, D, L);
      break;
  }
}

/* Missing results get label -1 and the worst score, whatever FAISS left. */
void finish_missing(const vindex *v, float *D, int64_t *L, size_t n) {
  float worst = v->metric == VINDEX_IP ? -INFINITY : INFINITY;
  for (size_t i = 0; i < n; i++)
    if (L[i] < 0) {
      L[i] = -1;
      D[i] = worst;
    }
}

int check_search(const vindex *v, const float *q, uint64_t nq, uint32_t k,
                 const vindex_params *p, const float *scores,
                 const int64_t *labels, const char *what, ctxd_error *e) {
  if (!v) return ctxd_seterr(e, CTXD_EINVAL, "%s: no index", what);
  if (k == 0 || k > VINDEX_K_MAX)
    return ctxd_seterr(e, CTXD_EINVAL, "%s: k = %u is out of range 1..%d",
                       what, k, VINDEX_K_MAX);
  if (p && p->ef_search > VINDEX_EF_MAX)
    return ctxd_seterr(e, CTXD_EINVAL, "%s: ef_search = %u exceeds %d", what,
                       p->ef_search, VINDEX_EF_MAX);
  if (nq > (uint64_t(1) << 40) / (uint64_t(k) + 1) ||
      nq > (uint64_t(1) << 40) / v->dim)
    return ctxd_seterr(e, CTXD_EINVAL, "%s: %llu queries is too many", what,
                       (unsigned long long)nq);
  if (nq > 0 && (!q || !scores || !labels))
    return ctxd_seterr(e, CTXD_EINVAL, "%s: NULL buffer", what);
  return 0;
}

/* ---- Kinds, training sizes, memory ------------------------------------- */

bool storage_is_flat(const faiss::IndexHNSW *h) {
  return dynamic_cast<const faiss::IndexFlat *>(h->storage) != nullptr;
}

/* Training vectors a kind needs (at least / to train well). */
void train_sizes(const vindex *v, uint64_t *least, uint64_t *well) {
  uint64_t lo = 0, hi = 0;
  auto pq_of = [](const faiss::Index *ix) -> const faiss::ProductQuantizer * {
    if (auto a = dynamic_cast<const faiss::IndexIVFPQ *>(ix)) return &a->pq;
    if (auto b = dynamic_cast<const faiss::IndexPQ *>(ix)) return &b->pq;
    return nullptr;
  };
  const faiss::ProductQuantizer *pq = nullptr;
  if (v->ivf) {
    lo = v->ivf->nlist;
    hi = kPointsPerCentroid * v->ivf->nlist;
    pq = pq_of(v->ivf);
  } else if (v->hnsw && !storage_is_flat(v->hnsw)) {
    lo = hi = 1;
    pq = pq_of(v->hnsw->storage);
  }
  if (pq) {
    lo = std::max<uint64_t>(lo, pq->ksub);
    hi = std::max<uint64_t>(hi, kPointsPerCentroid * pq->ksub);
  }
  *least = lo;
  *well = hi;
}

/* FAISS prints "WARNING clustering N points to K centroids" to stderr when
 * given fewer than 39 per centroid; the daemon logs in its own format, and
 * vindex_info's min_train lets the caller say it. The factory also turns on
 * IVFPQ's polysemous training, a simulated annealing that took over a
 * minute for a 16-list toy index and serves only Hamming pre-filtering,
 * which ctxd never enables (polysemous_ht = 0). */
void tune_training(faiss::Index *ix) {
  if (auto iv = dynamic_cast<faiss::IndexIVF *>(ix)) {
    iv->cp.min_points_per_centroid = 1;
    if (auto q = dynamic_cast<faiss::IndexIVFPQ *>(iv)) {
      q->pq.cp.min_points_per_centroid = 1;
      q->do_polysemous_training = false;
    }
  }
  if (auto h = dynamic_cast<faiss::IndexHNSW *>(ix))
    if (auto q = dynamic_cast<faiss::IndexPQ *>(h->storage))
      q->pq.cp.min_points_per_centroid = 1;
}

uint64_t index_bytes(const faiss::Index *ix) {
  if (!ix) return 0;
  if (auto pq = dynamic_cast<const faiss::IndexPQ *>(ix))
    return pq->codes.size() + pq->pq.centroids.size() * sizeof(float);
  if (auto fc = dynamic_cast<const faiss::IndexFlatCodes *>(ix))
    return fc->codes.size();
  if (auto h = dynamic_cast<const faiss::IndexHNSW *>(ix))
    return h->hnsw.neighbors.size() * sizeof(int) +
           h->hnsw.offsets.size() * sizeof(size_t) +
           h->hnsw.levels.size() * sizeof(int) + index_bytes(h->storage);
  if (auto iv = dynamic_cast<const faiss::IndexIVF *>(ix)) {
    uint64_t b = index_bytes(iv->quantizer) +
                 uint64_t(iv->ntotal) * (iv->code_size + sizeof(idx_t));
    if (auto q = dynamic_cast<const faiss::IndexIVFPQ *>(iv))
      b += (q->pq.centroids.size() + q->precomputed_table.size()) *
           sizeof(float);
    return b;
  }
  return 0;
}

/* The exact types ctxd searches: their scanners honour an IDSelector and
 * they can be searched the way search_core does. Subclasses with other
 * search paths (HNSW2Level, IVFPQR, fast-scan, additive quantizers that
 * refuse selectors, dedup IVF that cannot remove) are left out. */
bool is_hnsw_type(const faiss::Index *ix) {
  const std::type_info &t = typeid(*ix);
  return t == typeid(faiss::IndexHNSWFlat) || t == typeid(faiss::IndexHNSWSQ) ||
         t == typeid(faiss::IndexHNSWPQ);
}

/* Sort a FAISS index into the kinds ctxd searches; fills v's views. */
int classify(vindex *v, faiss::Index *ix, const char *what, ctxd_error *e) {
  v->flat = nullptr;
  v->hnsw = v->qhnsw = nullptr;
  v->ivf = nullptr;
  v->ivf_flat = false;
  const std::type_info &t = typeid(*ix);
  if (t == typeid(faiss::IndexFlat) || t == typeid(faiss::IndexFlatL2) ||
      t == typeid(faiss::IndexFlatIP) || t == typeid(FastFlat)) {
    v->kind = KIND_FLAT;
    v->flat = static_cast<faiss::IndexFlat *>(ix);
  } else if (is_hnsw_type(ix) &&
             static_cast<faiss::IndexHNSW *>(ix)->storage) {
    v->kind = KIND_HNSW;
    v->hnsw = static_cast<faiss::IndexHNSW *>(ix);
  } else if (t == typeid(faiss::IndexIVFFlat) ||
             t == typeid(faiss::IndexIVFScalarQuantizer) ||
             t == typeid(faiss::IndexIVFPQ)) {
    v->kind = KIND_IVF;
    v->ivf = static_cast<faiss::IndexIVF *>(ix);
    v->ivf_flat = t == typeid(faiss::IndexIVFFlat);
    faiss::Index *q = v->ivf->quantizer;
    if (q && is_hnsw_type(q) && static_cast<faiss::IndexHNSW *>(q)->storage)
      v->qhnsw = static_cast<faiss::IndexHNSW *>(q);
  } else {
    return ctxd_seterr(e, CTXD_EINVAL,
                       "%s: unsupported index kind (ctxd takes Flat, "
                       "HNSW<M>[_SQ<t>|_PQ<m>] and IVF<n>[_HNSW<M>],"
                       "Flat|SQ<t>|PQ<m>[x<bits>])",
                       what);
  }
  return 0;
}

/* Put FastFlats where FAISS made plain IndexFlats it owns: the Flat kind
 * itself, HNSW storage, flat coarse quantizers (see FastFlat). */
void use_fast_flats(vindex *v) {
  if (v->kind == KIND_FLAT) {
    v->index = to_fast_flat(v->index);
    v->flat = static_cast<faiss::IndexFlat *>(v->index);
  }
  if (v->hnsw && v->hnsw->own_fields)
    v->hnsw->storage = to_fast_flat(v->hnsw->storage);
  if (v->ivf && v->ivf->own_fields)
    v->ivf->quantizer = to_fast_flat(v->ivf->quantizer);
  if (v->qhnsw && v->qhnsw->own_fields)
    v->qhnsw->storage = to_fast_flat(v->qhnsw->storage);
}

/* Refuse what the factory would take but ctxd must not: IDMap (labels are
 * ours), odd characters, numbers that would allocate without bound at
 * creation (an IVF's lists and a PQ's centroid table exist from the start),
 * and a PQ that does not divide dim (FAISS 1.7.3's factory leaks the coarse
 * quantizer when the IVF constructor throws for that). */
int check_spec(const char *spec, uint32_t dim, ctxd_error *e) {
  if (!spec) return ctxd_seterr(e, CTXD_EINVAL, "vindex_create: no spec");
  size_t n = strnlen(spec, VINDEX_SPEC_MAX);
  if (n == 0 || n >= VINDEX_SPEC_MAX)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "vindex_create: spec length must be 1..%d bytes",
                       VINDEX_SPEC_MAX - 1);
  for (size_t i = 0; i < n; i++)
    if (spec[i] <= ' ' || spec[i] > '~')
      return ctxd_seterr(e, CTXD_EINVAL,
                         "vindex_create: spec has a space or non-ASCII byte at "
                         "offset %zu",
                         i);
  if (strcasestr(spec, "IDMap"))
    return ctxd_seterr(e, CTXD_EINVAL,
                       "vindex_create: spec '%s': IDMap is not accepted "
                       "(vindex keeps the labels itself)",
                       spec);
  auto after = [spec](size_t i, const char *w) {
    size_t l = strlen(w);
    return i >= l && strncmp(spec + i - l, w, l) == 0;
  };
  size_t prev_start = 0, prev_end = 0; /* the previous number */
  for (size_t i = 0; i < n;) {
    if (spec[i] < '0' || spec[i] > '9') {
      i++;
      continue;
    }
    size_t j = i;
    uint64_t val = 0;
    while (j < n && spec[j] >= '0' && spec[j] <= '9') {
      if (val <= UINT32_MAX) val = val * 10 + uint64_t(spec[j] - '0');
      j++;
    }
    const char *what = "a number";
    uint64_t lo = 0, hi = VINDEX_NLIST_MAX;
    if (after(i, "HNSW")) {
      what = "HNSW M";
      lo = 2;
      hi = VINDEX_HNSW_M_MAX;
    } else if (after(i, "IVF")) {
      what = "the IVF list count";
      lo = 1;
    } else if (after(i, "PQ")) {
      what = "the PQ sub-quantizer count";
      lo = 1;
      hi = dim;
      if (val >= 1 && val <= dim && dim % val != 0)
        return ctxd_seterr(e, CTXD_EINVAL,
                           "vindex_create: spec '%s': PQ%llu does not divide "
                           "dim %u",
                           spec, (unsigned long long)val, dim);
    } else if (after(i, "x") && prev_end + 1 == i && after(prev_start, "PQ")) {
      what = "the PQ bits per code";
      lo = 1;
      hi = 12;
    }
    if (val < lo || val > hi)
      return ctxd_seterr(e, CTXD_EINVAL,
                         "vindex_create: spec '%s': %s at offset %zu must be "
                         "%llu..%llu",
                         spec, what, i, (unsigned long long)lo,
                         (unsigned long long)hi);
    prev_start = i;
    prev_end = i = j;
  }
  return 0;
}

/* Label ranges [lo, hi) merged into sorted disjoint ones, asked by binary
 * search: one pass over an IVF's lists or the label map removes them all. */
struct RangeSet : faiss::IDSelector {
  std::vector<std::pair<int64_t, int64_t>> r;
  RangeSet(const int64_t *lo, const int64_t *hi, size_t n) {
    r.reserve(n);
    for (size_t i = 0; i < n; i++)
      if (lo[i] < hi[i]) r.emplace_back(lo[i], hi[i]);
    std::sort(r.begin(), r.end());
    size_t o = 0;
    for (size_t i = 0; i < r.size(); i++) {
      if (o > 0 && r[i].first <= r[o - 1].second)
        r[o - 1].second = std::max(r[o - 1].second, r[i].second);
      else
        r[o++] = r[i];
    }
    r.resize(o);
  }
  bool empty() const {
    return r.empty();
  }
  bool is_member(idx_t id) const override {
    auto it = std::upper_bound(
        r.begin(), r.end(), id,
        [](idx_t x, const std::pair<int64_t, int64_t> &p) { return x < p.first; });
    return it != r.begin() && id < (it - 1)->second;
  }
};

/* ---- File format ------------------------------------------------------- */

/* Layout (host byte order):
 *   header: "CTXDVIX\0", u32 version, u32 kind, u32 metric, u32 dim,
 *           u32 spec_len, spec bytes, u64 body_len, u64 checksum
 *   body:   FAISS's write_index() bytes, then "CTXDVLM\0", u64 nlabels,
 *           int64 labels[nlabels], u64 nwords, u64 mask[nwords], u64 masked
 * The checksum covers the header fields before it and the body. Reading
 * verifies it over the whole body before FAISS parses a byte: FAISS 1.7.3's
 * readers trust sizes they read (a damaged one can ask for terabytes) and
 * leak what they built when they throw, so they only ever see data that is
 * exactly what vindex_write produced. Writing serialises twice (once to
 * measure and sum, once to the file) so the header can go first. */

const char kMagic[8] = {'C', 'T', 'X', 'D', 'V', 'I', 'X', '\0'};
const char kTailMagic[8] = {'C', 'T', 'X', 'D', 'V', 'L', 'M', '\0'};
const uint32_t kVersion = 1;
const uint64_t kBodyMax = uint64_t(1) << 48;

/* A streaming 64-bit checksum (multiply-xor over 8-byte words; not
 * cryptographic: it catches truncation and damage). */
struct Checksum {
  uint64_t h = 0x243F6A8885A308D3ull, buf = 0, total = 0;
  unsigned nb = 0;
  void word(uint64_t w) {
    h ^= w;
    h *= 0x9E3779B97F4A7C15ull;
    h ^= h >> 29;
  }
  void feed(const void *p, size_t n) {
    const uint8_t *s = static_cast<const uint8_t *>(p);
    total += n;
    while (n > 0 && nb > 0) {
      buf |= uint64_t(*s++) << (8 * nb);
      n--;
      if (++nb == 8) {
        word(buf);
        buf = 0;
        nb = 0;
      }
    }
    for (; n >= 8; n -= 8, s += 8) {
      uint64_t w;
      memcpy(&w, s, 8);
      word(w);
    }
    for (; n > 0; n--) buf |= uint64_t(*s++) << (8 * nb++);
  }
  uint64_t final_value() const {
    Checksum c = *this;
    if (c.nb) c.word(c.buf);
    c.word(c.total);
    return c.h;
  }
};

/* The header as written: fixed fields, spec, body length. */
struct Header {
  uint32_t version, kind, metric, dim, spec_len;
  char spec[VINDEX_SPEC_MAX];
  uint64_t body_len;
  uint64_t checksum(uint64_t body_sum) const {
    Checksum c;
    c.feed(kMagic, sizeof kMagic);
    c.feed(&version, 5 * sizeof(uint32_t));
    c.feed(spec, spec_len);
    c.feed(&body_len, sizeof body_len);
    c.feed(&body_sum, sizeof body_sum);
    return c.final_value();
  }
};

/* Sink of the measuring pass: counts and sums, writes nothing. */
struct SumWriter : faiss::IOWriter {
  Checksum sum;
  SumWriter() {
    name = "vindex (measure)";
  }
  size_t operator()(const void *p, size_t size, size_t n) override {
    sum.feed(p, size * n);
    return n;
  }
};

struct FileWriter : faiss::IOWriter {
  FILE *f;
  explicit FileWriter(FILE *file) : f(file) {
    name = "vindex stream";
  }
  size_t operator()(const void *p, size_t size, size_t n) override {
    return size && n ? fwrite(p, size, n, f) : n;
  }
};

void put_bytes(faiss::IOWriter &w, const void *p, size_t n) {
  if (n && w(p, 1, n) != n) throw std::runtime_error("short write");
}

template <class T>
void put(faiss::IOWriter &w, const T &x) {
  put_bytes(w, &x, sizeof x);
}

void write_body(const vindex *v, faiss::IOWriter &w) {
  faiss::write_index(v->index, &w);
  put_bytes(w, kTailMagic, sizeof kTailMagic);
  put(w, uint64_t(v->labels.size()));
  put_bytes(w, v->labels.data(), v->labels.size() * sizeof(int64_t));
  put(w, uint64_t(v->mask.size()));
  put_bytes(w, v->mask.data(), v->mask.size() * sizeof(uint64_t));
  put(w, v->masked);
}

/* Reads at most `left` bytes (the body), summing them when asked (a stream
 * that cannot seek is summed while FAISS parses it). */
struct BodyReader : faiss::IOReader {
  FILE *f;
  uint64_t left;
  bool summing;
  Checksum sum;
  BodyReader(FILE *file, uint64_t len, bool sum_it)
      : f(file), left(len), summing(sum_it) {
    name = "vindex stream";
  }
  size_t operator()(void *p, size_t size, size_t n) override {
    if (size == 0 || n == 0) return n;
    n = size_t(std::min<uint64_t>(n, left / size));
    size_t got = fread(p, size, n, f);
    left -= got * size;
    if (summing) sum.feed(p, got * size);
    return got;
  }
  bool get_bytes(void *p, size_t n) {
    return n == 0 || (*this)(p, 1, n) == n;
  }
  template <class T>
  bool get(T *x) {
    return get_bytes(x, sizeof *x);
  }
};

/* Why reading `what` stopped: an error, the end of the stream, or the end
 * of the body as the header gave its length. */
int short_read(FILE *f, ctxd_error *e, const char *what) {
  if (ferror(f))
    return ctxd_seterr(e, CTXD_EIO, "vindex_read: read error in %s: %s", what,
                       strerror(errno));
  if (feof(f))
    return ctxd_seterr(e, CTXD_EIO,
                       "vindex_read: truncated: the stream ends in %s", what);
  return ctxd_seterr(e, CTXD_EIO,
                     "vindex_read: corrupt: %s runs past the body length",
                     what);
}

int read_header(FILE *f, Header *h, uint64_t *sum, ctxd_error *e) {
  char magic[8];
  if (fread(magic, 1, sizeof magic, f) != sizeof magic)
    return short_read(f, e, "the header");
  if (memcmp(magic, kMagic, sizeof magic) != 0)
    return ctxd_seterr(e, CTXD_EIO,
                       "vindex_read: not a ctxd vector index (bad magic)");
  if (fread(&h->version, sizeof(uint32_t), 5, f) != 5)
    return short_read(f, e, "the header");
  if (h->version != kVersion)
    return ctxd_seterr(e, CTXD_EIO,
                       "vindex_read: format version %u (this build reads %u)",
                       h->version, kVersion);
  if (h->kind < KIND_FLAT || h->kind > KIND_IVF || h->metric > VINDEX_L2 ||
      h->dim == 0 || h->dim > VINDEX_DIM_MAX || h->spec_len == 0 ||
      h->spec_len >= VINDEX_SPEC_MAX)
    return ctxd_seterr(e, CTXD_EIO, "vindex_read: corrupt header");
  memset(h->spec, 0, sizeof h->spec);
  if (fread(h->spec, 1, h->spec_len, f) != h->spec_len ||
      fread(&h->body_len, sizeof h->body_len, 1, f) != 1 ||
      fread(sum, sizeof *sum, 1, f) != 1)
    return short_read(f, e, "the header");
  if (h->body_len > kBodyMax)
    return ctxd_seterr(e, CTXD_EIO, "vindex_read: corrupt header (body length)");
  return 0;
}

/* Sum the body without parsing it. */
int sum_body(FILE *f, uint64_t len, uint64_t *out, ctxd_error *e) {
  std::vector<char> buf(size_t(1) << 20);
  Checksum c;
  while (len > 0) {
    size_t want = size_t(std::min<uint64_t>(len, buf.size()));
    size_t got = fread(buf.data(), 1, want, f);
    c.feed(buf.data(), got);
    len -= got;
    if (got < want) return short_read(f, e, "the index body");
  }
  *out = c.final_value();
  return 0;
}

/* The graph of an HNSW read from a file must not send a search outside its
 * arrays (the checksum proves the bytes are ours; this is cheap insurance
 * against a writer that was not). */
bool hnsw_sane(const faiss::IndexHNSW *h) {
  const faiss::HNSW &g = h->hnsw;
  size_t n = size_t(h->ntotal);
  if (!h->storage || h->storage->ntotal != h->ntotal) return false;
  if (g.levels.size() != n || g.offsets.size() != n + 1) return false;
  if (g.offsets[n] != g.neighbors.size()) return false;
  if (g.entry_point < -1 || g.entry_point >= int64_t(n)) return false;
  if ((g.entry_point < 0) != (n == 0)) return false;
  if (g.max_level < -1 ||
      size_t(g.max_level + 2) > g.cum_nneighbor_per_level.size())
    return false;
  for (size_t i = 0; i < n; i++)
    if (g.offsets[i] > g.offsets[i + 1]) return false;
  for (int u : g.neighbors)
    if (u < -1 || u >= int64_t(n)) return false;
  return true;
}

/* Parse a body into v (whose dim, metric and spec come from the header). */
int read_body(vindex *v, const Header &h, BodyReader &r, ctxd_error *e) {
  FILE *f = r.f;
  try {
    v->index = faiss::read_index(&r, 0);
  } catch (const std::bad_alloc &) {
    throw;
  } catch (const std::exception &x) {
    if (ferror(f) || feof(f) || r.left == 0)
      return short_read(f, e, "FAISS's index data");
    const faiss::FaissException *fx =
        dynamic_cast<const faiss::FaissException *>(&x);
    return ctxd_seterr(e, CTXD_EIO, "vindex_read: corrupt FAISS index data: %s",
                       fx ? faiss_msg(x.what()) : x.what());
  }
  if (classify(v, v->index, "vindex_read", e)) {
    if (e) e->code = CTXD_EIO;
    return CTXD_EIO;
  }
  if (uint32_t(v->kind) != h.kind || uint32_t(v->index->d) != h.dim ||
      (v->index->metric_type == faiss::METRIC_INNER_PRODUCT) !=
          (h.metric == VINDEX_IP) ||
      (v->hnsw && !hnsw_sane(v->hnsw)) || (v->qhnsw && !hnsw_sane(v->qhnsw)))
    return ctxd_seterr(e, CTXD_EIO,
                       "vindex_read: FAISS's index data does not match the "
                       "header (kind, dim, metric or graph)");
  tune_training(v->index);
  use_fast_flats(v);
  char tail[8];
  uint64_t nlabels, nwords, masked;
  if (!r.get_bytes(tail, sizeof tail)) return short_read(f, e, "the label map");
  if (memcmp(tail, kTailMagic, sizeof tail) != 0)
    return ctxd_seterr(e, CTXD_EIO, "vindex_read: corrupt label map (bad magic)");
  uint64_t want = v->kind == KIND_IVF ? 0 : uint64_t(v->index->ntotal);
  if (!r.get(&nlabels)) return short_read(f, e, "the label map");
  if (nlabels != want)
    return ctxd_seterr(e, CTXD_EIO,
                       "vindex_read: corrupt label map (%llu labels for %llu "
                       "vectors)",
                       (unsigned long long)nlabels, (unsigned long long)want);
  v->labels.resize(nlabels);
  if (!r.get_bytes(v->labels.data(), nlabels * sizeof(int64_t)) ||
      !r.get(&nwords))
    return short_read(f, e, "the label map");
  if (nwords != mask_words(nlabels))
    return ctxd_seterr(e, CTXD_EIO, "vindex_read: corrupt mask size");
  v->mask.resize(nwords);
  if (!r.get_bytes(v->mask.data(), nwords * sizeof(uint64_t)) ||
      !r.get(&masked))
    return short_read(f, e, "the mask");
  if (r.left != 0)
    return ctxd_seterr(e, CTXD_EIO,
                       "vindex_read: corrupt: %llu bytes of the body left over",
                       (unsigned long long)r.left);
  uint64_t count = 0;
  bool bad_label = false;
  for (size_t pos = 0; pos < nlabels; pos++) {
    bool m = is_masked(v, idx_t(pos));
    count += m;
    bad_label |= v->labels[pos] < (m ? -1 : 0);
  }
  if (count != masked || bad_label ||
      (nlabels % 64 && (v->mask[nwords - 1] >> (nlabels % 64))))
    return ctxd_seterr(e, CTXD_EIO, "vindex_read: corrupt label map or mask");
  v->masked = masked;
  return 0;
}

}  // namespace

/* ---- The C API --------------------------------------------------------- */

extern "C" {

int vindex_create(const char *spec, uint32_t dim, vindex_metric metric,
                  vindex **out, ctxd_error *e) {
  if (!out) return ctxd_seterr(e, CTXD_EINVAL, "vindex_create: no out pointer");
  *out = nullptr;
  if (dim == 0 || dim > VINDEX_DIM_MAX)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "vindex_create: dim %u is out of range 1..%d", dim,
                       VINDEX_DIM_MAX);
  int rc = check_spec(spec, dim, e);
  if (rc) return rc;
  if (metric != VINDEX_IP && metric != VINDEX_L2)
    return ctxd_seterr(e, CTXD_EINVAL, "vindex_create: unknown metric %d",
                       int(metric));
  vindex *v = nullptr;
  try {
    v = new vindex();
    v->dim = dim;
    v->metric = metric;
    snprintf(v->spec, sizeof v->spec, "%s", spec);
    v->index = faiss::index_factory(int(dim), spec,
                                    metric == VINDEX_IP
                                        ? faiss::METRIC_INNER_PRODUCT
                                        : faiss::METRIC_L2);
    rc = classify(v, v->index, "vindex_create", e);
    if (rc) goto fail;
    tune_training(v->index);
    use_fast_flats(v);
  } catch (...) {
    rc = exc_to_err(e, CTXD_EINVAL, "vindex_create");
    goto fail;
  }
  *out = v;
  return 0;
fail:
  delete v;
  return rc;
}

void vindex_free(vindex *v) {
  delete v;
}

int vindex_set_ef_construction(vindex *v, uint32_t ef, ctxd_error *e) {
  if (!v) return ctxd_seterr(e, CTXD_EINVAL, "vindex_set_ef_construction: no index");
  if (ef == 0 || ef > VINDEX_EF_MAX)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "vindex_set_ef_construction: ef %u is out of range 1..%d",
                       ef, VINDEX_EF_MAX);
  WriteLock lk(v);
  faiss::IndexHNSW *h = v->hnsw ? v->hnsw : v->qhnsw;
  if (!h)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "vindex_set_ef_construction: index '%s' has no HNSW graph",
                       v->spec);
  h->hnsw.efConstruction = int(ef);
  return 0;
}

void vindex_get_info(const vindex *v, vindex_info *out) {
  memset(out, 0, sizeof *out);
  if (!v) return;
  ReadLock lk(v);
  out->dim = v->dim;
  out->metric = v->metric;
  snprintf(out->spec, sizeof out->spec, "%s", v->spec);
  uint64_t least, well;
  train_sizes(v, &least, &well);
  out->needs_training = least > 0;
  out->trained = v->index->is_trained;
  out->min_train = well;
  out->size = uint64_t(v->index->ntotal);
  out->masked = v->masked;
  out->live = out->size - out->masked;
  out->bytes = index_bytes(v->index) + v->labels.capacity() * sizeof(int64_t) +
               v->mask.capacity() * sizeof(uint64_t);
  out->nlist = v->ivf ? uint32_t(v->ivf->nlist) : 0;
  const faiss::IndexHNSW *h = v->hnsw ? v->hnsw : v->qhnsw;
  out->ef_construction = h ? uint32_t(h->hnsw.efConstruction) : 0;
}

int vindex_train(vindex *v, const float *x, uint64_t n, ctxd_error *e) {
  if (!v) return ctxd_seterr(e, CTXD_EINVAL, "vindex_train: no index");
  WriteLock lk(v);
  uint64_t least, well;
  train_sizes(v, &least, &well);
  if (least == 0 || v->index->is_trained) return 0;
  if (n < least)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "vindex_train: '%s' needs at least %llu training "
                       "vectors (%llu to train well), got %llu",
                       v->spec, (unsigned long long)least,
                       (unsigned long long)well, (unsigned long long)n);
  if (!x) return ctxd_seterr(e, CTXD_EINVAL, "vindex_train: NULL vectors");
  try {
    OmpThreads g(thread_limit());
    v->index->train(idx_t(n), x);
  } catch (...) {
    return exc_to_err(e, CTXD_EIO, "vindex_train");
  }
  return 0;
}

int vindex_add(vindex *v, const float *x, const int64_t *labels, uint64_t n,
               ctxd_error *e) {
  if (!v) return ctxd_seterr(e, CTXD_EINVAL, "vindex_add: no index");
  if (n == 0) return 0;
  if (!x || !labels) return ctxd_seterr(e, CTXD_EINVAL, "vindex_add: NULL buffer");
  for (uint64_t i = 0; i < n; i++)
    if (labels[i] < 0)
      return ctxd_seterr(e, CTXD_EINVAL,
                         "vindex_add: label %lld of row %llu is negative",
                         (long long)labels[i], (unsigned long long)i);
  WriteLock lk(v);
  if (!v->index->is_trained)
    return ctxd_seterr(e, CTXD_EPRECOND,
                       "vindex_add: index '%s' is not trained (train it on "
                       "at least %llu vectors first)",
                       v->spec, [v] {
                         uint64_t a, b;
                         train_sizes(v, &a, &b);
                         return (unsigned long long)a;
                       }());
  size_t old = size_t(v->index->ntotal);
  uint64_t cap = v->kind == KIND_HNSW ? uint64_t(INT32_MAX) : uint64_t(1) << 40;
  if (n > cap - old)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "vindex_add: %llu more vectors would exceed the %llu "
                       "this index holds",
                       (unsigned long long)n, (unsigned long long)cap);
  try {
    OmpThreads g(thread_limit());
    if (v->kind == KIND_IVF) {
      v->ivf->add_with_ids(idx_t(n), x, labels);
      return 0;
    }
    v->labels.reserve(old + n);
    v->mask.reserve(mask_words(old + n));
    try {
      v->index->add(idx_t(n), x);
    } catch (...) {
      /* Keep the map as long as the index; what FAISS added anyway is
       * masked (the reservations above make this not allocate). */
      size_t now = std::max(old, size_t(v->index->ntotal));
      v->labels.resize(now, -1);
      v->mask.resize(mask_words(now), 0);
      for (size_t pos = old; pos < now; pos++) set_masked(v, pos);
      throw;
    }
    v->labels.insert(v->labels.end(), labels, labels + n);
    v->mask.resize(mask_words(old + n), 0);
  } catch (...) {
    return exc_to_err(e, CTXD_EIO, "vindex_add");
  }
  return 0;
}

int vindex_remove_ranges(vindex *v, const int64_t *lo, const int64_t *hi,
                         size_t n, uint64_t *removed, ctxd_error *e) {
  if (removed) *removed = 0;
  if (!v) return ctxd_seterr(e, CTXD_EINVAL, "vindex_remove_ranges: no index");
  if (n > 0 && (!lo || !hi))
    return ctxd_seterr(e, CTXD_EINVAL, "vindex_remove_ranges: NULL ranges");
  for (size_t i = 0; i < n; i++)
    if (lo[i] > hi[i])
      return ctxd_seterr(e, CTXD_EINVAL,
                         "vindex_remove_ranges: range %zu [%lld, %lld) is "
                         "reversed",
                         i, (long long)lo[i], (long long)hi[i]);
  uint64_t count = 0;
  try {
    RangeSet set(lo, hi, n);
    if (set.empty()) return 0;
    WriteLock lk(v);
    if (v->kind == KIND_IVF) {
      OmpThreads g(thread_limit());
      count = v->ivf->remove_ids(set);
    } else {
      for (size_t pos = 0; pos < v->labels.size(); pos++) {
        if (!is_masked(v, idx_t(pos)) && set.is_member(v->labels[pos])) {
          set_masked(v, pos);
          count++;
        }
      }
    }
  } catch (...) {
    return exc_to_err(e, CTXD_EIO, "vindex_remove_ranges");
  }
  if (removed) *removed = count;
  return 0;
}

int vindex_remove_range(vindex *v, int64_t lo, int64_t hi, uint64_t *removed,
                        ctxd_error *e) {
  return vindex_remove_ranges(v, &lo, &hi, 1, removed, e);
}

int vindex_search(const vindex *v, const float *q, uint64_t nq, uint32_t k,
                  const vindex_params *p, unsigned threads, float *scores,
                  int64_t *labels, ctxd_error *e) {
  int rc = check_search(v, q, nq, k, p, scores, labels, "vindex_search", e);
  if (rc || nq == 0) return rc;
  ReadLock lk(v);
  if (!v->index->is_trained)
    return ctxd_seterr(e, CTXD_EPRECOND,
                       "vindex_search: index '%s' is not trained", v->spec);
  try {
    int nt = search_threads(threads, nq);
    OmpThreads g(nt);
    search_core(v, q, size_t(nq), k, p, nt, scores, labels);
  } catch (...) {
    return exc_to_err(e, CTXD_EIO, "vindex_search");
  }
  finish_missing(v, scores, labels, size_t(nq) * k);
  return 0;
}

int vindex_search_batched(const vindex *v, const float *x, uint64_t n,
                          const int64_t *self_labels, uint32_t k,
                          const vindex_params *p, unsigned threads,
                          float *scores, int64_t *labels,
                          void (*progress)(uint64_t done, void *arg),
                          void *progress_arg, ctxd_error *e) {
  int rc = check_search(v, x, n, k, p, scores, labels, "vindex_search_batched",
                        e);
  if (rc || n == 0) return rc;
  const size_t kk = size_t(k) + (self_labels ? 1 : 0);
  const size_t d = v->dim;
  /* Batches big enough for BLAS, small enough to bound the buffers. The
   * lock is taken per batch, so a long job never holds writers (and, as
   * writers go first, every other search) waiting. */
  const size_t bs = std::max<size_t>(1, std::min<size_t>(4096, (1u << 22) / kk));
  try {
    int nt = search_threads(threads, n);
    OmpThreads g(nt);
    std::vector<float> bd(self_labels ? bs * kk : 0);
    std::vector<idx_t> bl(self_labels ? bs * kk : 0);
    for (uint64_t i0 = 0; i0 < n; i0 += bs) {
      size_t nb = size_t(std::min<uint64_t>(bs, n - i0));
      float *D = scores + i0 * k;
      int64_t *L = labels + i0 * k;
      {
        ReadLock lk(v);
        if (!v->index->is_trained)
          return ctxd_seterr(e, CTXD_EPRECOND,
                             "vindex_search_batched: index '%s' is not trained",
                             v->spec);
        if (!self_labels) {
          search_core(v, x + i0 * d, nb, k, p, nt, D, L);
        } else {
          search_core(v, x + i0 * d, nb, kk, p, nt, bd.data(), bl.data());
        }
      }
      if (self_labels) {
        for (size_t i = 0; i < nb; i++) {
          size_t o = 0;
          for (size_t j = 0; j < kk && o < k; j++) {
            idx_t l = bl[i * kk + j];
            if (l == self_labels[i0 + i]) continue;
            D[i * k + o] = bd[i * kk + j];
            L[i * k + o] = l;
            o++;
          }
          for (; o < k; o++) L[i * k + o] = -1;
        }
      }
      finish_missing(v, D, L, nb * k);
      if (progress) progress(i0 + nb, progress_arg);
    }
  } catch (...) {
    return exc_to_err(e, CTXD_EIO, "vindex_search_batched");
  }
  return 0;
}

int vindex_write(const vindex *v, void *file, ctxd_error *e) {
  FILE *f = static_cast<FILE *>(file);
  if (!v || !f) return ctxd_seterr(e, CTXD_EINVAL, "vindex_write: no index or file");
  ReadLock lk(v);
  try {
    SumWriter measure;
    write_body(v, measure);
    Header h = {};
    h.version = kVersion;
    h.kind = uint32_t(v->kind);
    h.metric = uint32_t(v->metric);
    h.dim = v->dim;
    h.spec_len = uint32_t(strlen(v->spec));
    memcpy(h.spec, v->spec, h.spec_len);
    h.body_len = measure.sum.total;
    uint64_t sum = h.checksum(measure.sum.final_value());
    FileWriter w(f);
    put_bytes(w, kMagic, sizeof kMagic);
    put_bytes(w, &h.version, 5 * sizeof(uint32_t));
    put_bytes(w, h.spec, h.spec_len);
    put(w, h.body_len);
    put(w, sum);
    write_body(v, w);
    if (fflush(f) != 0) throw std::runtime_error("flush failed");
  } catch (...) {
    if (ferror(f))
      return ctxd_seterr(e, errno == ENOSPC ? CTXD_ENOSPC : CTXD_EIO,
                         "vindex_write: %s", strerror(errno));
    return exc_to_err(e, CTXD_EIO, "vindex_write");
  }
  return 0;
}

int vindex_read(void *file, vindex **out, ctxd_error *e) {
  FILE *f = static_cast<FILE *>(file);
  if (!f || !out) return ctxd_seterr(e, CTXD_EINVAL, "vindex_read: no file");
  *out = nullptr;
  vindex *v = nullptr;
  Header h;
  uint64_t sum, body_sum = 0;
  int rc = read_header(f, &h, &sum, e);
  if (rc) return rc;
  /* Verify first where the stream can seek back (files can); otherwise sum
   * while parsing and verify at the end. */
  off_t body = ftello(f);
  bool verified = false;
  if (body >= 0) {
    rc = sum_body(f, h.body_len, &body_sum, e);
    if (rc) return rc;
    if (h.checksum(body_sum) != sum)
      return ctxd_seterr(e, CTXD_EIO,
                         "vindex_read: checksum mismatch (the index data is "
                         "damaged)");
    if (fseeko(f, body, SEEK_SET) != 0)
      return ctxd_seterr(e, CTXD_EIO, "vindex_read: cannot seek back: %s",
                         strerror(errno));
    verified = true;
  }
  try {
    v = new vindex();
    v->dim = h.dim;
    v->metric = vindex_metric(h.metric);
    memcpy(v->spec, h.spec, h.spec_len);
    BodyReader r(f, h.body_len, !verified);
    rc = read_body(v, h, r, e);
    if (rc) goto fail;
    if (!verified && h.checksum(r.sum.final_value()) != sum) {
      rc = ctxd_seterr(e, CTXD_EIO,
                       "vindex_read: checksum mismatch (the index data is "
                       "damaged)");
      goto fail;
    }
  } catch (...) {
    rc = exc_to_err(e, CTXD_EIO, "vindex_read");
    goto fail;
  }
  *out = v;
  return 0;
fail:
  delete v;
  return rc;
}

void vindex_normalize(float *x, uint64_t n, uint32_t dim) {
  for (uint64_t i = 0; i < n; i++) {
    float *row = x + i * dim;
    double s = 0;
    for (uint32_t j = 0; j < dim; j++) s += double(row[j]) * row[j];
    if (s <= 0) continue;
    float inv = float(1.0 / std::sqrt(s));
    for (uint32_t j = 0; j < dim; j++) row[j] *= inv;
  }
}

void vindex_thread_limit(unsigned max_threads) {
  tl_max_threads = std::min<unsigned>(max_threads, 1u << 16);
}

int vindex_global_init(unsigned max_threads) {
  int n = max_threads ? int(std::min<unsigned>(max_threads, 1u << 16))
                      : omp_get_num_procs();
  g_max_threads.store(n, std::memory_order_relaxed);
  omp_set_num_threads(thread_limit());
  const char *p = getenv("OMP_WAIT_POLICY");
  if (p && strcasecmp(p, "passive") == 0) return 1;
  const char *s = getenv("GOMP_SPINCOUNT");
  return s && strcmp(s, "0") == 0;
}

}  // extern "C"
