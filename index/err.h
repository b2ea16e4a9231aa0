/* err.h - ctxd error codes and the error-report struct every index/ call uses.
 *
 * Every fallible function in libctxd returns 0 or a negative ctxd_err code and,
 * when given a non-NULL ctxd_error *, writes a one-line human message into it
 * ("invalid UTF-8 at byte 1234"). The daemon maps codes to gRPC statuses with
 * ctxd_err_grpc_status() - the one table of that mapping. */
#ifndef CTXD_ERR_H
#define CTXD_ERR_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" { /* for vindex.cpp */
#endif

enum ctxd_err {
  CTXD_OK = 0,
  CTXD_EINVAL = -1,     /* bad input: INVALID_ARGUMENT */
  CTXD_ENOTFOUND = -2,  /* NOT_FOUND */
  CTXD_EEXIST = -3,     /* ALREADY_EXISTS */
  CTXD_ENOSPC = -4,     /* disk or map full: RESOURCE_EXHAUSTED */
  CTXD_ENOMEM = -5,     /* RESOURCE_EXHAUSTED */
  CTXD_ELIMIT = -6,     /* a configured limit was exceeded: RESOURCE_EXHAUSTED */
  CTXD_EIO = -7,        /* I/O or storage-engine failure: INTERNAL */
  CTXD_ECORRUPT = -8,   /* stored data is inconsistent: DATA_LOSS */
  CTXD_EUNIMPL = -9,    /* UNIMPLEMENTED */
  CTXD_ECANCELED = -10, /* CANCELLED */
  CTXD_ETIMEOUT = -11,  /* DEADLINE_EXCEEDED */
  CTXD_EBUSY = -12,     /* try again later: UNAVAILABLE */
  CTXD_EPRECOND = -13,  /* FAILED_PRECONDITION */
  CTXD_EINTERNAL = -14, /* a bug: INTERNAL */
};

/* gRPC status codes (grpc/status.h numbering). */
enum grpc_status {
  GRPC_OK = 0,
  GRPC_CANCELLED = 1,
  GRPC_UNKNOWN = 2,
  GRPC_INVALID_ARGUMENT = 3,
  GRPC_DEADLINE_EXCEEDED = 4,
  GRPC_NOT_FOUND = 5,
  GRPC_ALREADY_EXISTS = 6,
  GRPC_PERMISSION_DENIED = 7,
  GRPC_RESOURCE_EXHAUSTED = 8,
  GRPC_FAILED_PRECONDITION = 9,
  GRPC_ABORTED = 10,
  GRPC_OUT_OF_RANGE = 11,
  GRPC_UNIMPLEMENTED = 12,
  GRPC_INTERNAL = 13,
  GRPC_UNAVAILABLE = 14,
  GRPC_DATA_LOSS = 15,
  GRPC_UNAUTHENTICATED = 16,
};

#define CTXD_ERRMSG_MAX 512

/* Filled by a failing call; `code` repeats the return value. */
typedef struct ctxd_error {
  int code;
  char msg[CTXD_ERRMSG_MAX];
} ctxd_error;

/* Record `code` and a printf-style message in `e` (which may be NULL) and
 * return `code`, so a failing path can say `return ctxd_seterr(e, ...)`. */
int ctxd_seterr(ctxd_error *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Reset `e` to CTXD_OK with an empty message. */
void ctxd_clearerr(ctxd_error *e);

/* Static name of a code ("invalid argument"). */
const char *ctxd_strerror(int code);

/* The gRPC status a code maps to. The only such table in ctxd. */
int ctxd_err_grpc_status(int code);

/* Static name of a gRPC status ("INVALID_ARGUMENT"). */
const char *grpc_status_name(int status);

#ifdef __cplusplus
}
#endif

#endif
