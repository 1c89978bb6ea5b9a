/* runtime/comm_nccl_none.c — comm_nccl_new for builds without the CUDA toolkit: always
 * COMM_ERR_UNSUPPORTED, so callers report "no NCCL" the same way as "no GPU". */
#include "comm_impl.h"

#include <stdio.h>

int comm_nccl_new(comm *mpi, int device, comm **out, char *err, size_t errlen) {
    if (out) *out = NULL;
    snprintf(err, errlen, "%s: NCCL comm unavailable: built without CUDA", comm_where(mpi));
    return COMM_ERR_UNSUPPORTED;
}
