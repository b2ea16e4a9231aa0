/* ctxclient_wire.c - address parsing, grpc-timeout, grpc-message decoding
 * and message framing for ctxclient. No sockets here, so every function is
 * unit-tested on its own (tests/clients/test_wire.c). */
#include "ctxclient_wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int copy_part(const char *s, size_t n, char *out, size_t outlen) {
  if (n + 1 > outlen) return -1;
  memcpy(out, s, n);
  out[n] = '\0';
  return 0;
}

static int valid_port(const char *p, size_t n) {
  if (n == 0 || n > 5) return 0;
  unsigned long v = 0;
  for (size_t i = 0; i < n; i++) {
    if (p[i] < '0' || p[i] > '9') return 0;
    v = v * 10 + (unsigned long)(p[i] - '0');
  }
  return v >= 1 && v <= 65535;
}

int ccw_parse_addr(const char *addr, const char *default_port, char *host,
                   size_t hostlen, char *port, size_t portlen) {
  if (!addr || !*addr) return -1;
  const char *h, *p = NULL;
  size_t hn, pn = 0;
  if (addr[0] == '[') {
    const char *close = strchr(addr, ']');
    if (!close || close == addr + 1) return -1;
    h = addr + 1;
    hn = (size_t)(close - h);
    if (close[1] == ':') {
      p = close + 2;
      pn = strlen(p);
    } else if (close[1] != '\0') {
      return -1;
    }
  } else {
    const char *colon = strchr(addr, ':');
    if (colon && strchr(colon + 1, ':')) {
      /* Two or more colons and no brackets: a bare IPv6 literal. */
      if (addr[strspn(addr, "0123456789abcdefABCDEF:.")] != '\0') return -1;
      h = addr;
      hn = strlen(addr);
    } else if (colon) {
      h = addr;
      hn = (size_t)(colon - addr);
      p = colon + 1;
      pn = strlen(p);
    } else {
      h = addr;
      hn = strlen(addr);
    }
  }
  if (hn == 0) return -1;
  if (!p) {
    p = default_port;
    pn = strlen(default_port);
  }
  if (!valid_port(p, pn)) return -1;
  if (copy_part(h, hn, host, hostlen) < 0) return -1;
  return copy_part(p, pn, port, portlen);
}

int ccw_format_timeout(int64_t ms, char *out, size_t outlen) {
  static const struct {
    char unit;
    int64_t ms;
  } units[] = {{'m', 1}, {'S', 1000}, {'M', 60000}, {'H', 3600000}};
  if (ms <= 0 || outlen < 10) return -1;
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
    int64_t v = (ms + units[i].ms - 1) / units[i].ms; /* round up */
    if (v <= 99999999) {
      snprintf(out, outlen, "%lld%c", (long long)v, units[i].unit);
      return 0;
    }
  }
  snprintf(out, outlen, "99999999H"); /* over 11000 years: as good as none */
  return 0;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

size_t ccw_percent_decode(const char *in, size_t len, char *out,
                          size_t outlen) {
  size_t n = 0;
  for (size_t i = 0; i < len; i++) {
    char c = in[i];
    if (c == '%' && i + 2 < len) {
      int hi = hexval(in[i + 1]), lo = hexval(in[i + 2]);
      if (hi >= 0 && lo >= 0) {
        c = (char)(hi << 4 | lo);
        i += 2;
      }
    }
    if (outlen && n + 1 < outlen) out[n] = c;
    n++;
  }
  if (outlen) out[n < outlen ? n : outlen - 1] = '\0';
  return n;
}

void ccw_frame_header(uint8_t hdr[5], uint32_t len) {
  hdr[0] = 0;
  hdr[1] = (uint8_t)(len >> 24);
  hdr[2] = (uint8_t)(len >> 16);
  hdr[3] = (uint8_t)(len >> 8);
  hdr[4] = (uint8_t)len;
}

void ccw_deframer_init(ccw_deframer *d, size_t max_len) {
  memset(d, 0, sizeof *d);
  d->max_len = max_len;
}

int ccw_deframer_feed(ccw_deframer *d, const uint8_t *data, size_t len,
                      ccw_on_message cb, void *ud) {
  while (len > 0) {
    if (d->hdr_have < 5) {
      size_t take = 5 - d->hdr_have;
      if (take > len) take = len;
      memcpy(d->hdr + d->hdr_have, data, take);
      d->hdr_have += take;
      data += take;
      len -= take;
      if (d->hdr_have < 5) return 0;
      if (d->hdr[0] != 0) return CCW_ECOMPRESSED;
      uint32_t n = (uint32_t)d->hdr[1] << 24 | (uint32_t)d->hdr[2] << 16 |
                   (uint32_t)d->hdr[3] << 8 | d->hdr[4];
      if (n > d->max_len) return CCW_ETOOBIG;
      d->msg_len = n;
      d->msg_have = 0;
      if (n > 0) {
        d->msg = malloc(n);
        if (!d->msg) return CCW_ENOMEM;
      }
    }
    size_t take = d->msg_len - d->msg_have;
    if (take > len) take = len;
    if (take) {
      memcpy(d->msg + d->msg_have, data, take);
      d->msg_have += take;
      data += take;
      len -= take;
    }
    if (d->msg_have < d->msg_len) return 0;
    uint8_t *msg = d->msg;
    size_t n = d->msg_len;
    d->msg = NULL;
    d->hdr_have = 0;
    d->msg_len = d->msg_have = 0;
    if (cb(ud, msg, n) != 0) return CCW_ECALLBACK;
  }
  return 0;
}

int ccw_deframer_partial(const ccw_deframer *d) {
  return d->hdr_have > 0;
}

void ccw_deframer_free(ccw_deframer *d) {
  free(d->msg);
  d->msg = NULL;
  d->hdr_have = 0;
}
