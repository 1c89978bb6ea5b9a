/* tests/quant/test_dequant.c — our to_float against tensors dequantized by an independent
 * implementation: $SAMPAN_SHARED/reference/dequant/index.json names, for each block type, a
 * tensor of a quantized model in $SAMPAN_SHARED/models and a .f32 file with its values.
 *
 * The tensor is located by a small self-contained GGUF walk (this test must not depend on
 * runtime/gguf.c, whose correctness is tested on its own): header, key/value pairs skipped by
 * type (general.alignment read), tensor infos, data section aligned. Pass criterion per tensor:
 * |ours - ref| <= 1e-6 * max(1, |ref|) for every element.
 * Exits 77 (skip) when the shared data is absent.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kern.h"

static int g_pass, g_fail, g_skip;

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    const long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = 0;
        *len = (size_t)n;
    }
    return buf;
}

/* ---- minimal GGUF walk over a FILE ---------------------------------------------------- */

typedef struct {
    FILE *f;
    int err;
} rd;

static uint64_t rd_u(rd *r, int bytes) {
    uint64_t v = 0;
    uint8_t b[8];
    if (fread(b, 1, (size_t)bytes, r->f) != (size_t)bytes) {
        r->err = 1;
        return 0;
    }
    for (int i = bytes - 1; i >= 0; i--) v = (v << 8) | b[i];
    return v;
}

/* reads a GGUF string into buf (truncated to cap-1) */
static void rd_str(rd *r, char *buf, size_t cap) {
    const uint64_t n = rd_u(r, 8);
    if (r->err || n > (1u << 30)) {
        r->err = 1;
        return;
    }
    size_t keep = n < cap - 1 ? (size_t)n : cap - 1;
    if (fread(buf, 1, keep, r->f) != keep) r->err = 1;
    buf[keep] = 0;
    if (n > keep && fseek(r->f, (long)(n - keep), SEEK_CUR) != 0) r->err = 1;
}

static int scalar_size(uint32_t t) { /* GGUF value types 0..12 except string (8) and array (9) */
    static const int sz[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < 13 ? sz[t] : -1;
}

static void skip_value(rd *r, uint32_t t, int depth) {
    if (t == 8) {
        const uint64_t n = rd_u(r, 8);
        if (r->err || fseek(r->f, (long)n, SEEK_CUR) != 0) r->err = 1;
    } else if (t == 9) {
        const uint32_t et = (uint32_t)rd_u(r, 4);
        const uint64_t n = rd_u(r, 8);
        if (r->err || depth > 2) {
            r->err = 1;
            return;
        }
        if (et != 8 && et != 9 && scalar_size(et) > 0) {
            if (fseek(r->f, (long)(n * (uint64_t)scalar_size(et)), SEEK_CUR) != 0) r->err = 1;
        } else {
            for (uint64_t i = 0; i < n && !r->err; i++) skip_value(r, et, depth + 1);
        }
    } else if (scalar_size(t) > 0) {
        if (fseek(r->f, scalar_size(t), SEEK_CUR) != 0) r->err = 1;
    } else {
        r->err = 1;
    }
}

/* Finds tensor `name`: its type, dims and absolute file offset. 0 on success. */
static int gguf_find(const char *path, const char *name, uint32_t *type, uint64_t ne[4], uint32_t *ndim,
                     uint64_t *offset, char *err, size_t errlen) {
    rd r = {fopen(path, "rb"), 0};
    if (!r.f) {
        snprintf(err, errlen, "%s: cannot open", path);
        return -1;
    }
    const uint32_t magic = (uint32_t)rd_u(&r, 4), version = (uint32_t)rd_u(&r, 4);
    const uint64_t n_tensors = rd_u(&r, 8), n_kv = rd_u(&r, 8);
    if (r.err || magic != 0x46554747u || version < 2) {
        snprintf(err, errlen, "%s: not a GGUF v2/v3 file (magic %08x version %u)", path, magic, version);
        fclose(r.f);
        return -1;
    }
    uint64_t alignment = 32;
    char key[256];
    for (uint64_t i = 0; i < n_kv && !r.err; i++) {
        rd_str(&r, key, sizeof key);
        const uint32_t t = (uint32_t)rd_u(&r, 4);
        if (strcmp(key, "general.alignment") == 0 && t == 4) alignment = rd_u(&r, 4);
        else skip_value(&r, t, 0);
    }
    int found = 0;
    uint64_t rel = 0;
    char tname[256];
    for (uint64_t i = 0; i < n_tensors && !r.err; i++) {
        rd_str(&r, tname, sizeof tname);
        const uint32_t nd = (uint32_t)rd_u(&r, 4);
        uint64_t dims[4] = {1, 1, 1, 1};
        if (nd > 4) r.err = 1;
        for (uint32_t d = 0; d < nd && !r.err; d++) dims[d] = rd_u(&r, 8);
        const uint32_t tt = (uint32_t)rd_u(&r, 4);
        const uint64_t off = rd_u(&r, 8);
        if (!r.err && strcmp(tname, name) == 0) {
            found = 1;
            *type = tt;
            *ndim = nd;
            memcpy(ne, dims, sizeof dims);
            rel = off;
        }
    }
    const long pos = ftell(r.f);
    fclose(r.f);
    if (r.err || alignment == 0) {
        snprintf(err, errlen, "%s: truncated or malformed header", path);
        return -1;
    }
    if (!found) {
        snprintf(err, errlen, "%s: no tensor named %s", path, name);
        return -1;
    }
    const uint64_t data = ((uint64_t)pos + alignment - 1) / alignment * alignment;
    *offset = data + rel;
    return 0;
}

/* ---- one index entry ------------------------------------------------------------------ */

static void check_entry(const char *shared, const cJSON *e) {
    const char *id = e->string;
    const cJSON *jm = cJSON_GetObjectItem(e, "model"), *jt = cJSON_GetObjectItem(e, "tensor");
    const cJSON *jty = cJSON_GetObjectItem(e, "type"), *jf = cJSON_GetObjectItem(e, "file");
    const cJSON *jn = cJSON_GetObjectItem(e, "n");
    if (!cJSON_IsString(jm) || !cJSON_IsString(jt) || !cJSON_IsString(jty) || !cJSON_IsString(jf) ||
        !cJSON_IsNumber(jn)) {
        printf("FAIL %s: index entry lacks model/tensor/type/file/n\n", id);
        g_fail++;
        return;
    }
    char path[4096], err[4096 + 512];
    snprintf(path, sizeof path, "%s/models/%s", shared, jm->valuestring);
    uint32_t type = 0, ndim = 0;
    uint64_t ne[4] = {1, 1, 1, 1}, off = 0;
    if (gguf_find(path, jt->valuestring, &type, ne, &ndim, &off, err, sizeof err) != 0) {
        printf("FAIL %s: %s\n", id, err);
        g_fail++;
        return;
    }
    const qt_traits *t = qt_get((int)type);
    const int64_t n = (int64_t)(ne[0] * ne[1] * ne[2] * ne[3]);
    if (!t && getenv("SAMPAN_DEQUANT_SKIP_UNSUPPORTED")) {   /* ../shared/new-types: the types
                                                               not implemented yet are listed */
        printf("skip %s: type %s is not supported yet\n", id, jty->valuestring);
        g_skip++;
        return;
    }
    if (!t || strcmp(t->name, jty->valuestring) != 0 || n != (int64_t)jn->valuedouble) {
        printf("FAIL %s: file says type %u (%s) with %lld elements, index says %s with %lld\n", id, type,
               t ? t->name : "unsupported", (long long)n, jty->valuestring, (long long)jn->valuedouble);
        g_fail++;
        return;
    }
    const size_t bytes = qt_row_size((int)type, n);
    uint8_t *raw = malloc(bytes);
    FILE *f = fopen(path, "rb");
    const int ok = f && fseek(f, (long)off, SEEK_SET) == 0 && fread(raw, 1, bytes, f) == bytes;
    if (f) fclose(f);
    snprintf(path, sizeof path, "%s/reference/dequant/%s", shared, jf->valuestring);
    size_t reflen = 0;
    float *ref = (float *)read_all(path, &reflen);
    if (!ok || !ref || reflen != (size_t)n * sizeof(float)) {
        printf("FAIL %s: cannot read %zu tensor bytes at offset %llu or the %zu-byte reference %s\n", id, bytes,
               (unsigned long long)off, (size_t)n * sizeof(float), path);
        g_fail++;
        free(raw);
        free(ref);
        return;
    }
    float *ours = malloc((size_t)n * sizeof(float));
    t->to_float(raw, ours, n);
    double max_abs = 0, max_rel = 0;
    int64_t bad = 0, first_bad = -1;
    for (int64_t i = 0; i < n; i++) {
        const double d = fabs((double)ours[i] - ref[i]);
        const double lim = 1e-6 * fmax(1.0, fabs((double)ref[i]));
        max_abs = fmax(max_abs, d);
        max_rel = fmax(max_rel, d / fmax(1e-30, fabs((double)ref[i])));
        if (!(d <= lim)) {
            if (first_bad < 0) first_bad = i;
            bad++;
        }
    }
    printf("%s %s: %s %lld elements, max |err| %.3g, max rel err %.3g", bad ? "FAIL" : "ok  ", id, t->name,
           (long long)n, max_abs, max_rel);
    if (bad) {
        printf(", %lld outside 1e-6 (first at %lld: ours %.9g ref %.9g)", (long long)bad, (long long)first_bad,
               ours[first_bad], ref[first_bad]);
    }
    printf("\n");
    if (bad) g_fail++;
    else g_pass++;

    /* the real rows through vec_dot (best ISA) against a double dot of the reference values
     * with the dequantized activation */
    const int64_t K = (int64_t)ne[0], N = n / K;
    const qt_traits *tv = qt_get(t->vec_dot_type);
    float *x = malloc((size_t)K * sizeof(float)), *xd = malloc((size_t)K * sizeof(float));
    void *xq = malloc(qt_row_size(t->vec_dot_type, K));
    uint32_t seed = 12345;
    for (int64_t i = 0; i < K; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)((int32_t)(seed >> 8) - (1 << 23)) / (float)(1 << 23);
    }
    tv->from_float(x, xq, K);
    tv->to_float(xq, xd, K);
    double worst = 0;
    int dot_bad = 0;
    for (int64_t r = 0; r < N; r++) {
        double exact = 0, sumabs = 0;
        for (int64_t i = 0; i < K; i++) {
            exact += (double)ref[r * K + i] * xd[i];
            sumabs += fabs((double)ref[r * K + i] * xd[i]);
        }
        const float got = t->vec_dot(K, raw + (size_t)r * qt_row_size((int)type, K), xq);
        worst = fmax(worst, fabs(got - exact) / (sumabs + 1e-30));
        dot_bad += !(fabs(got - exact) <= 1e-5 * sumabs + 1e-30);
    }
    printf("%s %s: %lld rows through vec_dot (%s), max err %.2e of sum|wx|\n", dot_bad ? "FAIL" : "ok  ", id,
           (long long)N, kern_isa(), worst);
    if (dot_bad) g_fail++;
    else g_pass++;
    free(x);
    free(xd);
    free(xq);
    free(raw);
    free(ref);
    free(ours);
}

int main(void) {
    const char *shared = getenv("SAMPAN_SHARED");
    if (!shared || !*shared) shared = "../shared";
    char path[4096];
    snprintf(path, sizeof path, "%s/reference/dequant/index.json", shared);
    size_t len = 0;
    char *text = read_all(path, &len);
    if (!text) {
        printf("skip: %s not found\n", path);
        return 77;
    }
    kern_init(NULL);
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsObject(root) || cJSON_GetArraySize(root) == 0) {
        printf("FAIL %s: not a non-empty JSON object\n", path);
        cJSON_Delete(root);
        printf("0 passed, 1 failed\n");
        return 1;
    }
    for (const cJSON *e = root->child; e; e = e->next) check_entry(shared, e);
    cJSON_Delete(root);
    printf("%d passed, %d failed, %d skipped\n", g_pass, g_fail, g_skip);
    if (g_pass == 0) {
        printf("FAIL: no entry ran\n");
        return 1;
    }
    return g_fail ? 1 : 0;
}
