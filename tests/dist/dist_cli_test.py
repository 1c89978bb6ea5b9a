#!/usr/bin/env python3
"""tests/dist/dist_cli_test.py — what users see when they start ranks:
  * bad layouts (world size != tp x pp, heads not divisible by tp, more stages than layers,
    --tp without mpirun) are reported once, by rank 0, with the numbers, and every rank exits
    non-zero;
  * per-rank peak RSS at tp=2 on a synthetic model of over 500 MB is at most 0.6x the single
    rank's (each rank maps only its slices);
  * a rank killed mid-generation takes the whole job down within 30 s (no hang)."""
import json, os, signal, subprocess, sys, time
sys.path.insert(0, os.path.dirname(__file__))
from mpi import mpirun
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import check, finish   # noqa: E402

sampan = os.environ.get("SAMPAN", "build/sampan")
shared = os.environ.get("SAMPAN_SHARED", os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared"))
tmp = os.environ.get("MESON_BUILD_ROOT", "/tmp")   # a cache of deterministic synthetic models
tiny = os.path.join(shared, "models", "tiny-llama-f32.gguf")
if not os.path.exists(tiny):
    print(f"skip: {tiny} not found"); sys.exit(77)

# ---- bad layouts: one message from rank 0, every rank non-zero, quickly
cases = [(2, ["--tp", "4"], "4 ranks, but the job has 2"),
         (3, ["--tp", "3"], "must divide the 4 attention heads"),
         (3, ["--pp", "3"], "3 pipeline stages for 2 layers"),
         (4, ["--tp", "2", "--pp", "3"], "6 ranks, but the job has 4")]
for n, extra, expect in cases:
    t0 = time.time()
    r = subprocess.run(mpirun(n) + [sampan, "run", "-m", tiny, "-p", "hi", "-n", "2", "-t", "1"] + extra,
                       capture_output=True, text=True, timeout=120)
    lines = [l for l in r.stderr.splitlines() if l.startswith("sampan:")]
    check(r.returncode != 0 and len(lines) == 1 and expect in lines[0] and time.time() - t0 < 60,
          f"np {n} {' '.join(extra)}: exit {r.returncode}, {len(lines)} message(s): {lines[:2]}")
r = subprocess.run([sampan, "run", "-m", tiny, "-p", "hi", "--tp", "2"], capture_output=True, text=True, timeout=60)
check(r.returncode == 1 and "but the job has 1" in r.stderr, f"--tp 2 without mpirun: {r.stderr.strip()}")

# ---- per-rank RSS at tp=2 vs one rank
big = os.path.join(tmp, "dist-tinyllama-q8_0.gguf")
if not os.path.exists(big):
    subprocess.run([sampan, "model", "synth", "-o", big + f".part{os.getpid()}", "--shape", "tinyllama-1.1b", "--type", "Q8_0", "--seed", "2"],
                   check=True, timeout=600)
    os.replace(big + f".part{os.getpid()}", big)   # atomic: a concurrent run never reads half a file
size = os.path.getsize(big)
args = ["run", "-m", big, "-p", "Once upon a time", "-n", "4", "--json", "-t", "1"]
one = json.loads(subprocess.run([sampan] + args, capture_output=True, text=True, timeout=600, check=True).stdout)
two = json.loads(subprocess.run(mpirun(2) + [sampan] + args + ["--tp", "2"], capture_output=True, text=True,
                                timeout=600, check=True).stdout)
r1 = one["timings"]["rank_peak_rss_bytes"][0]
r2 = two["timings"]["rank_peak_rss_bytes"]
check(size > 500e6 and len(r2) == 2 and max(r2) <= 0.6 * r1,
      f"model {size / 2**20:.0f} MiB: peak RSS one rank {r1 / 2**20:.0f} MiB, tp=2 ranks "
      f"{[round(x / 2**20) for x in r2]} MiB = {max(r2) / r1:.2f}x (limit 0.6x)")
check(one["tokens"] == two["tokens"], "tp=2 generates the single rank's tokens on the big model")

# ---- a killed rank ends the job within 30 s
p = subprocess.Popen(mpirun(2) + [sampan, "run", "-m", big, "-p", "Once upon a time", "-n", "1500",
                                  "--ignore-eos", "-t", "1", "--tp", "2"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
def ranks():
    out = subprocess.run(["pgrep", "-f", f"sampan run -m {big}"], capture_output=True, text=True).stdout
    return [int(x) for x in out.split() if int(x) != p.pid]
victims = []
for _ in range(600):
    victims = [pid for pid in ranks() if open(f"/proc/{pid}/cmdline", "rb").read().startswith(sampan.encode())]
    if len(victims) == 2:
        break
    time.sleep(0.1)
time.sleep(3)   # let them get into the decode loop
killed = victims[-1] if victims else None
if killed:
    os.kill(killed, signal.SIGKILL)
t0 = time.time()
try:
    p.wait(timeout=60)
except subprocess.TimeoutExpired:
    p.kill()
elapsed = time.time() - t0
left = [pid for pid in victims if os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().split()[2] != "Z"]
check(killed is not None and p.returncode not in (0, None) and elapsed < 30 and not left,
      f"kill -9 of rank pid {killed}: job exited {p.returncode} after {elapsed:.1f} s, ranks left {left}")

finish()
