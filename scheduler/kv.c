/* scheduler/kv.c — KV block manager (see kv.h for the states and invariants). */
#include <stdlib.h>
#include <string.h>

#include "scheduler/kv.h"

struct kv_mgr {
    int n, bs;
    int *ref;             /* (n) */
    uint64_t *hash;       /* (n) valid when published[i] */
    uint8_t *published;   /* (n) */
    int *hnext;           /* (n) next block in the same hash bucket */
    int *bucket;          /* (nb) first block of each bucket, -1 empty */
    int nb;
    int *free_next;       /* (n) free list links */
    int free_head, n_free;
    int *lru_prev, *lru_next;   /* cached (ref 0, published) blocks, oldest at head */
    int lru_head, lru_tail, n_cached, n_held;
};

kv_mgr *kv_new(int n_blocks, int block_size) {
    if (n_blocks < 1 || block_size < 1) return NULL;
    kv_mgr *k = calloc(1, sizeof *k);
    if (!k) return NULL;
    k->n = n_blocks;
    k->bs = block_size;
    k->nb = 1;
    while (k->nb < 2 * n_blocks) k->nb <<= 1;
    k->ref = calloc((size_t)n_blocks, sizeof *k->ref);
    k->hash = calloc((size_t)n_blocks, sizeof *k->hash);
    k->published = calloc((size_t)n_blocks, 1);
    k->hnext = malloc((size_t)n_blocks * sizeof *k->hnext);
    k->bucket = malloc((size_t)k->nb * sizeof *k->bucket);
    k->free_next = malloc((size_t)n_blocks * sizeof *k->free_next);
    k->lru_prev = malloc((size_t)n_blocks * sizeof *k->lru_prev);
    k->lru_next = malloc((size_t)n_blocks * sizeof *k->lru_next);
    if (!k->ref || !k->hash || !k->published || !k->hnext || !k->bucket || !k->free_next ||
        !k->lru_prev || !k->lru_next) {
        kv_free(k);
        return NULL;
    }
    memset(k->bucket, 0xff, (size_t)k->nb * sizeof *k->bucket);
    for (int i = 0; i < n_blocks; i++) k->free_next[i] = i + 1 < n_blocks ? i + 1 : -1;
    k->free_head = 0;
    k->n_free = n_blocks;
    k->lru_head = k->lru_tail = -1;
    return k;
}

void kv_free(kv_mgr *k) {
    if (!k) return;
    free(k->ref);
    free(k->hash);
    free(k->published);
    free(k->hnext);
    free(k->bucket);
    free(k->free_next);
    free(k->lru_prev);
    free(k->lru_next);
    free(k);
}

int kv_block_size(const kv_mgr *k) { return k->bs; }
int kv_n_blocks(const kv_mgr *k) { return k->n; }
int kv_n_available(const kv_mgr *k) { return k->n_free + k->n_cached; }
int kv_n_held(const kv_mgr *k) { return k->n_held; }
int kv_n_cached(const kv_mgr *k) { return k->n_cached; }

static void lru_remove(kv_mgr *k, int b) {
    int p = k->lru_prev[b], n = k->lru_next[b];
    if (p >= 0) k->lru_next[p] = n; else k->lru_head = n;
    if (n >= 0) k->lru_prev[n] = p; else k->lru_tail = p;
    k->n_cached--;
}

static void lru_push(kv_mgr *k, int b) {
    k->lru_prev[b] = k->lru_tail;
    k->lru_next[b] = -1;
    if (k->lru_tail >= 0) k->lru_next[k->lru_tail] = b; else k->lru_head = b;
    k->lru_tail = b;
    k->n_cached++;
}

static void unpublish(kv_mgr *k, int b) {
    int *pp = &k->bucket[k->hash[b] & (uint64_t)(k->nb - 1)];
    while (*pp != b) pp = &k->hnext[*pp];
    *pp = k->hnext[b];
    k->published[b] = 0;
}

int kv_alloc(kv_mgr *k) {
    int b;
    if (k->free_head >= 0) {
        b = k->free_head;
        k->free_head = k->free_next[b];
        k->n_free--;
    } else if (k->lru_head >= 0) {   /* evict the least recently released cached block */
        b = k->lru_head;
        lru_remove(k, b);
        unpublish(k, b);
    } else {
        return -1;
    }
    k->ref[b] = 1;
    k->n_held++;
    return b;
}

void kv_ref(kv_mgr *k, int b) {
    if (k->ref[b]++ == 0) {   /* a cached block comes back into use */
        lru_remove(k, b);
        k->n_held++;
    }
}

void kv_unref(kv_mgr *k, int b) {
    if (--k->ref[b] > 0) return;
    k->n_held--;
    if (k->published[b]) {
        lru_push(k, b);
    } else {
        k->free_next[b] = k->free_head;
        k->free_head = b;
        k->n_free++;
    }
}

uint64_t kv_hash(uint64_t parent, const int32_t *tokens, int n) {
    uint64_t h = parent ^ 0xcbf29ce484222325ull;
    for (int i = 0; i < n; i++) {
        h ^= (uint32_t)tokens[i];
        h *= 0x100000001b3ull;
        h ^= h >> 29;
    }
    return h ? h : 1;
}

int kv_lookup(kv_mgr *k, uint64_t hash) {
    for (int b = k->bucket[hash & (uint64_t)(k->nb - 1)]; b >= 0; b = k->hnext[b])
        if (k->hash[b] == hash) {
            kv_ref(k, b);
            return b;
        }
    return -1;
}

void kv_publish(kv_mgr *k, int b, uint64_t hash) {
    if (k->published[b]) return;
    for (int o = k->bucket[hash & (uint64_t)(k->nb - 1)]; o >= 0; o = k->hnext[o])
        if (k->hash[o] == hash) return;
    k->hash[b] = hash;
    k->published[b] = 1;
    int *head = &k->bucket[hash & (uint64_t)(k->nb - 1)];
    k->hnext[b] = *head;
    *head = b;
}
