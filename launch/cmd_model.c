/* launch/cmd_model.c — `sampan model synth` (make a deterministic random-weight GGUF: llama and
 * its relatives, or deepseek2) and `sampan model quantize IN OUT TYPE` (convert the matrices to
 * TYPE or a mix's types as llama.cpp's quantizer chooses them; what it leaves alone is copied as
 * it is; all metadata is copied; one line per tensor says what became of it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "gguf.h"
#include "kern.h"
#include "synth.h"

static int model_synth(int argc, char **argv) {
    const char *out = NULL, *arch = NULL, *shape = "tiny", *type_name = "F32";
    long layers = 0, seed = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            puts("usage: sampan model synth -o FILE [--arch ARCH] --shape SHAPE\n"
                 "                          [--type TYPE (any quantize type, or the mixes Q4_K_M, Q5_K_M)]\n"
                 "                          [--layers N] [--seed S]\n"
                 "  --arch llama (the default; the shape name picks gemma3 or qwen3):\n"
                 "      tiny, small, tinyllama-1.1b, llama-7b, tiny-gemma3[-swa|-linear], tiny-qwen3[-linear|-yarn]\n"
                 "  --arch deepseek2 (MLA attention + MoE; router, exp_probs_b and norms stay F32):\n"
                 "      tiny     C 32, 3 blocks, 4 heads, q/kv LoRA 24/16, qk 16+8, v 16, 1 dense (FFN 64),\n"
                 "               8 experts of 16, top 2, 1 shared, sigmoid + exp_probs_b, norm, scale 2.5\n"
                 "      v2-lite  DeepSeek-V2-Lite: C 2048, 27 blocks, 16 heads, plain attn_q, kv LoRA 512,\n"
                 "               qk 128+64, v 128, 1 dense (FFN 10944), 64 experts of 1408, top 6, 2 shared,\n"
                 "               softmax, scale 1, vocab 102400, YaRN 40x4096 (9.5 GB at Q4_K; --layers 4: 1.3 GB)\n"
                 "      v3-mini  V3's structure at C 2048: 9 blocks, 16 heads, q/kv LoRA 512/256, qk 128+64,\n"
                 "               v 128, 3 dense (FFN 5632), 64 experts of 768 in 8 groups (4 kept), top 8,\n"
                 "               1 shared, sigmoid + exp_probs_b, norm, scale 2.5, vocab 32000, YaRN 40x4096\n"
                 "               (1.2 GB at Q4_K, 1.3 GB at Q4_K_M)\n"
                 "  --layers N    overrides the block count (deepseek2 keeps at most N dense blocks)");
            return 0;
        }
        if (!(v = cli_arg(argc, argv, &i))) return 2;
        if (!strcmp(a, "-o")) out = v;
        else if (!strcmp(a, "--arch")) arch = v;
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
    if (arch && strcmp(arch, "llama") && strcmp(arch, "gemma3") && strcmp(arch, "qwen3") &&
        strcmp(arch, "deepseek2")) {
        cli_error("model synth: unknown --arch '%s' (llama, gemma3, qwen3, deepseek2)", arch);
        return 2;
    }
    char err[512];
    if (synth_model_arch(out, arch, shape, type, (int)layers, (uint64_t)seed, err, sizeof err)) {
        cli_error("%s", err);
        return 1;
    }
    fprintf(stderr, "sampan: wrote %s (%s%s%s, %s)\n", out, arch ? arch : "", arch ? " " : "", shape,
            type_name);
    return 0;
}

/* Whether llama.cpp's quantizer converts this tensor: matrices (3-D expert stacks included)
 * named *weight, but not norms and not the MoE router (ffn_gate_inp), which it keeps as they
 * are; vectors (exp_probs_b.bias among them) never. */
static int model__converts(const gguf_tensor *t, const char *name) {
    size_t n = strlen(name);
    return t->n_dims >= 2 && n >= 6 && !strcmp(name + n - 6, "weight") &&
           !strstr(name, "_norm.weight") && !strstr(name, "ffn_gate_inp.weight");
}

/* "[32, 16, 8]" */
static void model__dims(char *buf, size_t n, const gguf_tensor *t) {
    size_t used = 0;
    buf[0] = 0;
    for (uint32_t d = 0; d < t->n_dims && used < n; d++) {
        int w = snprintf(buf + used, n - used, "%s%lld%s", d ? ", " : "[", (long long)t->ne[d],
                         d + 1 == t->n_dims ? "]" : "");
        if (w < 0) break;
        used += (size_t)w;
    }
}

/* <arch>.KEY as a u32; 0 when absent or not an integer */
static uint32_t model__arch_u32(const gguf_ctx *g, const char *key) {
    gguf_str arch;
    char full[128], err[128];
    uint32_t v = 0;
    if (gguf_get_str(g, "general.architecture", &arch, err, sizeof err) != GGUF_OK) return 0;
    snprintf(full, sizeof full, "%.*s.%s", (int)arch.len, arch.ptr, key);
    if (gguf_get_u32(g, full, &v, err, sizeof err) != GGUF_OK) return 0;
    return v;
}

static int model_quantize(int argc, char **argv) {
    if (argc != 4) {
        cli_error("usage: sampan model quantize IN OUT TYPE (a type, or the mixes Q4_K_M, Q5_K_M)");
        return 2;
    }
    int type = synth_type_from_name(argv[3]);
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
    /* the mixes' per-layer and 8-expert rules need the block and expert counts */
    const int n_layers = (int)model__arch_u32(g, "block_count");
    const int n_expert = (int)model__arch_u32(g, "expert_count");
    for (int64_t i = 0; i < gguf_n_kv(g); i++) gguf_writer_copy_kv(w, g, i);
    gguf_writer_set_u32(w, "general.quantization_version", 2);
    if (type >= SYNTH_MIX_BASE) gguf_writer_set_u32(w, "general.file_type", (uint32_t)(type - SYNTH_MIX_BASE));
    uint64_t bytes_in = 0, bytes_out = 0;
    int64_t n_of[QT_COUNT] = { 0 };
    for (int64_t i = 0; i < nt; i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        char name[256], dims[96], why[160] = "";
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        model__dims(dims, sizeof dims, t);
        const qt_traits *src = qt_get(t->type);
        int to = t->type;
        if (!model__converts(t, name)) {
            snprintf(why, sizeof why, " (kept: %s)", t->n_dims < 2 ? "a vector"
                     : strstr(name, "ffn_gate_inp") ? "the MoE router" : "a norm or not a weight");
        } else if (!src || !src->to_float) {
            snprintf(why, sizeof why, " (kept: no conversion from %s)", gguf_ttype_name(t->type));
        } else {
            const int want = synth_mix_tensor_type(type, name, n_layers, n_expert);
            to = synth_fallback_type(want, t->ne[0]);
            if (to != want)
                snprintf(why, sizeof why, " (fallback: rows of %lld do not divide into %s's blocks of %d)",
                         (long long)t->ne[0], qt_get(want)->name, (int)qt_get(want)->block_size);
        }
        printf("[%3lld/%3lld] %-32s %-16s %-6s -> %s%s\n", (long long)i + 1, (long long)nt, name, dims,
               gguf_ttype_name(t->type), gguf_ttype_name(to), why);
        bytes_in += t->nbytes;
        if (to >= 0 && to < QT_COUNT) n_of[to]++;
        if (to == t->type) {
            gguf_writer_add_tensor(w, name, t->type, (int)t->n_dims, t->ne, t->data, t->nbytes);
            bytes_out += t->nbytes;
            continue;
        }
        const qt_traits *dst = qt_get(to);
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
        bytes_out += drs * (size_t)rows;
    }
    if (gguf_writer_write(w, argv[2], err, sizeof err) != GGUF_OK) {
        cli_error("%s", err);
        goto out;
    }
    char counts[512] = "";
    for (int t = 0, used = 0; t < QT_COUNT; t++) {
        if (!n_of[t] || used >= (int)sizeof counts) continue;
        int n = snprintf(counts + used, sizeof counts - (size_t)used, "%s%lld %s", used ? ", " : "",
                         (long long)n_of[t], gguf_ttype_name(t));
        if (n > 0) used += n;
    }
    fprintf(stderr, "sampan: wrote %s (%s): %lld tensors (%s), %.2f MiB of tensor data from %.2f MiB\n",
            argv[2], argv[3], (long long)nt, counts, (double)bytes_out / 1048576.0,
            (double)bytes_in / 1048576.0);
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
