#!/usr/bin/env python3
"""tests/gpu/tp_gpu.py — the CUDA backend split over two GPUs through NCCL (run by
tests/gpu/run.sh when two devices are visible; $SAMPAN already adds --backend cuda).

  * For an F32 and a Q8_0 model and each reference prompt: the greedy continuation of
    `mpirun -np 2 sampan run --tp 2` and of `--pp 2` equals the single GPU's token for token,
    in the backend's invariant mode (SAMPAN_CUDA_INVARIANT=1: every product a GEMV, so each dot
    product is the single rank's, bit for bit, as MIX_GATHER promises); the default mode is run
    too and its agreement printed, not counted (cuBLAS picks algorithms by shape).
  * `sampan score` at tp=2 gives the single GPU's logits within 1e-5 x std (F32, invariant).
  * A rank killed with SIGKILL mid-request (of a --tp 2 server kept busy by a client) ends the
    job within 40 s (NCCL async errors polled under the watchdog, ncclCommAbort, MPI_Abort),
    with no rank left behind.
Only a machine with two GPUs runs this."""
import array, json, os, signal, subprocess, sys, tempfile, time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import check, finish   # noqa: E402

sampan = os.environ.get("SAMPAN", "build-gpu/sampan")
shared = os.environ.get("SAMPAN_SHARED",
                        os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared"))



def mpirun(n):
    return ["mpirun", "-np", str(n), "--mca", "btl", "self,vader",
            "-x", "SAMPAN_CUDA_INVARIANT", "-x", "CUDA_VISIBLE_DEVICES", "-x", "PATH"]


def run(cmd, env, timeout=600):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])}... exit {r.returncode}: {r.stderr.strip()[-400:]}")
    return r.stdout


def gen(prefix, model, prompt, n, env, extra=()):
    out = run(prefix + [sampan, "run", "-m", model, "-p", prompt, "-n", str(n), "--temp", "0",
                        "--ignore-eos", "--json", "-t", "1", "--kv-type", "f32"] + list(extra), env)
    return json.loads(out)["tokens"]


def first_diff(a, b):
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None if len(a) == len(b) else min(len(a), len(b)))


for name in ["tiny-llama-f32", "small-llama-q8_0"]:
    model = os.path.join(shared, "models", name + ".gguf")
    rdir = os.path.join(shared, "reference", name)
    if not os.path.exists(model) or not os.path.isdir(rdir):
        print(f"skip: {model} not found")
        continue
    prompts = sorted(f for f in os.listdir(rdir) if f.startswith("prompt-") and f.endswith(".json"))[:3]
    for inv in ("1", "0"):
        for pf in prompts:
            ref = json.load(open(os.path.join(rdir, pf)))
            env = dict(os.environ, SAMPAN_CUDA_INVARIANT=inv)
            try:
                one = gen([], model, ref["prompt"], 32, env)
            except Exception as e:
                check(False, f"{name}/{pf}: single GPU: {e}")
                continue
            for layout in ("tp", "pp"):
                what = f"{name}/{pf} --{layout} 2 (invariant={inv})"
                try:
                    two = gen(mpirun(2), model, ref["prompt"], 32, env, [f"--{layout}", "2"])
                except Exception as e:
                    check(False, f"{what}: {e}")
                    continue
                d = first_diff(one, two)
                if inv == "1":
                    check(d is None, f"{what}: greedy tokens equal the single GPU's (first difference {d})")
                else:
                    print(f"INFO {what}: first difference {d} (not counted)")

# teacher-forced logits at tp=2, F32, invariant mode
model = os.path.join(shared, "models", "tiny-llama-f32.gguf")
if os.path.exists(model):
    env = dict(os.environ, SAMPAN_CUDA_INVARIANT="1")
    toks = ",".join(str(t) for t in range(1, 40))
    with tempfile.TemporaryDirectory() as tmp:
        paths = [os.path.join(tmp, "one.f32"), os.path.join(tmp, "two.f32")]
        try:
            run([sampan, "score", "-m", model, "--tokens", toks, "--logits", paths[0], "-t", "1",
                 "--kv-type", "f32"], env)
            run(mpirun(2) + [sampan, "score", "-m", model, "--tokens", toks, "--logits", paths[1],
                             "-t", "1", "--kv-type", "f32", "--tp", "2"], env)
            a, b = array.array("f"), array.array("f")
            a.frombytes(open(paths[0], "rb").read())
            b.frombytes(open(paths[1], "rb").read())
            mean = sum(a) / len(a)
            std = (sum((x - mean) ** 2 for x in a) / len(a)) ** 0.5
            worst = max(abs(x - y) for x, y in zip(a, b)) / std if len(a) == len(b) else float("inf")
            check(worst <= 1e-5, f"tp=2 score logits within 1e-5 x std of one GPU ({worst:.3g})")
        except Exception as e:
            check(False, f"tp=2 score: {e}")

# a killed rank ends the job. A server under mpirun, kept busy by a client, is the rank pair:
# a `run` of these models ends within a second or two on a GPU (512-token context), before any
# kill could land. The ranks are mpirun's children (the wrapper execs the binary: same pid),
# told apart by OMPI_COMM_WORLD_RANK; the non-leader (rank 1) is killed mid-request.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "http"))
import threading
from serverlib import Server, children

model = os.path.join(shared, "models", "small-llama-q8_0.gguf")


def rank_of(pid):
    try:
        env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    except OSError:
        return None
    for e in env:
        if e.startswith(b"OMPI_COMM_WORLD_RANK="):
            return int(e.split(b"=", 1)[1])
    return None


def alive(pid):
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


if os.path.exists(model):
    srv = None
    try:
        srv = Server(model=model, args=["--tp", "2"], prefix=mpirun(2))
        stop = threading.Event()
        served = []

        def client():
            body = {"model": "small-llama-q8_0", "prompt": "Once upon a time", "max_tokens": 400,
                    "temperature": 0, "stream": True}
            while not stop.is_set():
                try:
                    srv.stream("/v1/completions", body)
                    served.append(1)
                except Exception:   # noqa: BLE001  (the server going away ends the client)
                    return
        th = threading.Thread(target=client, daemon=True)
        th.start()
        ranks = {}
        for _ in range(100):
            ranks = {rank_of(k): k for k in children(srv.proc.pid)}
            if 0 in ranks and 1 in ranks and served:
                break
            time.sleep(0.1)
        victim = ranks.get(1)
        if victim is None or not alive(victim) or srv.proc.poll() is not None:
            check(False, f"kill -9 of rank 1: no live rank 1 to kill (ranks {ranks}, "
                         f"{len(served)} requests served, mpirun {srv.proc.poll()})")
        else:
            time.sleep(0.5)   # into a request's decode loop
            os.kill(victim, signal.SIGKILL)
            t0 = time.time()
            try:
                rc = srv.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                rc = None
            elapsed = time.time() - t0
            left = [k for k in ranks.values() if alive(k)]
            check(rc not in (0, None) and elapsed < 40 and not left,
                  f"kill -9 of rank 1 (pid {victim}) of a busy --tp 2 server: job exited {rc} after "
                  f"{elapsed:.1f} s, ranks left {left}")
            for k in left:
                os.kill(k, signal.SIGKILL)
        stop.set()
    except Exception as e:   # noqa: BLE001
        check(False, f"killed rank: {e!r}")
    finally:
        if srv is not None and srv.proc.poll() is None:   # nothing left behind
            for k in children(srv.proc.pid):
                try:
                    os.kill(k, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            srv.proc.kill()
            srv.proc.wait()

finish(skip_if_none=True)
