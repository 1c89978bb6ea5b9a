/* launch/cmd_model.c — `sampan model synth` (make a deterministic random-weight Llama GGUF) and
 * `sampan model quantize IN OUT TYPE` (convert every matrix to TYPE; vectors stay F32; all
 * metadata is copied). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "gguf.h"
#include "kern.h"
#include "synth.h"

static int model_synth(int argc, char **argv) {
    const char *out = NULL, *shape = "tiny", *type_name = "F32";
    long layers = 0, seed = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            puts("usage: sampan model synth -o FILE --shape SHAPE (tiny, small, tinyllama-1.1b, llama-7b, tiny-gemma3[-swa|-linear],\n"
                 "                              tiny-qwen3[-linear|-yarn])\n"
                 "                          [--type TYPE (any quantize type, or the mixes Q4_K_M, Q5_K_M)]\n"
                 "                          [--layers N] [--seed S]");
            return 0;
        }
        if (!(v = cli_arg(argc, argv, &i))) return 2;
        if (!strcmp(a, "-o")) out = v;
        else if (!strcmp(a, "--shape")) shape = v;
        else if (!strcmp(a, "--type")) type_name = v;
        else if (!strcmp(a, "--layers")) { if (cli_int(a, v, 1, 1024, &layers)) return 2; }
        else if (!strcmp(a, "--seed")) { if (cli_int(a, v, 0, 0x7fffffffffffffffL, &seed)) return 2; }
        else {
            cli_error("model synth: unknown option '%s'", a);
            return 2;
        }
    }
    if (!out) {
        cli_error("model synth: -o FILE is required");
        return 2;
    }
    int type = synth_type_from_name(type_name);
    if (type < 0) {
        char names[256];
        synth_type_names(names, sizeof names);
        cli_error("model synth: unknown type '%s' (%s)", type_name, names);
        return 2;
    }
    char err[512];
    if (synth_model(out, shape, type, (int)layers, (uint64_t)seed, err, sizeof err)) {
        cli_error("%s", err);
        return 1;
    }
    fprintf(stderr, "sampan: wrote %s (%s, %s)\n", out, shape, type_name);
    return 0;
}

static int model_quantize(int argc, char **argv) {
    if (argc != 4) {
        cli_error("usage: sampan model quantize IN OUT TYPE");
        return 2;
    }
    int type = synth_type_from_name(argv[3]);
    if (type >= SYNTH_MIX_BASE) {
        cli_error("model quantize: '%s' is a mix of types: quantize takes one type (the mixes are "
                  "for `sampan model synth`)", argv[3]);
        return 2;
    }
    if (type < 0) {
        char names[256];
        synth_type_names(names, sizeof names);
        cli_error("model quantize: unknown type '%s' (%s)", argv[3], names);
        return 2;
    }
    char err[512];
    gguf_ctx *g = NULL;
    if (gguf_open(argv[1], &g, err, sizeof err) != GGUF_OK) {
        cli_error("%s", err);
        return 1;
    }
    gguf_writer *w = gguf_writer_new();
    int64_t nt = gguf_n_tensors(g);
    void **bufs = calloc((size_t)nt + 1, sizeof *bufs);
    int rc = 1;
    if (!w || !bufs) {
        cli_error("model quantize: out of memory");
        goto out;
    }
    for (int64_t i = 0; i < gguf_n_kv(g); i++) gguf_writer_copy_kv(w, g, i);
    gguf_writer_set_u32(w, "general.quantization_version", 2);
    for (int64_t i = 0; i < nt; i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        const qt_traits *src = qt_get(t->type), *dst = qt_get(type);
        int to = type;
        if (t->n_dims < 2 || !dst || (dst->block_size > 1 && t->ne[0] % dst->block_size)) to = t->type;
        if (to != type && t->n_dims >= 2 && t->ne[0] % 32 == 0) to = QT_Q8_0;
        if (to == t->type || !src || !src->to_float) {
            gguf_writer_add_tensor(w, name, t->type, (int)t->n_dims, t->ne, t->data, t->nbytes);
            continue;
        }
        dst = qt_get(to);
        int64_t cols = t->ne[0], rows = 1;
        for (uint32_t d = 1; d < t->n_dims; d++) rows *= t->ne[d];
        size_t srs = qt_row_size(t->type, cols), drs = qt_row_size(to, cols);
        char *data = malloc(drs * (size_t)rows);
        float *row = malloc((size_t)cols * sizeof *row);
        bufs[i] = data;
        if (!data || !row) {
            free(row);
            cli_error("model quantize: out of memory for '%s'", name);
            goto out;
        }
        for (int64_t r = 0; r < rows; r++) {
            src->to_float((const char *)t->data + r * srs, row, cols);
            if (to == QT_F32) memcpy(data + r * drs, row, drs);
            else dst->from_float(row, data + r * drs, cols);
        }
        free(row);
        gguf_writer_add_tensor(w, name, to, (int)t->n_dims, t->ne, data, drs * (size_t)rows);
    }
    if (gguf_writer_write(w, argv[2], err, sizeof err) != GGUF_OK) {
        cli_error("%s", err);
        goto out;
    }
    fprintf(stderr, "sampan: wrote %s (%s)\n", argv[2], argv[3]);
    rc = 0;
out:
    for (int64_t i = 0; bufs && i < nt; i++) free(bufs[i]);
    free(bufs);
    gguf_writer_free(w);
    gguf_close(g);
    return rc;
}

int cmd_model(int argc, char **argv) {
    if (argc < 2) {
        cli_error("usage: sampan model synth|quantize ...");
        return 2;
    }
    if (!strcmp(argv[1], "synth")) return model_synth(argc - 1, argv + 1);
    if (!strcmp(argv[1], "quantize")) return model_quantize(argc - 1, argv + 1);
    cli_error("model: unknown subcommand '%s' (synth, quantize)", argv[1]);
    return 2;
}
