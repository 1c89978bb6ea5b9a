/* runtime/synth.h — deterministic synthetic GGUF models (random weights, a byte-level BPE
 * vocabulary of our own making) for the quickstart, tests and benchmarks, and the tensor types
 * llama.cpp's quantizer mixes choose (which `sampan model quantize` shares).
 *
 * Llama shapes: tiny (C 64, L 2, H 4/2, F 128, V 512), small (C 256, L 4, H 8/2, F 768,
 * V 4096), tinyllama-1.1b (C 2048, L 22, H 32/4, F 5632, V 32000), llama-7b (C 4096, L 32,
 * H 32/32, F 11008, V 32000); the tiny-gemma3* and tiny-qwen3* shapes are those architectures'.
 *
 * deepseek2 shapes (arch "deepseek2"): C width, L blocks, H heads, q/kv the LoRA ranks (q 0: a
 * plain attn_q), nope/rope/v the head dims, D dense blocks of FFN F first, then MoE blocks of E
 * experts of FFN Fe, k active, S shared; groups G/g kept; gating, selection bias, norm, scale:
 *   tiny     C 32,   L 3,  H 4,  q 24,  kv 16,  nope 16,  rope 8,  v 16,  D 1 F 64,
 *            E 8 Fe 16 k 2 S 1, no groups, sigmoid + exp_probs_b, norm, scale 2.5, V 512,
 *            ctx 512 (../shared/models/tiny-deepseek-f32.gguf's shape): 0.4 MB at F32
 *   v2-lite  C 2048, L 27, H 16, q 0,   kv 512, nope 128, rope 64, v 128, D 1 F 10944,
 *            E 64 Fe 1408 k 6 S 2, no groups, softmax, no bias, no norm, scale 1, V 102400,
 *            ctx 163840, YaRN 40 over 4096 (log multiplier 0.0707): DeepSeek-V2-Lite's shape,
 *            15.7 G parameters (9.5 GB at Q4_K, 10.4 GB at Q4_K_M); --layers 4: 2.25 G
 *            (1.3 GB at Q4_K, 1.5 GB at Q4_K_M)
 *   v3-mini  C 2048, L 9,  H 16, q 512, kv 256, nope 128, rope 64, v 128, D 3 F 5632,
 *            E 64 Fe 768 k 8 S 1, 8 groups with 4 kept, sigmoid + exp_probs_b, norm, scale 2.5,
 *            V 32000, ctx 163840, YaRN 40 over 4096 (log multiplier 0.1): DeepSeek-V3's
 *            structure (C 7168, q 1536, kv 512, D 3, E 256 in 8 groups, k 8, S 1) at 2048 wide,
 *            2.15 G parameters, 1.2 GB at Q4_K, 1.3 GB at Q4_K_M
 * --layers N keeps min(D, N) dense blocks. The router (ffn_gate_inp), exp_probs_b and norms are
 * F32; every other matrix, the 3-D expert tensors included, is of the requested type, or of
 * llama.cpp's fallback (synth_fallback_type) where its rows do not divide into the type's blocks:
 * at Q4_K, V2-Lite's rows of 1408, 10944 and 128 are Q5_0 as in llama.cpp's files, the tiny
 * shape's rows of 16 and 24 F16. The whole file is built in memory before it is written: a
 * 27-layer v2-lite needs its full size in RAM.
 *
 * The same (arch, shape, type, layers, seed) always gives the same bytes.
 */
#ifndef SAMPAN_SYNTH_H
#define SAMPAN_SYNTH_H

#include <stddef.h>
#include <stdint.h>

/* type: a qt_type for the matrices (norms stay F32). layers <= 0: the shape's own count.
 * arch: "deepseek2" for its table; NULL or the shape's own architecture (llama, gemma3, qwen3)
 * for the others (NULL: the shape name decides). Errors name the shape and the choices. */
int synth_model_arch(const char *path, const char *arch, const char *shape, int type, int layers,
                     uint64_t seed, char *err, size_t errlen);
/* synth_model_arch with arch NULL */
int synth_model(const char *path, const char *shape, int type, int layers, uint64_t seed,
                char *err, size_t errlen);
/* llama.cpp's K-quant mixes as its quantizer makes them, as type ids of their own (above every
 * qt_type): Q4_K_M / Q5_K_M are Q4_K / Q5_K with Q6_K for the output head and for attn_v and
 * every ffn_down* (ffn_down_exps, ffn_down_shexp too) of layers l < L/8, l >= 7L/8 and every
 * third one between (llama.cpp's use_more_bits); the file's general.file_type names the mix. */
enum { SYNTH_MIX_BASE = 0x100, SYNTH_Q4_K_M = SYNTH_MIX_BASE + 15, SYNTH_Q5_K_M = SYNTH_MIX_BASE + 17 };
/* The type llama.cpp's quantizer gives matrix `name` of a model of n_layers blocks and n_expert
 * routed experts (0: dense) quantized as `type`: a plain qt_type is itself; a mix as above, and
 * with exactly 8 experts (llama.cpp's Mixtral rules) attn_v and attn_k Q8_0 and, for Q4_K_M,
 * attn_output Q5_K. Row lengths are not looked at: synth_fallback_type does that. */
int synth_mix_tensor_type(int type, const char *name, int n_layers, int n_expert);
/* llama.cpp's fallback for rows of `row` values that do not divide into type's blocks: Q4_K ->
 * Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, Q2_K/Q3_K/IQ4_XS -> IQ4_NL, and F16 when that does not
 * divide either (llama.cpp stops with an error for the 32-blocks; we write F16 as its last
 * resort does). type itself when the rows divide. */
int synth_fallback_type(int type, int64_t row);
/* a supported weight type or mix by name ("F32" -> 0, "q4_k" -> 12, "Q5_K_M" -> SYNTH_Q5_K_M,
 * case-insensitive); -1 if unknown */
int synth_type_from_name(const char *name);
/* the name of a qt_type or a mix; "?" if neither */
const char *synth_type_name(int type);
/* "F32, F16, ..., Q4_K_M, Q5_K_M" : every supported weight type's and mix's name, into buf
 * (truncated to n) */
void synth_type_names(char *buf, size_t n);

#endif
