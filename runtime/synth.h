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
/* llama.cpp's K-quant mixes as its quantizer makes them, as type ids of their own (above every
 * qt_type): Q4_K_M / Q5_K_M are Q4_K / Q5_K with Q6_K for the output head and for attn_v and
 * ffn_down of layers l < L/8, l >= 7L/8 and every third one between (llama.cpp's
 * use_more_bits); the file's general.file_type names the mix. Only synth_model takes them. */
enum { SYNTH_MIX_BASE = 0x100, SYNTH_Q4_K_M = SYNTH_MIX_BASE + 15, SYNTH_Q5_K_M = SYNTH_MIX_BASE + 17 };
/* a supported weight type or mix by name ("F32" -> 0, "q4_k" -> 12, "Q5_K_M" -> SYNTH_Q5_K_M,
 * case-insensitive); -1 if unknown */
int synth_type_from_name(const char *name);
/* the name of a qt_type or a mix; "?" if neither */
const char *synth_type_name(int type);
/* "F32, F16, ..., Q4_K_M, Q5_K_M" : every supported weight type's and mix's name, into buf
 * (truncated to n) */
void synth_type_names(char *buf, size_t n);

#endif
