#!/usr/bin/env bash
# tests/run.sh — install what is missing, build, and run the whole suite:
#   1. release build (gcc), every test;
#   2. AddressSanitizer + UndefinedBehaviorSanitizer build, every test again;
#   3. clang build with the libFuzzer harnesses, each fuzzed for a bounded time.
# Ends with one line "N passed, N failed, N skipped" summed over all three.
#   tests/run.sh [--no-asan] [--no-fuzz] [--fuzz-seconds S]
set -uo pipefail
cd "$(dirname "$0")/.."
ASAN=1 FUZZ=1 FUZZ_SECONDS=${FUZZ_SECONDS:-60}
while [ $# -gt 0 ]; do
    case "$1" in
        --no-asan) ASAN=0 ;;
        --no-fuzz) FUZZ=0 ;;
        --fuzz-seconds) FUZZ_SECONDS=$2; shift ;;
        *) echo "tests/run.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
if [ ! -d ../shared ]; then
    echo "tests/run.sh: ../shared not found: tests that need reference data will be skipped" >&2
fi

status=0
launch/setup.sh build || exit 1
# Python test helpers from PyPI (the official openai client) into build/venv
tests/http/venv.sh build/venv || echo "tests/run.sh: no venv with openai: its test will be skipped" >&2
meson test -C build --print-errorlogs --num-processes 2 || status=1
logs=(build/meson-logs/testlog.json)

if [ "$ASAN" = 1 ]; then
    launch/setup.sh build-asan -Db_sanitize=address,undefined -Db_lundef=false \
        -Dbuildtype=debugoptimized || exit 1
    export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp:fast_unwind_on_malloc=0"
    meson test -C build-asan --print-errorlogs --num-processes 2 --timeout-multiplier 4 || status=1
    logs+=(build-asan/meson-logs/testlog.json)
fi

if [ "$FUZZ" = 1 ]; then
    CC=clang launch/setup.sh build-fuzz -Dfuzz=true -Dbuildtype=debugoptimized -Dcuda=disabled || exit 1
    fuzz_log=build-fuzz/fuzz-result.txt
    if tests/fuzz/run_fuzz.sh build-fuzz "$FUZZ_SECONDS"; then echo "fuzz OK" > "$fuzz_log"
    else echo "fuzz FAIL" > "$fuzz_log"; status=1; fi
fi

python3 - "${logs[@]}" <<'PY'
import json, sys, os
p = f = s = 0
for log in sys.argv[1:]:
    for line in open(log):
        r = json.loads(line)["result"]
        if r in ("OK", "EXPECTEDFAIL"): p += 1
        elif r == "SKIP": s += 1
        else: f += 1
fz = "build-fuzz/fuzz-result.txt"
if os.path.exists(fz):
    if "OK" in open(fz).read(): p += 1
    else: f += 1
print(f"{p} passed, {f} failed, {s} skipped")
PY
exit $status
