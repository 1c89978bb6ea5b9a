/* runtime/comm_nccl_none.c — comm_nccl_new for builds without the CUDA toolkit: always
 * COMM_ERR_UNSUPPORTED, so callers report "no NCCL" the same way as "no GPU". No NCCL comm
 * exists in such a build, so its collectives (comm_alltoallv included) run on self or MPI. */
#include "comm_impl.h"

#include <stdio.h>

int comm_nccl_new(comm *mpi, int device, comm **out, char *err, size_t errlen) {
    if (out) *out = NULL;
    snprintf(err, errlen, "%s: NCCL comm unavailable: built without CUDA", comm_where(mpi));
    return COMM_ERR_UNSUPPORTED;
}

int comm_nccl_device(const char *pci_bus_id, int local_rank, char *err, size_t errlen) {
    (void)pci_bus_id;
    (void)local_rank;
    snprintf(err, errlen, "no CUDA device (this build of sampan has no CUDA support)");
    return -1;
}

int comm_nccl_for_backend(comm *tp_host, comm *pp_host, int device, comm **tp_out,
                          comm **pp_out, char *err, size_t errlen) {
    (void)pp_host;
    (void)device;
    *tp_out = *pp_out = NULL;
    if (!tp_host && !pp_host) return 0;
    snprintf(err, errlen, "%s: NCCL comm unavailable: built without CUDA",
             comm_where(tp_host ? tp_host : pp_host));
    return COMM_ERR_UNSUPPORTED;
}
