/* runtime/backend.c — the backend registry: a backend by name, checked before use.
 *
 * "cpu" is always here; "cuda" is the module libsampan-cuda.so (kernels/cuda/, built when
 * the CUDA toolkit is found), opened on first use by runtime/backend_cuda_load.c, which says
 * why when there is none; "auto" is cuda when a device is visible, else cpu; others can be
 * added with backend_register (tests). A backend whose table lacks a required slot, or has
 * another version, is refused with the slot's name.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "backend.h"

/* the required slots, by offset in backend_i, with the op names used in messages */
#define SLOT(f) { offsetof(backend_i, f), #f }
static const struct {
    size_t off;
    const char *name;
} be__required[] = {
    SLOT(free),      SLOT(alloc),      SLOT(buf_free), SLOT(upload),    SLOT(download),
    SLOT(supports),  SLOT(batch),      SLOT(embed),    SLOT(rmsnorm),   SLOT(add_bias),
    SLOT(rope),      SLOT(kv_write),   SLOT(attention), SLOT(swiglu),   SLOT(add),
    SLOT(matmul),    SLOT(matmul_n),   SLOT(interleave), SLOT(logits),
};
#undef SLOT

int backend_check(const backend_i *i, char *err, size_t errlen) {
    if (i->version != BACKEND_VERSION) {
        snprintf(err, errlen, "backend %s: interface version %d, this build needs %d", i->name,
                 i->version, BACKEND_VERSION);
        return -1;
    }
    for (size_t k = 0; k < sizeof be__required / sizeof be__required[0]; k++) {
        void *slot;
        memcpy(&slot, (const char *)i + be__required[k].off, sizeof slot);
        if (!slot) {
            snprintf(err, errlen, "backend %s lacks the op '%s'", i->name, be__required[k].name);
            return -1;
        }
    }
    return 0;
}

/* backends registered at run time (backend_register) */
static struct {
    const char *name;
    backend_ctor ctor;
} be__extra[8];

int backend_register(const char *name, backend_ctor ctor) {
    if (!strcmp(name, "cpu") || !strcmp(name, "cuda") || !strcmp(name, "auto")) return -1;
    for (size_t k = 0; k < sizeof be__extra / sizeof be__extra[0]; k++) {
        if (be__extra[k].name && !strcmp(be__extra[k].name, name)) return -1;
        if (!be__extra[k].name) {
            be__extra[k].name = name;
            be__extra[k].ctor = ctor;
            return 0;
        }
    }
    return -1;
}

static backend_ctor be__find_extra(const char *name) {
    for (size_t k = 0; k < sizeof be__extra / sizeof be__extra[0] && be__extra[k].name; k++)
        if (!strcmp(be__extra[k].name, name)) return be__extra[k].ctor;
    return NULL;
}

int backend_available(const char *name) {
    if (!strcmp(name, "cpu")) return 1;
    if (!strcmp(name, "cuda")) return backend_cuda_devices() > 0;
    return be__find_extra(name) != NULL;
}

backend *backend_new(const backend_opts *o, char *err, size_t errlen) {
    const char *name = o && o->name ? o->name : "cpu";
    int nth = o ? o->n_threads : 0, dev = o ? o->device : -1;
    if (!strcmp(name, "auto")) name = backend_cuda_devices() > 0 ? "cuda" : "cpu";
    backend *b;
    if (!strcmp(name, "cpu")) {
        b = backend_cpu_new(nth, err, errlen);
    } else if (!strcmp(name, "cuda")) {
        b = backend_cuda_new(nth, dev, err, errlen);
    } else if (be__find_extra(name)) {
        b = be__find_extra(name)(o, err, errlen);
    } else {
        snprintf(err, errlen, "unknown backend '%s' (cpu, cuda or auto)", name);
        return NULL;
    }
    if (!b) return NULL;
    if (backend_check(b->i, err, errlen)) {
        b->i->free(b);
        return NULL;
    }
    return b;
}
