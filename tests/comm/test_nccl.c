/* tests/comm/test_nccl.c — the NCCL comm on GPUs (device buffers), one GPU per rank.
 *
 * Run alone (a self host comm, one GPU) or under mpirun. Where no GPU can be used it checks
 * that comm_nccl_new says so (COMM_ERR_UNSUPPORTED, "no GPU") on every rank and exits 77
 * ("skip: no GPU (cudaGetDeviceCount: ...)"): a machine without GPU never passes this test.
 * Expected values are computed on the host from each rank's known inputs.
 * Prints "N passed, N failed" (totals over ranks, from rank 0).
 */
#include "comm.h"
#include "qtypes.h"

#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_pass, g_fail, g_rank;

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (cond) g_pass++;                                                    \
        else {                                                                 \
            g_fail++;                                                          \
            fprintf(stderr, "FAIL rank %d line %d: ", g_rank, __LINE__);       \
            fprintf(stderr, __VA_ARGS__);                                      \
            fputc('\n', stderr);                                               \
        }                                                                      \
    } while (0)

static void *dev_copy(const void *host, size_t bytes) {
    void *d = NULL;
    if (cudaMalloc(&d, bytes ? bytes : 1) != cudaSuccess) return NULL;
    if (host) cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice);
    return d;
}

static void host_copy(void *host, const void *dev, size_t bytes) {
    cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost);
}

static void test_ops(comm *nc) {
    const int n = nc->size, r = nc->rank;
    enum { N = 4099 };
    float *f = malloc(N * sizeof *f);
    qt_bf16 *h = malloc(N * sizeof *h);

    for (int i = 0; i < N; i++) f[i] = (float)(r + 1) * (float)(i % 1000 - 500);
    float *df = dev_copy(f, N * sizeof *f);
    int rc = comm_allreduce_sum(nc, df, N, COMM_F32);
    host_copy(f, df, N * sizeof *f);
    int bad = 0;
    for (int i = 0; i < N; i++) bad += f[i] != (float)(n * (n + 1) / 2) * (float)(i % 1000 - 500);
    CHECK(rc == 0 && bad == 0, "allreduce f32: rc %d %s, %d wrong", rc, comm_error(nc), bad);

    /* bf16: multiples of 1/16 with 8 significant bits, exact f32 sum; NCCL rounds per step, so
     * for more than 2 ranks allow one bf16 step either way */
    for (int i = 0; i < N; i++) h[i] = qt_f32_to_bf16((float)((i * 37 + r * 101) % 511 - 255) / 16);
    qt_bf16 *dh = dev_copy(h, N * sizeof *h);
    rc = comm_allreduce_sum(nc, dh, N, COMM_BF16);
    host_copy(h, dh, N * sizeof *h);
    bad = 0;
    for (int i = 0; i < N; i++) {
        float s = 0;
        for (int q = 0; q < n; q++) s += (float)((i * 37 + q * 101) % 511 - 255) / 16;
        qt_bf16 want = qt_f32_to_bf16(s);
        if (n <= 2) bad += h[i] != want;
        else bad += fabsf(qt_bf16_to_f32(h[i]) - s) > fabsf(s) / 128 + 1e-6f;
    }
    CHECK(rc == 0 && bad == 0, "allreduce bf16: rc %d, %d wrong", rc, bad);

    int32_t mine[3] = { r, 10 * r, -r }, *all = malloc((size_t)n * sizeof mine);
    int32_t *dm = dev_copy(mine, sizeof mine), *da = dev_copy(NULL, (size_t)n * sizeof mine);
    rc = comm_allgather(nc, dm, da, 3, COMM_I32);
    host_copy(all, da, (size_t)n * sizeof mine);
    bad = 0;
    for (int q = 0; q < n; q++) bad += all[3 * q] != q || all[3 * q + 1] != 10 * q || all[3 * q + 2] != -q;
    CHECK(rc == 0 && bad == 0, "allgather: rc %d, %d wrong", rc, bad);

    int root = n - 1;
    unsigned char b[777];
    for (int i = 0; i < 777; i++) b[i] = r == root ? (unsigned char)(i * 7 + 1) : 0;
    unsigned char *db = dev_copy(b, sizeof b);
    rc = comm_bcast(nc, db, sizeof b, root);
    host_copy(b, db, sizeof b);
    bad = 0;
    for (int i = 0; i < 777; i++) bad += b[i] != (unsigned char)(i * 7 + 1);
    CHECK(rc == 0 && bad == 0, "bcast from %d: rc %d, %d wrong", root, rc, bad);

    float v = 1.0f;
    int32_t ix = 100 - r;   /* all tied: the smallest index (highest rank) wins */
    rc = comm_argmax(nc, &v, &ix);
    CHECK(rc == 0 && v == 1.0f && ix == 100 - (n - 1), "argmax ties: (%g, %d)", v, (int)ix);
    v = (float)((r * 5 + 3) % 7);
    ix = r;
    float bv = -1;
    int32_t bi = 0;
    for (int q = 0; q < n; q++)
        if ((float)((q * 5 + 3) % 7) > bv) bv = (float)((q * 5 + 3) % 7), bi = q;
    rc = comm_argmax(nc, &v, &ix);
    CHECK(rc == 0 && v == bv && ix == bi, "argmax: (%g, %d) want (%g, %d)", v, (int)ix, bv, (int)bi);

    if (n > 1) {
        int next = (r + 1) % n, prev = (r + n - 1) % n, got = -1, rc2;
        int *dout = dev_copy(&r, sizeof r), *din = dev_copy(NULL, sizeof(int));
        if (r % 2 == 0) {
            rc = comm_send(nc, dout, sizeof r, next, 0);
            rc2 = comm_recv(nc, din, sizeof r, prev, 0);
        } else {
            rc2 = comm_recv(nc, din, sizeof r, prev, 0);
            rc = comm_send(nc, dout, sizeof r, next, 0);
        }
        host_copy(&got, din, sizeof got);
        CHECK(rc == 0 && rc2 == 0 && got == prev, "ring: got %d want %d", got, prev);
        cudaFree(dout);
        cudaFree(din);
    }
    CHECK(comm_barrier(nc) == 0, "barrier: %s", comm_error(nc));

    /* alltoallv: rank s sends rank d (s + 2d) % 3 int32 of value 1000 s + 10 d + i (0 to some
     * peers), packed in rank order; received in reverse rank order */
    size_t *sc = calloc((size_t)n, sizeof *sc), *sd = calloc((size_t)n, sizeof *sd);
    size_t *rcn = calloc((size_t)n, sizeof *rcn), *rd = calloc((size_t)n, sizeof *rd);
    size_t so = 0, ro = 0;
    for (int q = 0; q < n; q++) sc[q] = (size_t)((r + 2 * q) % 3), sd[q] = so, so += sc[q];
    for (int q = n - 1; q >= 0; q--) rcn[q] = (size_t)((q + 2 * r) % 3), rd[q] = ro, ro += rcn[q];
    int32_t *hs = malloc((so + 1) * sizeof *hs), *hr = malloc((ro + 1) * sizeof *hr);
    for (int q = 0; q < n; q++)
        for (size_t i = 0; i < sc[q]; i++) hs[sd[q] + i] = 1000 * r + 10 * q + (int32_t)i;
    int32_t *ds = dev_copy(hs, (so + 1) * sizeof *hs), *dr = dev_copy(NULL, (ro + 1) * sizeof *hr);
    rc = comm_alltoallv(nc, ds, sc, sd, dr, rcn, rd, COMM_I32);
    host_copy(hr, dr, (ro + 1) * sizeof *hr);
    bad = 0;
    for (int q = 0; q < n; q++)
        for (size_t i = 0; i < rcn[q]; i++) bad += hr[rd[q] + i] != 1000 * q + 10 * r + (int32_t)i;
    CHECK(rc == 0 && bad == 0, "alltoallv: rc %d %s, %d wrong", rc, comm_error(nc), bad);
    cudaFree(ds);
    cudaFree(dr);
    free(hs);
    free(hr);
    free(sc);
    free(sd);
    free(rcn);
    free(rd);

    comm *half = NULL;
    rc = comm_split(nc, r % 2, r, &half);
    CHECK(rc == 0 && half && half->size == (n + 1 - r % 2) / 2 && half->rank == r / 2,
          "split: rc %d %s", rc, comm_error(nc));
    if (half) {
        float one = 1, *d1 = dev_copy(&one, sizeof one);
        rc = comm_allreduce_sum(half, d1, 1, COMM_F32);
        host_copy(&one, d1, sizeof one);
        CHECK(rc == 0 && one == (float)half->size, "allreduce in split: %g", one);
        cudaFree(d1);
        comm_free(half);
    }
    int32_t msg = r == 0 ? 1234 : 0;   /* host buffer */
    CHECK(comm_bcast_idle(nc, &msg, sizeof msg, 0) == 0 && msg == 1234, "bcast_idle %d", (int)msg);

    cudaFree(df);
    cudaFree(dh);
    cudaFree(dm);
    cudaFree(da);
    cudaFree(db);
    free(all);
    free(f);
    free(h);
}

int main(int argc, char **argv) {
    char err[256];
    comm *w = NULL;
    if (comm_world_init(&argc, &argv, 0, &w, err, sizeof err)) {
        fprintf(stderr, "comm_world_init: %s\n", err);
        return 1;
    }
    g_rank = w->rank;
    int lr = 0, ls = 1, ndev = 0;
    comm_local_rank(w, &lr, &ls);
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess) ndev = 0;
    comm *nc = NULL;
    int rc = comm_nccl_new(w, ndev ? lr % ndev : 0, &nc, err, sizeof err);
    if (ndev == 0 || ndev < ls) {
        int ok = rc == COMM_ERR_UNSUPPORTED && nc == NULL && strstr(err, "no GPU");
        if (ndev && ndev < ls) ok = 1;   /* GPUs exist but fewer than ranks: NCCL may refuse */
        if (nc) comm_free(nc);
        comm_world_finalize();
        if (!ok) {
            fprintf(stderr, "FAIL rank %d: no GPU but comm_nccl_new gave %d: %s\n", g_rank, rc, err);
            return 1;
        }
        if (g_rank == 0) {
            if (e != cudaSuccess)
                printf("skip: no GPU (cudaGetDeviceCount: %s (error %d))\n",
                       cudaGetErrorString(e), (int)e);
            else printf("skip: %d GPUs for %d ranks on this node\n", ndev, ls);
        }
        return 77;
    }
    CHECK(rc == 0 && nc && strcmp(nc->i->name, "nccl") == 0, "comm_nccl_new: rc %d %s", rc, err);
    if (nc) {
        test_ops(nc);
        comm_free(nc);
    }
    int c[2] = { g_pass, g_fail };
    /* totals over ranks through the host comm, which test_comm checks on its own */
    comm_allreduce_sum(w, c, 2, COMM_I32);
    comm_world_finalize();
    if (g_rank == 0) printf("%d passed, %d failed\n", c[0], c[1]);
    return c[1] ? 1 : 0;
}
