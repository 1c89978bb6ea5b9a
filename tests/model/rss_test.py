#!/usr/bin/env python3
"""tests/model/rss_test.py — peak RSS of `sampan run` stays within mapped weights + KV cache +
64 MiB. Makes a synthetic tinyllama-1.1b-shaped model cut to 2 layers (Q4_0, ~120 MB of weights)
with `sampan model synth`, generates with it, and compares the peak_rss_bytes it reports (and
the kernel's own figure from wait4) against weight_bytes + kv_cache_bytes + 64 MiB."""
import json, os, resource, subprocess, sys

sampan = os.environ.get("SAMPAN", "build/sampan")
tmp = os.environ.get("MESON_BUILD_ROOT", "/tmp")   # a cache of deterministic synthetic models
model = os.path.join(tmp, "rss-test-tinyllama-2l-q4_0.gguf")
if not os.path.exists(model):
    subprocess.run([sampan, "model", "synth", "-o", model + f".part{os.getpid()}", "--shape", "tinyllama-1.1b",
                    "--type", "Q4_0", "--layers", "2", "--seed", "3"], check=True)
    os.replace(model + f".part{os.getpid()}", model)   # atomic: a concurrent run never reads half a file
cmd = [sampan, "run", "-m", model, "-p", "Once upon a time, in a city by the sea, " * 8,
       "-n", "32", "-c", "1024", "--temp", "0", "--json"]
p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
out, err = p.communicate(timeout=300)
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
if p.returncode != 0:
    print(f"FAIL sampan run exited {p.returncode}: {err.strip()}")
    print("0 passed, 1 failed")
    sys.exit(1)
r = json.loads(out)["timings"]
limit = r["weight_bytes"] + r["kv_cache_bytes"] + 64 * 2**20
passed = failed = 0
for what, rss in (("reported peak_rss_bytes", r["peak_rss_bytes"]), ("wait4 ru_maxrss", ru.ru_maxrss * 1024)):
    ok = rss <= limit
    print(f"{'PASS' if ok else 'FAIL'} {what} {rss / 2**20:.1f} MiB <= weights {r['weight_bytes'] / 2**20:.1f} MiB"
          f" + KV {r['kv_cache_bytes'] / 2**20:.1f} MiB + 64 MiB = {limit / 2**20:.1f} MiB")
    passed += ok
    failed += not ok
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
