/* tests/gguf/gguf_check.c — opens GGUF files with gguf_open and walks everything in them.
 *
 *   gguf_check FILE...
 * On success prints one summary line per file on stdout; on the first failure prints the
 * reader's one-line error on stderr and exits 1. The corrupt-corpus runner (corrupt.py) uses it
 * as a stand-in for `sampan info`, so it must never crash on a bad file.
 */
#include "gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads every element of v (nested arrays included); returns a checksum so nothing is elided. */
static uint64_t walk(const gguf_value *v) {
    uint64_t h = (uint64_t)v->type;
    if (v->type == GGUF_TYPE_STRING) return h + v->v.str.len;
    if (v->type != GGUF_TYPE_ARRAY) return h + v->v.u64;
    for (uint64_t i = 0; i < v->v.arr.n; i++) {
        switch (v->v.arr.elem_type) {
        case GGUF_TYPE_STRING: h += gguf_arr_str(v, i).len; break;
        case GGUF_TYPE_ARRAY: h += walk(gguf_arr_nested(v, i)); break;
        default: h += (uint64_t)gguf_arr_i64(v, i); break;
        }
    }
    return h;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: gguf_check FILE...\n");
        return 2;
    }
    for (int a = 1; a < argc; a++) {
        gguf_ctx *g = NULL;
        char err[512];
        if (gguf_open(argv[a], &g, err, sizeof err) != GGUF_OK) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        uint64_t h = 0, bytes = 0;
        for (int64_t i = 0; i < gguf_n_kv(g); i++) h += walk(gguf_kv_value(g, i));
        for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
            const gguf_tensor *t = gguf_tensor_at(g, i);
            const uint8_t *d = t->data;
            h += d[0] + d[t->nbytes - 1];
            bytes += t->nbytes;
        }
        printf("%s: GGUF v%u, %lld kvs, %lld tensors (%llu bytes), alignment %llu, checksum %llx\n",
               argv[a], gguf_version(g), (long long)gguf_n_kv(g), (long long)gguf_n_tensors(g),
               (unsigned long long)bytes, (unsigned long long)gguf_alignment(g),
               (unsigned long long)h);
        gguf_close(g);
    }
    return 0;
}
