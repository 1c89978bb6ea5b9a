/* scheduler/kv.h — the KV block manager: which sequence holds which block of the paged KV
 * cache (the memory itself is model_state's), reference counts, and the prefix cache.
 *
 * Block states and the calls behind each transition:
 *
 *     FREE --kv_alloc--> HELD (ref >= 1) --kv_unref to 0--> FREE          (never published)
 *                         |   ^                        \-> CACHED (ref 0, on the LRU list)
 *              kv_publish |   | kv_lookup (hit: ref+1)          | kv_alloc when no FREE
 *                         v   |                                 v block is left: evicted
 *                       HELD + in the hash map                 FREE -> HELD
 *
 * Invariants: 1. a block is on exactly one of: the free list, the LRU list (ref 0 and
 * published), or held (ref > 0). 2. A published block's contents are those of the token prefix
 * its hash names (the caller publishes only fully computed blocks), so sequences with the same
 * prefix share it read-only. 3. kv_n_available = free + cached blocks.
 */
#ifndef SAMPAN_KV_H
#define SAMPAN_KV_H

#include <stdint.h>

typedef struct kv_mgr kv_mgr;

kv_mgr *kv_new(int n_blocks, int block_size);
void kv_free(kv_mgr *k);
int kv_block_size(const kv_mgr *k);
/* a block with ref 1, or -1 when every block is held */
int kv_alloc(kv_mgr *k);
void kv_ref(kv_mgr *k, int blk);
void kv_unref(kv_mgr *k, int blk);
/* hash of a full block given the hash of the blocks before it (0 for the first) */
uint64_t kv_hash(uint64_t parent, const int32_t *tokens, int n);
/* the published block with this hash, referenced (ref + 1), or -1 */
int kv_lookup(kv_mgr *k, uint64_t hash);
/* mark a held, fully computed block as holding the prefix `hash` (no-op if another block
 * already does, or this one is published) */
void kv_publish(kv_mgr *k, int blk, uint64_t hash);
int kv_n_blocks(const kv_mgr *k);
int kv_n_available(const kv_mgr *k);   /* free + cached (evictable) */
int kv_n_held(const kv_mgr *k);
int kv_n_cached(const kv_mgr *k);

#endif
