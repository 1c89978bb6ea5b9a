"""tests/http/serverlib.py — what the HTTP tests share: start `$SAMPAN serve` on a free port and
stop it with SIGTERM (checking a clean exit and a clean sanitizer report), plain HTTP requests
over loopback with the standard library, server-sent event parsing, Prometheus text parsing,
and (from tests/checks.py) the PASS/FAIL tally that ends in the "N passed, N failed" line."""
import http.client, json, os, re, signal, socket, subprocess, sys, threading, time

SAMPAN = os.environ.get("SAMPAN", "build/sampan")
SHARED = os.environ.get("SAMPAN_SHARED",
                        os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared"))
STORIES = os.path.join(SHARED, "models", "stories260K.gguf")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import check, finish   # noqa: E402,F401  (the HTTP tests import them from here)


def need(path):
    if not os.path.exists(path):
        print(f"skip: {path} not found")
        sys.exit(77)


def need_serve():
    """skip (77) while this sampan has no `serve` command (main.c not wired yet)"""
    r = subprocess.run([SAMPAN, "serve", "--help"], capture_output=True, timeout=60)
    if r.returncode != 0 or b"serve" not in r.stdout:
        print(f"skip: {SAMPAN} has no serve command ({r.stderr.decode(errors='replace').strip()[:120]})")
        sys.exit(77)


def reference(n):
    return json.load(open(os.path.join(SHARED, "reference", "stories260K", f"prompt-{n}.json")))


class Server:
    """`sampan serve` in its own process; its stderr is collected by a thread."""

    def __init__(self, model=STORIES, args=(), start_timeout=120, prefix=(), env=None):
        self.cmd = list(prefix) + [SAMPAN, "serve", "-m", model, "--port", "0", "-t", "1"] + list(args)
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
        self.lines = []
        self.listening = threading.Event()
        self.host = self.port = None
        threading.Thread(target=self._drain, args=(self.proc.stderr, True), daemon=True).start()
        threading.Thread(target=self._drain, args=(self.proc.stdout, False), daemon=True).start()
        if not self.listening.wait(start_timeout) or self.port is None:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("server did not start: " + " | ".join(self.lines[-20:]))

    def _drain(self, f, is_err):
        for raw in f:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            m = re.search(r"listening on http://(\[[^\]]+\]|[^:]+):(\d+)", line)
            if is_err and m:
                self.host = m.group(1).strip("[]")
                self.port = int(m.group(2))
                self.listening.set()
        if is_err:
            self.listening.set()

    @property
    def base(self):
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{h}:{self.port}"

    def stop(self, timeout=60):
        """SIGTERM; returns (exit code, stderr text). Under a launcher (mpirun) the ranks get the
        signal themselves, as scancel would send it: Open MPI's mpirun exits 1 whenever it is
        signalled, however its ranks end."""
        if self.proc.poll() is None:
            kids = children(self.proc.pid) if self.cmd[0] != SAMPAN else []
            for k in kids:
                try:
                    os.kill(k, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            if not kids:
                self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
            self.lines.append("(killed after the SIGTERM timeout)")
        time.sleep(0.1)
        return rc, "\n".join(self.lines)

    def check_clean_exit(self, what):
        rc, err = self.stop()
        bad = [l for l in err.splitlines() if "Sanitizer" in l or "runtime error:" in l]
        check(rc == 0 and not bad, f"{what}: SIGTERM ends the server with exit 0 and no sanitizer report "
                                   f"(exit {rc}{'; ' + bad[0] if bad else ''})")
        if rc != 0 or bad:
            print("\n".join(err.splitlines()[-40:]))

    # ---- plain HTTP ------------------------------------------------------------------------
    def conn(self, timeout=120):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=120):
        """(status, headers dict with lower-case names, body bytes)"""
        c = self.conn(timeout)
        hdr = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
            hdr.setdefault("Content-Type", "application/json")
        if isinstance(body, str):
            body = body.encode()
        c.request(method, path, body=body, headers=hdr)
        r = c.getresponse()
        data = r.read()
        h = {k.lower(): v for k, v in r.getheaders()}
        c.close()
        return r.status, h, data

    def json(self, method, path, body=None, headers=None):
        st, h, data = self.request(method, path, body, headers)
        try:
            j = json.loads(data)
        except ValueError:
            j = None
        return st, h, j

    def stream(self, path, body, headers=None):
        """POST with stream: true; returns (status, content type, [parsed data payloads],
        raw text). The payload "[DONE]" stays a string."""
        st, h, data = self.request("POST", path, body, headers)
        text = data.decode("utf-8", "replace")
        return st, h.get("content-type", ""), sse_events(text), text

    def metrics(self, headers=None):
        st, h, data = self.request("GET", "/metrics", headers=headers)
        return st, h, parse_metrics(data.decode())


def children(pid):
    """pids whose parent is pid (from /proc)"""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = open(f"/proc/{d}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d))
    return out


def sse_events(text):
    """payloads of `data:` events, JSON-decoded where they are JSON; comments skipped"""
    out = []
    for block in text.split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: "):
                p = line[6:]
                if p == "[DONE]":
                    out.append(p)
                else:
                    try:
                        out.append(json.loads(p))
                    except ValueError:
                        out.append(("bad-json", p))
    return out


def parse_metrics(text):
    """{name or name{labels}: float}, plus '#TYPE name': type"""
    m = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ", 3)
            m["#TYPE " + name] = typ
        elif line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            m[k] = float(v)
    return m


def wait_metric(srv, name, want, timeout=30.0):
    """polls /metrics until name == want; returns the last value"""
    end = time.time() + timeout
    v = None
    while time.time() < end:
        st, _, m = srv.metrics()
        v = m.get(name)
        if v == want:
            return v
        time.sleep(0.1)
    return v


def raw_exchange(host, port, data, read_timeout=10.0, send_all=True):
    """sends raw bytes, returns everything the server sends back until it closes or goes
    quiet (bytes; b'' if closed without a response)"""
    s = socket.create_connection((host, port), timeout=read_timeout)
    try:
        if send_all:
            s.sendall(data)
        else:
            s.send(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out:
                head, _, rest = out.partition(b"\r\n\r\n")
                mlen = re.search(rb"content-length:\s*(\d+)", head, re.I)
                if mlen and len(rest) >= int(mlen.group(1)):
                    break
        return out
    finally:
        s.close()
