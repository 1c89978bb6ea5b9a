#!/usr/bin/env bash
# tests/fuzz/run_fuzz.sh BUILD_DIR SECONDS — fuzz the GGUF reader for a bounded time.
#
# BUILD_DIR must be configured with CC=clang and -Dfuzz=true (it holds tests/fuzz/fuzz_gguf).
# Seeds BUILD_DIR/fuzz/gguf-seeds with the first 64 KiB of every shared model, the first MiB of
# every shared vocabulary GGUF (SAMPAN_SHARED, default ../shared beside the source tree) and the
# corrupt corpus of tests/gguf/corrupt.py; new inputs go to BUILD_DIR/fuzz/gguf-corpus, crashes
# to BUILD_DIR/fuzz/artifacts/. Exits non-zero if libFuzzer finds a crash, leak or timeout.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 BUILD_DIR SECONDS" >&2
    exit 2
fi
build=$(realpath "$1")
secs=$2
src=$(realpath "$(dirname "$0")/../..")
fuzzer="$build/tests/fuzz/fuzz_gguf"
shared=${SAMPAN_SHARED:-$src/../shared}

if [ ! -x "$fuzzer" ]; then
    echo "run_fuzz: $fuzzer not found; configure with: CC=clang meson setup BUILD -Dfuzz=true" \
         "and build target tests/fuzz/fuzz_gguf" >&2
    exit 2
fi

work="$build/fuzz"
seeds="$work/gguf-seeds"
corpus="$work/gguf-corpus"
artifacts="$work/artifacts"
mkdir -p "$seeds" "$corpus" "$artifacts"

n=0
for f in "$shared"/models/*.gguf; do
    [ -f "$f" ] || continue
    head -c 65536 "$f" > "$seeds/model-$(basename "$f")"
    n=$((n + 1))
done
for f in "$shared"/reference/vocab/*.gguf; do
    [ -f "$f" ] || continue
    head -c 1048576 "$f" > "$seeds/vocab-$(basename "$f")"
    n=$((n + 1))
done
[ "$n" -gt 0 ] || echo "run_fuzz: no shared GGUF under $shared; seeds: corrupt corpus only" >&2
python3 "$src/tests/gguf/corrupt.py" --write "$seeds" >/dev/null

cat > "$work/gguf.dict" <<'DICT'
"GGUF"
"\x03\x00\x00\x00"
"\x02\x00\x00\x00"
"general.alignment"
"general.architecture"
"tokenizer.ggml.tokens"
"\x08\x00\x00\x00"
"\x09\x00\x00\x00"
"\x20\x00\x00\x00"
"\x00\x00\x00\x00\x00\x00\x00\x80"
"\xff\xff\xff\xff\xff\xff\xff\xff"
DICT

echo "run_fuzz: $(find "$seeds" -type f | wc -l) seeds, $secs s; crashes go to $artifacts/"
set +e
"$fuzzer" "$corpus" "$seeds" \
    -max_total_time="$secs" -rss_limit_mb=2048 -max_len=1048576 -timeout=10 \
    -dict="$work/gguf.dict" -artifact_prefix="$artifacts/" -print_final_stats=1
rc=$?
set -e
if [ $rc -ne 0 ]; then
    echo "run_fuzz: fuzzer exited $rc; reproduce with: $fuzzer $artifacts/<file>" >&2
    exit 1
fi
echo "run_fuzz: no crash in $secs s"
