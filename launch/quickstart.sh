#!/usr/bin/env bash
# launch/quickstart.sh — from a fresh checkout to generated text: install what is missing,
# build, make the default model with `sampan model synth`, and generate with it.
#
#   launch/quickstart.sh ["PROMPT"]
set -euo pipefail
cd "$(dirname "$0")/.."
launch/setup.sh build
mkdir -p models
MODEL=models/sampan-small-q8_0.gguf
if [ ! -f "$MODEL" ]; then
    build/sampan model synth -o "$MODEL" --shape small --type Q8_0 --seed 1
fi
build/sampan info "$MODEL"
echo "--- generating (random weights: expect fluent-looking gibberish) ---"
build/sampan run -m "$MODEL" -p "${1:-Once upon a time}" -n 64 --temp 0.8 --seed 42
