/* test_metrics.c - the Prometheus text writer (escaping, number forms) and
 * the call counters: labels from the method table only, cumulative
 * histogram buckets, exact counts from several threads at once. */
#include "../check.h"
#include "metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static void text_reset(metrics_text *t) {
  free(t->buf);
  memset(t, 0, sizeof *t);
}

static void test_escaping(void) {
  metrics_text t = {0};
  metrics_text_family(&t, "a_total", "counter", "back\\slash\nnew \"q\"");
  CHECK_EQ_STR(t.buf,
               "# HELP a_total back\\\\slash\\nnew \"q\"\n"
               "# TYPE a_total counter\n");
  text_reset(&t);
  const char *lb[] = {"k", "a\"b\\c\nd", "u", "caf\xc3\xa9", NULL};
  metrics_text_sample(&t, "a_total", lb, 3);
  CHECK_EQ_STR(t.buf, "a_total{k=\"a\\\"b\\\\c\\nd\",u=\"caf\xc3\xa9\"} 3\n");
  text_reset(&t);
  /* Invalid UTF-8: a lone continuation byte and a truncated sequence. */
  const char *bad[] = {"p", "x\x80y\xe2\x82", NULL};
  metrics_text_sample_u64(&t, "g", bad, 1);
  CHECK_EQ_STR(t.buf, "g{p=\"x\xef\xbf\xbdy\xef\xbf\xbd\xef\xbf\xbd\"} 1\n");
  text_reset(&t);
  metrics_text_sample(&t, "g", NULL, 1);
  const char *empty[] = {NULL};
  metrics_text_sample(&t, "g", empty, 2);
  CHECK_EQ_STR(t.buf, "g 1\ng 2\n");
  text_reset(&t);
}

static void test_numbers(void) {
  metrics_text t = {0};
  metrics_text_sample(&t, "v", NULL, 0.1);
  metrics_text_sample(&t, "v", NULL, 0.09);
  metrics_text_sample(&t, "v", NULL, -2);
  metrics_text_sample(&t, "v", NULL, INFINITY);
  metrics_text_sample(&t, "v", NULL, -INFINITY);
  metrics_text_sample(&t, "v", NULL, NAN);
  metrics_text_sample(&t, "v", NULL, 1e20);
  metrics_text_sample(&t, "v", NULL, 1.0 / 3);
  metrics_text_sample_u64(&t, "v", NULL, UINT64_MAX);
  CHECK_EQ_STR(t.buf,
               "v 0.1\nv 0.09\nv -2\nv +Inf\nv -Inf\nv NaN\nv 1e+20\n"
               "v 0.3333333333333333\nv 18446744073709551615\n");
  text_reset(&t);
}

/* The line of `t` that starts with `prefix`, or NULL. */
static const char *line_of(const char *text, const char *prefix) {
  static char line[512];
  size_t pl = strlen(prefix);
  for (const char *p = text; p && *p;) {
    const char *nl = strchr(p, '\n');
    size_t n = nl ? (size_t)(nl - p) : strlen(p);
    if (n >= pl && strncmp(p, prefix, pl) == 0 && n < sizeof line) {
      memcpy(line, p, n);
      line[n] = '\0';
      return line;
    }
    p = nl ? nl + 1 : NULL;
  }
  return NULL;
}

/* The exposition has the line "<series> <value>". */
static void expect(const char *text, const char *series, const char *value) {
  char pre[300], want[340];
  snprintf(pre, sizeof pre, "%s ", series);
  snprintf(want, sizeof want, "%s%s", pre, value);
  CHECK_EQ_STR(line_of(text, pre), want);
}

static void call(const char *method, int status, double secs) {
  metrics_call mc = {method, method ? method : "/x/y", status,
                     (uint64_t)(secs * 1e9), 10, 20, -1, NULL};
  metrics_call_end(&mc);
}

static void test_calls(void) {
  static const char m1[] = "/svc.A/One";
  metrics_text t = {0};
  ctxd_error e;
  call(m1, 0, 0.0001);
  call(m1, 0, 0.003);
  call(m1, 5, 2);
  call(m1, -1, 1000); /* reset before a status: CANCELLED, past 300 s */
  call(NULL, 12, 0.0001);
  /* Another string with the same text shares the series. */
  char copy[sizeof m1];
  memcpy(copy, m1, sizeof m1);
  call(copy, 0, 0.0001);
  CHECK_EQ_INT(metrics_render(NULL, &t, &e), 0);
  expect(t.buf, "ctxd_grpc_calls_total{method=\"svc.A/One\",code=\"OK\"}", "3");
  expect(t.buf, "ctxd_grpc_calls_total{method=\"svc.A/One\",code=\"NOT_FOUND\"}", "1");
  expect(t.buf, "ctxd_grpc_calls_total{method=\"svc.A/One\",code=\"CANCELLED\"}", "1");
  /* The only series of the unknown slot: the :path is no label. */
  CHECK_EQ_STR(line_of(t.buf, "ctxd_grpc_calls_total{method=\"unknown\""),
               "ctxd_grpc_calls_total{method=\"unknown\",code=\"UNIMPLEMENTED\"} 1");
  static const struct {
    const char *le, *n;
  } cum[] = {{"0.0005", "2"}, {"0.001", "2"}, {"0.005", "3"}, {"1", "3"},
             {"2.5", "4"},    {"300", "4"},   {"+Inf", "5"}};
  for (size_t i = 0; i < sizeof cum / sizeof cum[0]; i++) {
    char series[256];
    snprintf(series, sizeof series,
             "ctxd_grpc_call_duration_seconds_bucket{method=\"svc.A/One\","
             "le=\"%s\"}",
             cum[i].le);
    expect(t.buf, series, cum[i].n);
  }
  expect(t.buf, "ctxd_grpc_call_duration_seconds_count{method=\"svc.A/One\"}", "5");
  const char *sum =
      line_of(t.buf, "ctxd_grpc_call_duration_seconds_sum{method=\"svc.A/One\"}");
  CHECK(sum && fabs(strtod(strchr(sum, ' ') + 1, NULL) - 1002.0032) < 1e-6);
  expect(t.buf, "ctxd_grpc_sent_bytes_total{method=\"svc.A/One\"}", "100");
  /* No ctx: no store families; /healthz's gauge says not serving. */
  CHECK(line_of(t.buf, "ctxd_store_documents") == NULL);
  expect(t.buf, "ctxd_serving", "0");
  text_reset(&t);
}

/* More distinct methods than slots: the rest count as "unknown", so the
 * number of series stays bounded. */
static void test_slot_overflow(void) {
  static char names[100][32];
  metrics_text t = {0};
  ctxd_error e;
  for (int i = 0; i < 100; i++) {
    snprintf(names[i], sizeof names[i], "/many.S/M%d", i);
    call(names[i], 3, 0.01);
  }
  CHECK_EQ_INT(metrics_render(NULL, &t, &e), 0);
  int series = 0;
  for (const char *p = t.buf; (p = strstr(p, "\nctxd_grpc_calls_total{")); p++)
    series++;
  CHECK(series <= 64 + 1 + 4); /* slots + unknown, each with few codes */
  CHECK(line_of(t.buf, "ctxd_grpc_calls_total{method=\"unknown\",code=\"INVALID_ARGUMENT\"}") != NULL);
  text_reset(&t);
}

static const char m_thr[] = "/svc.T/Threads";

static void *hammer(void *arg) {
  (void)arg;
  for (int i = 0; i < 20000; i++) {
    metrics_stream_open();
    call(m_thr, i % 2 ? 0 : 14, 0.002);
    metrics_stream_close();
  }
  return NULL;
}

static void test_threads(void) {
  pthread_t th[4];
  metrics_text t = {0};
  ctxd_error e;
  for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, hammer, NULL);
  /* Scrapes while the counters move must render consistent histograms. */
  for (int i = 0; i < 20; i++) {
    CHECK_EQ_INT(metrics_render(NULL, &t, &e), 0);
    text_reset(&t);
  }
  for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
  CHECK_EQ_INT(metrics_render(NULL, &t, &e), 0);
  expect(t.buf, "ctxd_grpc_calls_total{method=\"svc.T/Threads\",code=\"OK\"}", "40000");
  expect(t.buf, "ctxd_grpc_call_duration_seconds_count{method=\"svc.T/Threads\"}", "80000");
  expect(t.buf, "ctxd_grpc_streams_in_flight", "0");
  text_reset(&t);
}

int main(void) {
  test_escaping();
  test_numbers();
  test_calls();
  test_threads();
  test_slot_overflow(); /* last: it fills every slot */
  return check_report("metrics");
}
