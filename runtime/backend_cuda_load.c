/* runtime/backend_cuda_load.c — the CUDA backend's entry points, as a module opened on first
 * use.
 *
 * The backend (kernels/cuda/: the kernels, backend_cuda.cu and cuBLAS) is built as the shared
 * module libsampan-cuda.so when the CUDA toolkit is found. It is not linked into `sampan`:
 * cuBLAS and cuBLASLt alone add ~200 MB of resident memory to every process that links them,
 * which CPU runs, login-node tools and every rank of a CPU job would pay for nothing. The
 * first call here opens the module (dlopen) from, in order: $SAMPAN_CUDA_MODULE; beside the
 * executable; its kernels/cuda/ (the build tree) and ../kernels/cuda/ (tests); ../lib/sampan/
 * (an installed tree); then the loader's own search path. The module's sampan_cuda_abi must
 * equal BACKEND_VERSION. A build without CUDA, or a module that cannot be opened, means no
 * CUDA backend: the constructor says why in one line, and there are 0 devices.
 */
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "backend_cuda.h"

#define CUDA_MODULE "libsampan-cuda.so"

static struct {
    pthread_once_t once;
    void *so;
    backend *(*new_fn)(int n_threads, int device, char *err, size_t errlen);
    int (*devices)(void);
    int (*info)(const backend *b, backend_cuda_props *out, char *err, size_t errlen);
    char why[600];   /* why there is no module */
} cm = { PTHREAD_ONCE_INIT, NULL, NULL, NULL, NULL, "" };

static void *cm__try(const char *path, char *first_err, size_t len) {
    void *so = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!so && !first_err[0]) {
        const char *e = dlerror();
        snprintf(first_err, len, "%.380s", e ? e : path);
    }
    return so;
}

static void cm__open(void) {
    char dir[PATH_MAX] = "", path[PATH_MAX + 64], first[400] = "";
    const char *env = getenv("SAMPAN_CUDA_MODULE");
    void *so = NULL;
    if (env && *env) {
        so = cm__try(env, first, sizeof first);
    } else {
        ssize_t n = readlink("/proc/self/exe", dir, sizeof dir - 1);
        if (n > 0) {
            dir[n] = 0;
            char *slash = strrchr(dir, '/');
            if (slash) *slash = 0;
            static const char *const rel[] = { "", "/kernels/cuda", "/../kernels/cuda",
                                               "/../lib/sampan" };
            for (size_t i = 0; i < sizeof rel / sizeof rel[0] && !so; i++) {
                snprintf(path, sizeof path, "%s%s/" CUDA_MODULE, dir, rel[i]);
                if (access(path, F_OK) == 0) so = cm__try(path, first, sizeof first);
            }
        }
        if (!so) so = cm__try(CUDA_MODULE, first, sizeof first);
    }
    if (!so) {
        snprintf(cm.why, sizeof cm.why, "no CUDA backend module (%.400s; a build without the CUDA "
                 "toolkit has none: rebuild with it and -Dcuda=enabled)", first);
        return;
    }
    const int *abi = dlsym(so, "sampan_cuda_abi");
    *(void **)&cm.new_fn = dlsym(so, "sampan_cuda_new");
    *(void **)&cm.devices = dlsym(so, "sampan_cuda_devices");
    *(void **)&cm.info = dlsym(so, "sampan_cuda_info");
    if (!abi || !cm.new_fn || !cm.devices || !cm.info || *abi != BACKEND_VERSION) {
        snprintf(cm.why, sizeof cm.why, "the CUDA backend module is not of this build (interface "
                 "%d, need %d): rebuild it", abi ? *abi : -1, BACKEND_VERSION);
        cm.new_fn = NULL;
        dlclose(so);
        return;
    }
    cm.so = so;   /* kept open for the life of the process */
}

static int cm__ready(void) {
    pthread_once(&cm.once, cm__open);
    return cm.so != NULL;
}

int backend_cuda_devices(void) { return cm__ready() ? cm.devices() : 0; }

backend *backend_cuda_new(int n_threads, int device, char *err, size_t errlen) {
    if (!cm__ready()) {
        snprintf(err, errlen, "backend cuda: %s", cm.why);
        return NULL;
    }
    return cm.new_fn(n_threads, device, err, errlen);
}

int backend_cuda_info(const backend *b, backend_cuda_props *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (!cm__ready()) {
        snprintf(err, errlen, "backend cuda: %s", cm.why);
        return -1;
    }
    return cm.info(b, out, err, errlen);
}
