#!/usr/bin/env bash
# tests/lint/seam_test.sh — the backend seam holds in the source tree:
#   1. runtime/model.c (the forward pass) calls no kern_* function: every op is a backend slot;
#   2. no C/C++/CUDA source outside kernels/cuda/ and the backend registry tests for CUDA
#      with #ifdef / #if defined (callers never ask which device they run on);
#   3. every required slot of backend_i is named in the registry's check (runtime/backend.c).
# Each check prints what it found; the test fails on any finding.
set -u
cd "$(dirname "$0")/../.."
fail=0
if grep -n "kern_[a-z_]*(" runtime/model.c; then
    echo "FAIL: runtime/model.c calls kernels directly (above)"; fail=1
else
    echo "ok: runtime/model.c calls no kern_* function"
fi
hits=$(grep -rnE "#\s*(ifdef|ifndef|if|elif).*CUDA" --include=*.c --include=*.h --include=*.cc \
       --include=*.cu launch runtime scheduler kernels benchmarks tests 2>/dev/null |
       grep -v "^kernels/cuda/" | grep -v "^runtime/backend.c:" | grep -v "^tests/cuda/" |
       grep -vE "#\s*(ifndef|define)\s+SAMPAN_[A-Z0-9_]*_H\b")
if [ -n "$hits" ]; then
    echo "$hits"; echo "FAIL: device #ifdefs outside kernels/cuda/ and the registry (above)"; fail=1
else
    echo "ok: no device #ifdef outside kernels/cuda/, tests/cuda/ and the registry"
fi
# slots of backend_i that are not marked [optional] (on their line or in the comment just
# above) must appear in the registry's be__required
missing=$(python3 - <<'PY'
import re
src = open("runtime/backend.h").read()
body = src[src.index("int version;"):src.index("} backend_i;")]
pending, req = "", []
for line in body.splitlines():
    m = re.search(r"\(\*([a-z_]+)\)", line)
    if m:
        if "[optional]" not in line and "[optional]" not in pending:
            req.append(m.group(1))
        pending = ""
    elif line.strip().startswith("/*") or line.strip().startswith("*"):
        pending += line
    else:
        pending = ""
reg = open("runtime/backend.c").read()
print(" ".join(s for s in req if f"SLOT({s})" not in reg))
print(len(req))
PY
)
n_req=$(echo "$missing" | tail -1); missing=$(echo "$missing" | head -1)
if [ -n "$missing" ]; then
    echo "FAIL: required slots not checked by runtime/backend.c: $missing"; fail=1
else
    echo "ok: every required slot ($n_req) is checked at load"
fi
exit $fail
