/* err.c - error codes, messages and the code -> gRPC status table. */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>

int ctxd_seterr(ctxd_error *e, int code, const char *fmt, ...) {
  if (e) {
    va_list ap;
    va_start(ap, fmt);
    e->code = code;
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
  }
  return code;
}

void ctxd_clearerr(ctxd_error *e) {
  if (e) {
    e->code = CTXD_OK;
    e->msg[0] = '\0';
  }
}

static const struct {
  int code;
  int status;
  const char *name;
} err_table[] = {
    {CTXD_OK, GRPC_OK, "ok"},
    {CTXD_EINVAL, GRPC_INVALID_ARGUMENT, "invalid argument"},
    {CTXD_ENOTFOUND, GRPC_NOT_FOUND, "not found"},
    {CTXD_EEXIST, GRPC_ALREADY_EXISTS, "already exists"},
    {CTXD_ENOSPC, GRPC_RESOURCE_EXHAUSTED, "no space left"},
    {CTXD_ENOMEM, GRPC_RESOURCE_EXHAUSTED, "out of memory"},
    {CTXD_ELIMIT, GRPC_RESOURCE_EXHAUSTED, "limit exceeded"},
    {CTXD_EIO, GRPC_INTERNAL, "I/O error"},
    {CTXD_ECORRUPT, GRPC_DATA_LOSS, "data corrupted"},
    {CTXD_EUNIMPL, GRPC_UNIMPLEMENTED, "not implemented"},
    {CTXD_ECANCELED, GRPC_CANCELLED, "cancelled"},
    {CTXD_ETIMEOUT, GRPC_DEADLINE_EXCEEDED, "deadline exceeded"},
    {CTXD_EBUSY, GRPC_UNAVAILABLE, "busy"},
    {CTXD_EPRECOND, GRPC_FAILED_PRECONDITION, "failed precondition"},
    {CTXD_EINTERNAL, GRPC_INTERNAL, "internal error"},
};

const char *ctxd_strerror(int code) {
  for (size_t i = 0; i < sizeof err_table / sizeof err_table[0]; i++)
    if (err_table[i].code == code) return err_table[i].name;
  return "unknown error";
}

int ctxd_err_grpc_status(int code) {
  for (size_t i = 0; i < sizeof err_table / sizeof err_table[0]; i++)
    if (err_table[i].code == code) return err_table[i].status;
  return GRPC_UNKNOWN;
}

const char *grpc_status_name(int status) {
  static const char *names[] = {
      "OK",        "CANCELLED",         "UNKNOWN",          "INVALID_ARGUMENT",
      "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",   "PERMISSION_DENIED",
      "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
      "UNIMPLEMENTED", "INTERNAL",      "UNAVAILABLE",      "DATA_LOSS",
      "UNAUTHENTICATED"};
  if (status < 0 || status > 16) return "UNKNOWN";
  return names[status];
}
