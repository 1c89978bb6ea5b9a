/* launch/cmd_info.c — `sampan info MODEL`: what a GGUF file holds. File facts, the model's
 * hyper-parameters (or why it cannot be run), the tokenizer, and tensor types with their counts
 * and byte totals. --kv dumps every metadata key. A corrupt file gets gguf's one-line error. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "gguf.h"
#include "kern.h"
#include "model.h"
#include "tok.h"

static void print_value(const gguf_value *v) {
    switch (v->type) {
    case GGUF_TYPE_STRING:
        printf("\"%.*s\"", (int)(v->v.str.len > 80 ? 80 : v->v.str.len), v->v.str.ptr);
        if (v->v.str.len > 80) printf("...(%" PRIu64 " bytes)", v->v.str.len);
        break;
    case GGUF_TYPE_ARRAY:
        printf("[%s x %" PRIu64 "]", gguf_type_name(v->v.arr.elem_type), v->v.arr.n);
        break;
    case GGUF_TYPE_FLOAT32: case GGUF_TYPE_FLOAT64: printf("%g", v->v.f64); break;
    case GGUF_TYPE_BOOL: printf("%s", v->v.b ? "true" : "false"); break;
    case GGUF_TYPE_INT8: case GGUF_TYPE_INT16: case GGUF_TYPE_INT32: case GGUF_TYPE_INT64:
        printf("%" PRId64, v->v.i64);
        break;
    default: printf("%" PRIu64, v->v.u64); break;
    }
}

int cmd_info(int argc, char **argv) {
    const char *path = NULL;
    int dump_kv = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--kv")) dump_kv = 1;
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            puts("usage: sampan info MODEL [--kv]");
            return 0;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            cli_error("info: unknown option '%s'", argv[i]);
            return 2;
        } else path = argv[i];
    }
    if (!path) {
        cli_error("info: a MODEL path is required");
        return 2;
    }
    char err[512];
    gguf_ctx *g = NULL;
    if (gguf_open(path, &g, err, sizeof err) != GGUF_OK) {
        cli_error("%s", err);
        return 1;
    }
    printf("file: %s\n", path);
    printf("gguf: version %u, %" PRId64 " metadata keys, %" PRId64 " tensors, alignment %" PRIu64
           ", %zu bytes\n",
           gguf_version(g), gguf_n_kv(g), gguf_n_tensors(g), gguf_alignment(g), gguf_file_size(g));
    gguf_str an = { "?", 1 };
    gguf_get_str(g, "general.architecture", &an, err, sizeof err);
    gguf_str name = { "", 0 };
    gguf_get_str(g, "general.name", &name, err, sizeof err);
    printf("architecture: %.*s  name: %.*s\n", (int)an.len, an.ptr, (int)name.len, name.ptr);
    if (dump_kv)
        for (int64_t i = 0; i < gguf_n_kv(g); i++) {
            gguf_str k = gguf_kv_key(g, i);
            printf("  %.*s = ", (int)k.len, k.ptr);
            print_value(gguf_kv_value(g, i));
            putchar('\n');
        }

    /* tensor types: count and bytes per type */
    int64_t count[QT_COUNT + 1] = { 0 };
    uint64_t bytes[QT_COUNT + 1] = { 0 }, total = 0;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        int ty = t->type >= 0 && t->type < QT_COUNT ? t->type : QT_COUNT;
        count[ty]++;
        bytes[ty] += t->nbytes;
        total += t->nbytes;
    }
    printf("tensors: %" PRId64 ", %.2f MiB\n", gguf_n_tensors(g), (double)total / (1 << 20));
    for (int ty = 0; ty <= QT_COUNT; ty++) {
        if (!count[ty]) continue;
        const qt_traits *tr = qt_get(ty);
        printf("  %-6s %6" PRId64 " tensors %12" PRIu64 " bytes\n", tr ? tr->name : "other",
               count[ty], bytes[ty]);
    }

    tok *tk = NULL;
    if (tok_load(g, &tk, err, sizeof err) == 0) {
        printf("tokenizer: %s (pre %s), %d tokens, bos %d, eos %d, add_bos %d\n",
               tok_kind_of(tk) == TOK_SPM ? "llama/sentencepiece" : "gpt2/byte-level BPE",
               tok_pre_name(tk), tok_n_vocab(tk), tok_bos(tk), tok_eos(tk), tok_add_bos(tk));
        tok_free(tk);
    } else {
        printf("tokenizer: none usable (%s)\n", err);
    }
    gguf_close(g);

    model *m = NULL;
    model_opts mo = { .n_threads = 1, .no_pack = 1 };   /* metadata only: no packed copies */
    if (model_load(path, &mo, &m, err, sizeof err) == 0) {
        const model_cfg *c = &m->cfg;
        printf("model: %s, vocab %d, dim %d, layers %d, heads %d, kv heads %d, head dim %d, "
               "ffn %d, context %d\n",
               c->arch_name, c->n_vocab, c->dim, c->n_layers, c->n_heads, c->n_kv_heads,
               c->head_dim, c->ffn_dim, c->n_ctx_train);
        static const char *const scaling[] = { "none", "linear", "yarn" };
        printf("rope: %d dims, base %g, %s pairing%s, scaling %s", c->n_rot, c->rope_base,
               c->rope_neox ? "neox" : "normal", m->rope_freqs ? ", rope_freqs" : "",
               scaling[c->rope_scaling]);
        if (c->rope_scaling != ROPE_SCALING_NONE) printf(" x%g", c->rope_factor);
        if (c->rope_scaling == ROPE_SCALING_YARN) printf(" of %d positions", c->rope_ctx_orig);
        printf("; rms eps %g; qkv bias %s; output %s\n", c->norm_eps, c->qkv_bias ? "yes" : "no",
               c->tied_output ? "tied to token_embd" : "separate");
        if (c->attn == ATTN_MLA)
            printf("attention: multi-head latent, q_lora_rank %d%s, kv_lora_rank %d, query/key "
                   "head %d (%d + %d rope), value head %d, scale %g\n", c->q_lora,
                   c->q_lora ? "" : " (plain attn_q)", c->kv_lora, c->head_dim,
                   c->head_dim - c->n_rot, c->n_rot, c->v_dim, (double)c->attn_scale);
        if (c->n_expert)
            printf("moe: %d experts (%d used, %d shared), expert ffn %d, groups %d (%d used), "
                   "gating %s%s, weights %sx %g; %d leading dense blocks\n", c->n_expert,
                   c->n_expert_used, c->n_expert_shared, c->expert_ffn, c->n_group,
                   c->n_group_used, c->gating == GATE_SIGMOID ? "sigmoid" : "softmax",
                   m->layers[c->n_dense < c->n_layers ? c->n_dense : 0].exp_bias
                       ? " + selection bias" : "",
                   c->expert_norm ? "normalised " : "", (double)c->expert_scale, c->n_dense);
        int kvv = model_kv_values(m);
        printf("kv cache: %d values per token and layer (%s), %d bytes f16 / %d bytes f32; "
               "%zu bytes f16 per token\n", kvv,
               c->attn == ATTN_MLA ? "the latent and the RoPE key" : "K and V", kvv * 2, kvv * 4,
               (size_t)kvv * 2 * (size_t)c->n_layers * (size_t)m->shard.n_kv_heads);
        printf("weights: %.2f MiB used for inference\n", (double)m->weight_bytes / (1 << 20));
        model_free(m);
    } else {
        printf("model: cannot run: %s\n", err);
    }
    return 0;
}
