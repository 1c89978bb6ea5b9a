/* runtime/synth.h — deterministic synthetic Llama GGUF models (random weights, a byte-level BPE
 * vocabulary of our own making) for the quickstart, tests and benchmarks.
 *
 * Shapes: tiny (C 64, L 2, H 4/2, F 128, V 512), small (C 256, L 4, H 8/2, F 768, V 4096),
 * tinyllama-1.1b (C 2048, L 22, H 32/4, F 5632, V 32000), llama-7b (C 4096, L 32, H 32/32,
 * F 11008, V 32000). The same (shape, type, layers, seed) always gives the same bytes.
 */
#ifndef SAMPAN_SYNTH_H
#define SAMPAN_SYNTH_H

#include <stddef.h>
#include <stdint.h>

/* type: a qt_type for the matrices (norms stay F32). layers <= 0: the shape's own count. */
int synth_model(const char *path, const char *shape, int type, int layers, uint64_t seed,
                char *err, size_t errlen);
/* a supported weight type by name ("F32" -> 0, "q4_k" -> 12, case-insensitive); -1 if unknown */
int synth_type_from_name(const char *name);
/* "F32, F16, ..." : every supported weight type's name, into buf (truncated to n) */
void synth_type_names(char *buf, size_t n);

#endif
