/* tests/model/test_backend.c — the backend registry (runtime/backend.c):
 *   1. a table lacking any one required slot is refused, the message naming that op;
 *      a table of another interface version is refused;
 *   2. the CPU backend passes; an unknown name is refused with the names that exist;
 *   3. "cuda" on a machine without a device (or a build without the CUDA module) is one line naming
 *      the missing device, and "auto" then falls back to the CPU.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"

static int n_pass, n_fail;

static void check(int ok, const char *what, const char *detail) {
    if (ok) n_pass++;
    else n_fail++;
    printf("%s: %s%s%s\n", ok ? "ok" : "FAIL", what, detail ? " -- " : "", detail ? detail : "");
}

int main(void) {
    char err[256];
    kern_init(NULL);
    backend_opts o = { "cpu", 1, -1 };
    backend *b = backend_new(&o, err, sizeof err);
    check(b != NULL, "cpu backend", b ? NULL : err);
    if (!b) return 1;
    check(backend_check(b->i, err, sizeof err) == 0, "cpu table passes the check", err);

    static const char *required[] = { "free", "alloc", "buf_free", "upload", "download",
                                      "supports", "batch", "embed", "rmsnorm", "add_bias",
                                      "rope", "kv_write", "attention", "swiglu", "add",
                                      "matmul", "matmul_n", "interleave", "logits" };
    /* null each function pointer of a copy in turn: the required ones must be named */
    size_t n_ptr = (sizeof(backend_i) - offsetof(backend_i, free)) / sizeof(void (*)(void));
    int named = 0;
    for (size_t k = 0; k < n_ptr; k++) {
        backend_i t = *b->i;
        void (**slot)(void) = (void (**)(void))((char *)&t + offsetof(backend_i, free)) + k;
        *slot = NULL;
        err[0] = 0;
        if (backend_check(&t, err, sizeof err) == 0) continue;   /* an optional slot */
        for (size_t r = 0; r < sizeof required / sizeof required[0]; r++) {
            char want[64];
            snprintf(want, sizeof want, "lacks the op '%s'", required[r]);
            if (strstr(err, want)) named++;
        }
    }
    char d[64];
    snprintf(d, sizeof d, "%d of %zu named", named, sizeof required / sizeof required[0]);
    check(named == (int)(sizeof required / sizeof required[0]),
          "each missing required slot refused, naming its op", d);
    backend_i t = *b->i;
    t.version = BACKEND_VERSION + 1;
    check(backend_check(&t, err, sizeof err) != 0 && strstr(err, "version"), "other version refused", err);
    b->i->free(b);

    o.name = "tpu";
    check(backend_new(&o, err, sizeof err) == NULL && strstr(err, "unknown backend 'tpu'"),
          "unknown backend refused", err);
    o.name = "cuda";
    b = backend_new(&o, err, sizeof err);
    if (b) {
        printf("skip: a CUDA device is visible; the no-device message is not checked\n");
        b->i->free(b);
    } else {
        check(strchr(err, '\n') == NULL && strstr(err, "cuda") != NULL &&
              (strstr(err, "no CUDA device") || strstr(err, "no CUDA support") ||
               strstr(err, "no CUDA backend module")),
              "cuda without a device: one line naming it", err);
        o.name = "auto";
        b = backend_new(&o, err, sizeof err);
        check(b && !strcmp(b->i->name, "cpu"), "auto without a device is the cpu", b ? b->i->name : err);
        if (b) b->i->free(b);
    }
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail != 0;
}
