#!/usr/bin/env bash
# tests/fuzz/run_fuzz.sh BUILD_DIR SECONDS — run every libFuzzer harness for a bounded time.
#
# BUILD_DIR must be configured with CC=clang and -Dfuzz=true. Harnesses (BUILD_DIR/tests/fuzz/):
#   fuzz_gguf  required; 40% of SECONDS (all of it when it is the only one)
#   fuzz_tok, fuzz_chat, fuzz_oai   each run if built; they share the other 60% equally
# so the fuzzing itself takes about SECONDS in all (plus each harness's start-up and its seeds).
# Each harness NAME has its own BUILD_DIR/fuzz/NAME-seeds (rewritten per run), NAME-corpus (kept
# between runs: new inputs), artifacts/NAME/ (crashes, leaks, timeouts) and NAME.log. Seeds:
#   gguf  the first 64 KiB of every shared model, the first MiB of every shared vocabulary GGUF,
#         the corrupt corpus of tests/gguf/corrupt.py
#   tok   the texts of the shared tokenizer test vectors (reference/vocab/*.inp), the reference
#         prompts (reference/*/prompt-N.json) and tests/fuzz/seeds/tok/*, each behind first
#         bytes that pick several vocabularies
#   chat  tests/fuzz/seeds/chat/*.jinja and every tokenizer.chat_template found in a shared
#         GGUF, each with a few conversations; plus every family forced on the same conversations
#   oai   tests/fuzz/seeds/oai/* if present
# Shared data: SAMPAN_SHARED, default ../shared beside the source tree; without it fuzz_tok
# fuzzes only its hand-built vocabularies (it says so) and the seeds are the local ones.
# Prints one summary line per harness; exits non-zero if any found a crash, leak or timeout.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 BUILD_DIR SECONDS" >&2
    exit 2
fi
build=$(realpath "$1")
secs=$2
src=$(realpath "$(dirname "$0")/../..")
bin="$build/tests/fuzz"
shared=${SAMPAN_SHARED:-$src/../shared}
export SAMPAN_SHARED="$shared"

if [ ! -x "$bin/fuzz_gguf" ]; then
    echo "run_fuzz: $bin/fuzz_gguf not found; configure with: CC=clang meson setup BUILD -Dfuzz=true" \
         "and build target tests/fuzz/fuzz_gguf" >&2
    exit 2
fi
work="$build/fuzz"
mkdir -p "$work"

# ---- which harnesses, and their time ---------------------------------------------------------
others=()
for name in tok chat oai; do
    if [ -x "$bin/fuzz_$name" ]; then others+=("$name")
    else echo "run_fuzz: $name: no $bin/fuzz_$name, skipped" >&2; fi
done
declare -A budget
if [ ${#others[@]} -eq 0 ]; then
    budget[gguf]=$secs
else
    budget[gguf]=$(( secs * 40 / 100 > 0 ? secs * 40 / 100 : 1 ))
    share=$(( (secs - budget[gguf]) / ${#others[@]} ))
    for name in "${others[@]}"; do budget[$name]=$(( share > 0 ? share : 1 )); done
fi

fresh() {   # fresh DIR...: empty seed folders
    for d in "$@"; do rm -rf "$d"; mkdir -p "$d"; done
}

# ---- seeds ------------------------------------------------------------------------------------
seed_gguf() {
    local seeds="$work/gguf-seeds" n=0 f
    fresh "$seeds"
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
    [ "$n" -gt 0 ] ||
        echo "run_fuzz: gguf: no shared GGUF under $shared; seeds: corrupt corpus only" >&2
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
}

seed_tok() {
    fresh "$work/tok-seeds"
    ls "$shared"/reference/vocab/*.gguf >/dev/null 2>&1 ||
        echo "run_fuzz: tok: no shared vocabulary under $shared/reference/vocab: fuzzing the" \
             "hand-built vocabularies of fuzz_tok only" >&2
    python3 - "$shared" "$src/tests/fuzz/seeds/tok" "$work/tok-seeds" <<'PY'
import glob, json, os, sys
shared, local, out = sys.argv[1:]
texts = set()
for p in sorted(glob.glob(os.path.join(shared, "reference", "vocab", "*.inp"))):
    for t in open(p, "rb").read().split(b"\n__ggml_vocab_test__\n")[:-1]:
        texts.add(t)
for p in sorted(glob.glob(os.path.join(shared, "reference", "*", "prompt-*.json"))):
    try:
        texts.add(json.load(open(p))["prompt"].encode())
    except (OSError, ValueError, KeyError):
        pass
for p in sorted(glob.glob(os.path.join(local, "*"))):
    texts.add(open(p, "rb").read())
# byte 0 picks the vocabulary (mod the number fuzz_tok loaded, 25 with the shared data): each
# text goes to 5 of them, spread so that every vocabulary gets every fifth text
for j, t in enumerate(sorted(texts)):
    for r in range(5):
        v = (j + 5 * r) % 25
        open(os.path.join(out, "t%03d-v%02d" % (j, v)), "wb").write(bytes([v]) + t)
PY
    cat > "$work/tok.dict" <<'DICT'
"\xe2\x96\x81"
"<s>"
"</s>"
"<unk>"
"<|endoftext|>"
"<|user|>"
"<|im_start|>"
"<|end|>"
"<\xef\xbd\x9cbegin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"
"<fim_prefix>"
">>TITLE<<"
"'s"
"'LL"
"\x0d\x0a"
"\xe3\x80\x80"
"\xc2\xa0"
"\xef\xbf\xbd"
"\xed\xa0\x80"
"\xf4\x90\x80\x80"
"\xc0\x80"
"12345"
DICT
}

seed_chat() {
    fresh "$work/chat-seeds"
    python3 - "$shared" "$src/tests/fuzz/seeds/chat" "$work/chat-seeds" <<'PY'
import glob, os, struct, sys
shared, local, out = sys.argv[1:]

SIZE = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}   # GGUF scalars

def chat_template(path):
    """tokenizer.chat_template of a GGUF, reading only its key/value section"""
    with open(path, "rb") as f:
        def rd(fmt):
            return struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))[0]
        def skip(t):
            if t == 8: f.seek(rd("Q"), 1)
            elif t == 9:
                et, n = rd("I"), rd("Q")
                if et in (8, 9):
                    for _ in range(n): skip(et)
                else:
                    f.seek(n * SIZE[et], 1)
            else: f.seek(SIZE[t], 1)
        if f.read(4) != b"GGUF": return None
        rd("I"); rd("Q"); nkv = rd("Q")
        for _ in range(nkv):
            key = f.read(rd("Q")); t = rd("I")
            if key == b"tokenizer.chat_template" and t == 8: return f.read(rd("Q"))
            skip(t)
    return None

tmpls = {}
for p in sorted(glob.glob(os.path.join(local, "*.jinja"))):
    tmpls[os.path.basename(p)] = open(p, "rb").read().rstrip(b"\n")
for p in sorted(glob.glob(os.path.join(shared, "models", "*.gguf")) +
                glob.glob(os.path.join(shared, "reference", "vocab", "*.gguf"))):
    try:
        t = chat_template(p)
    except (OSError, struct.error, KeyError):
        t = None
    if t: tmpls["gguf-" + os.path.basename(p)] = t
# messages: role byte '0' system, '1' user, '2' assistant, then the content
convs = [
    [b"0You are kind.", b"1Hi there", b"2Hello!", b"1How are you?"],
    [b"1  Hi there \n"],
    [b"0Only a system message."],
    [b"0System first.", b"2An assistant reply.", b"1Then a user."],
    [b"1a", b"0a late system message"],
    [b"1", b"2", b"1<|im_start|>[INST]<<SYS>>"],
]
def write(name, mode, tmpl, conv):
    open(os.path.join(out, name), "wb").write(mode + tmpl + b"\0" + b"\0".join(conv))

n = 0
for name, t in sorted(tmpls.items()):   # '5': the family detected from the template
    for c in convs[:3]:
        write("t%02d-%s" % (n, name), b"5", t, c)
        n += 1
for fam in range(5):                     # '0'..'4': each family forced
    for i, c in enumerate(convs):
        write("f%d-c%d" % (fam, i), bytes([ord("0") + fam]), b"", c)
PY
    cat > "$work/chat.dict" <<'DICT'
"<|start_header_id|>"
"<|im_start|>"
"<|im_start|>system\\n"
"<|im_start|>system\x0a"
"<|im_end|>"
"[INST]"
"<<SYS>>"
"\\n"
"\x00\x30"
"\x00\x31"
"\x00\x32"
DICT
}

seed_oai() {
    fresh "$work/oai-seeds"
    if [ -d "$src/tests/fuzz/seeds/oai" ]; then
        cp -r "$src/tests/fuzz/seeds/oai/." "$work/oai-seeds/"
    fi
}

# ---- run ------------------------------------------------------------------------------------
# run NAME EXTRA_ARGS...: fuzz for budget[NAME] seconds; prints the summary line; 0 if clean
run() {
    local name=$1; shift
    local t=${budget[$name]} corpus="$work/$name-corpus" art="$work/artifacts/$name/"
    local log="$work/$name.log" dict="$work/$name.dict" rc start end
    mkdir -p "$corpus" "$art"
    local args=(-max_total_time="$t" -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$art"
                -print_final_stats=1)
    [ -f "$dict" ] && args+=(-dict="$dict")
    echo "run_fuzz: $name: $(find "$work/$name-seeds" -type f | wc -l) seeds, $t s"
    start=$(date +%s)
    set +e
    "$bin/fuzz_$name" "$corpus" "$work/$name-seeds" "${args[@]}" "$@" > "$log" 2>&1
    rc=$?
    set -e
    end=$(date +%s)
    local execs rate
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    local what="${execs:-?} execs, ${rate:-?} exec/s, corpus $(find "$corpus" -type f | wc -l)"
    if [ $rc -ne 0 ]; then
        echo "---- $log (last 60 lines) ----" >&2
        tail -n 60 "$log" >&2
        echo "run_fuzz: $name: FAIL (exit $rc) after $((end - start)) s, $what; artifacts in $art;" \
             "reproduce with: $bin/fuzz_$name $art<file>" >&2
        return 1
    fi
    echo "run_fuzz: $name: OK, $((end - start)) s, $what"
}

status=0
seed_gguf
run gguf -max_len=1048576 || status=1
for name in "${others[@]}"; do
    case $name in
        tok) seed_tok; run tok -max_len=2048 || status=1 ;;
        chat) seed_chat; run chat -max_len=8192 || status=1 ;;
        oai) seed_oai; run oai -max_len=65536 || status=1 ;;
    esac
done
if [ $status -ne 0 ]; then
    echo "run_fuzz: FAIL: a harness found a crash, leak or timeout (see above)" >&2
    exit 1
fi
summary=""
for name in gguf "${others[@]}"; do summary+=" $name ${budget[$name]} s,"; done
echo "run_fuzz: no crash in ${secs} s (${summary# }" | sed "s/,$/)/"
