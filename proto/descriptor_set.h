/* descriptor_set.h - the FileDescriptorSet of every proto ctxd serves
 * (with imports), embedded at build time for server reflection. */
#ifndef CTXD_DESCRIPTOR_SET_H
#define CTXD_DESCRIPTOR_SET_H
#include <stddef.h>
extern const unsigned char ctxd_descriptor_set[];
extern const size_t ctxd_descriptor_set_len;
#endif
