#!/usr/bin/env python3
"""tests/dist/serve_dist_test.py — a rank of a `--tp 2` server dies while a stream is open.

`mpirun -np 2 sampan serve --tp 2` on a model slow enough that a 1000-token stream is surely
mid-way; rank 1 is killed with SIGKILL. The client of the open stream must receive an error
event and `data: [DONE]`, a non-streamed request in flight must get a JSON error, and every
rank (and mpirun) must be gone within 35 s, mpirun exiting non-zero. Two launchers' reactions:
  * plain mpirun: it sends the survivors SIGTERM about 1 s after the death and SIGKILL 1 s
    later; the leader's watchdog (or its signal thread) must tell the clients before that;
  * mpirun told to keep the job (orte_abort_on_non_zero_status 0): only the leader's watchdog
    notices, and it must end the job itself.
And with mpirun keeping the job, the leader killed mid-stream: the follower's watchdog must
notice and end the job.
Each mpirun runs in its own session with a time limit; leftovers are killed by process group."""
import http.client, json, os, re, signal, socket, subprocess, sys, threading, time
sys.path.insert(0, os.path.dirname(__file__))
from mpi import mpirun
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import check, finish   # noqa: E402

sampan = os.environ.get("SAMPAN", "build/sampan")
shared = os.environ.get("SAMPAN_SHARED", os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared"))
model = os.path.join(shared, "models", "small-llama-q4_0.gguf")
if not os.path.exists(model):
    print(f"skip: {model} not found"); sys.exit(77)
r = subprocess.run([sampan, "serve", "--help"], capture_output=True, timeout=60)
if r.returncode != 0 or b"--drain-seconds" not in r.stdout:
    print(f"skip: {sampan} has no serve command with --drain-seconds"); sys.exit(77)



def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def rank_pids(root):
    """{world rank: pid} of the sampan processes under mpirun (from /proc)"""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = open(f"/proc/{d}/stat").read()
            if int(stat.rsplit(")", 1)[1].split()[1]) != root:
                continue
            env = open(f"/proc/{d}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        for e in env:
            if e.startswith(b"OMPI_COMM_WORLD_RANK="):
                out[int(e.split(b"=", 1)[1])] = int(d)
    return out


def scenario(name, mca, victim=1):
    lines, port = [], [None]
    p = subprocess.Popen(mpirun(2) + list(mca) + [sampan, "serve", "-m", model, "--tp", "2", "--port", "0", "-t", "1",
                                                  "-c", "1024", "--kv-mem", "32M"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         start_new_session=True)
    up = threading.Event()

    def drain():
        for raw in p.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            lines.append((time.monotonic(), line))
            m = re.search(r"listening on http://[^:]+:(\d+)", line)
            if m:
                port[0] = int(m.group(1))
                up.set()
        up.set()
    threading.Thread(target=drain, daemon=True).start()
    try:
        if not up.wait(120) or port[0] is None:
            check(False, f"{name}: the server did not start: {[l for _, l in lines][-10:]}")
            return
        ranks = {}
        for _ in range(100):
            ranks = rank_pids(p.pid)
            if len(ranks) == 2:
                break
            time.sleep(0.1)
        body = json.dumps({"prompt": "Once upon a time", "max_tokens": 1000, "ignore_eos": True,
                           "stream": True, "temperature": 0}).encode()
        s = socket.create_connection(("127.0.0.1", port[0]), timeout=60)
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        got = b""
        while got.count(b"data: ") < 3:
            c = s.recv(65536)
            if not c:
                break
            got += c
        plain = {}

        def non_streamed():
            c = http.client.HTTPConnection("127.0.0.1", port[0], timeout=40)
            try:
                c.request("POST", "/v1/completions", json.dumps({"prompt": "Once upon a time", "max_tokens": 1000,
                                                                 "ignore_eos": True, "temperature": 0}),
                          {"Content-Type": "application/json"})
                res = c.getresponse()
                plain["status"], plain["body"] = res.status, res.read()
            except OSError as e:
                plain["status"], plain["body"] = repr(e), b""
        th = threading.Thread(target=non_streamed, daemon=True)
        th.start()
        time.sleep(0.5)
        check(len(ranks) == 2 and got.startswith(b"HTTP/1.1 200") and got.count(b"data: ") >= 3,
              f"{name}: ranks {ranks}, a stream is running")
        if len(ranks) != 2:
            return
        t0 = time.monotonic()
        os.kill(ranks[victim], signal.SIGKILL)
        if victim == 0:   # the clients are gone with the leader: only the ending is checked
            got = b""
        s.settimeout(40)
        t_done = None
        try:
            while victim == 1:
                c = s.recv(65536)
                if not c:
                    break
                got += c
                if t_done is None and b"data: [DONE]" in got:
                    t_done = time.monotonic() - t0
        except OSError:
            pass
        s.close()
        th.join(40)
        gone = {}
        while time.monotonic() - t0 < 40 and (len(gone) < 2 or p.poll() is None):
            for r, pid in ranks.items():
                if r not in gone and not alive(pid):
                    gone[r] = time.monotonic() - t0
            time.sleep(0.05)
        t_mpirun = time.monotonic() - t0 if p.poll() is not None else None
        text = got.decode("utf-8", "replace")
        events = [l[6:] for l in re.split(r"\r?\n", text) if l.startswith("data: ")]
        errors = []
        for e in events:
            try:
                j = json.loads(e)
            except ValueError:
                continue
            if "error" in j or any(ch.get("finish_reason") == "error" for ch in j.get("choices", [])):
                errors.append(j)
        if victim == 1:
            check(bool(errors) and events[-1:] == ["[DONE]"],
                  f"{name}: the stream got an error event and data: [DONE] "
                  f"{'%.2f s' % t_done if t_done is not None else 'never'} after the kill "
                  f"({len(events)} events; last: {events[-2:] if events else None})")
        try:
            pj = json.loads(plain.get("body") or b"null")
        except ValueError:
            pj = None
        if victim == 1:
            check(isinstance(plain.get("status"), int) and plain["status"] >= 500 and isinstance(pj, dict)
                  and "error" in pj, f"{name}: the non-streamed request in flight got a JSON error "
                                     f"({plain.get('status')} {(plain.get('body') or b'')[:160]!r})")
        check(len(gone) == 2 and max(gone.values()) < 35 and t_mpirun is not None and t_mpirun < 35
              and p.returncode not in (0, None),
              f"{name}: every rank gone within 35 s ({', '.join(f'rank {r} {t:.2f} s' for r, t in sorted(gone.items()))}; "
              f"mpirun exit {p.returncode} after {t_mpirun if t_mpirun is None else round(t_mpirun, 2)} s)")
        said = [l for t, l in lines if t >= t0 and l.startswith("sampan:")]
        print("  server said after the kill: " + " | ".join(said[:6]))
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()


scenario("mpirun", [])
scenario("mpirun keeping the job", ["--mca", "orte_abort_on_non_zero_status", "0"])
scenario("leader killed, mpirun keeping the job", ["--mca", "orte_abort_on_non_zero_status", "0"], victim=0)
finish()
