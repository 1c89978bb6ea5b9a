#!/usr/bin/env python3
"""tests/comm/comm_test.py — runs the communicator's tests that need mpirun.

  run NP [--chunk N] [--tcp] PROG ARGS..   mpirun -np NP PROG ARGS (exit code passed through)
  killed PROG     kill -9 one rank of a running job (in allreduce, bcast_idle or alltoallv
                  loops): every process (mpirun too) must be gone within 30 s and mpirun must
                  exit non-zero
  deadpeer PROG   the same with mpirun told not to end the job (orte_abort_on_non_zero_status
                  0): the watchdog alone must notice the dead node-local peer within seconds
                  (2 ranks; allreduce, bcast_idle, alltoallv)
  stuck PROG      rank 1 never enters the allreduce: with SAMPAN_COMM_TIMEOUT=3 rank 0 must
                  abort with the timeout message after 3 s (not before, and within 3 + 5 s)
  bench PROG      the all-reduce benchmark's JSON: sizes, #wrong, algbw/busbw arithmetic
  bench-a2a PROG  the same for the all-to-all benchmark (busbw = algbw * (n-1)/n)

Every mpirun runs in its own session with a time limit; leftovers are killed by process group.
Prints "N passed, N failed" (the run subcommand leaves that to the program).
"""
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
passed = failed = 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
        print('ok   ' + what)
    else:
        failed += 1
        print('FAIL ' + what)


def mpi_env(np, extra=None):
    env = dict(os.environ)
    env.update(OMPI_ALLOW_RUN_AS_ROOT='1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM='1')
    if np > (os.cpu_count() or 1):
        env['OMPI_MCA_mpi_yield_when_idle'] = '1'
    supp = os.path.join(HERE, '..', 'lsan.supp')
    if 'LSAN_OPTIONS' not in env and os.path.exists(supp):
        env['LSAN_OPTIONS'] = 'suppressions=%s:fast_unwind_on_malloc=0' % os.path.abspath(supp)
    env.update(extra or {})
    return env


def mpirun_cmd(np, args, mca=()):
    return (['mpirun', '-np', str(np), '--oversubscribe'] + list(mca) + list(args))


def kill_group(p):
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def alive(pid):
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rsplit(')', 1)[1].split()[0] not in ('Z', 'X')
    except (OSError, IndexError):   # gone between open and read: ESRCH (ProcessLookupError)
        return False


def cmd_run(argv):
    np = int(argv[0])
    argv = argv[1:]
    mca = ['--mca', 'btl', 'self,vader']
    extra = {}
    while argv and argv[0].startswith('--'):
        if argv[0] == '--chunk':
            extra['SAMPAN_COMM_MAX_COUNT'] = argv[1]
            argv = argv[2:]
        elif argv[0] == '--tcp':
            mca = ['--mca', 'btl', 'self,tcp', '--mca', 'btl_tcp_if_include', 'lo',
                   '--mca', 'oob_tcp_if_include', 'lo']
            argv = argv[1:]
        else:
            break
    p = subprocess.Popen(mpirun_cmd(np, argv, mca), env=mpi_env(np, extra),
                         stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        rc = p.wait(timeout=240)
    except subprocess.TimeoutExpired:
        kill_group(p)
        p.wait()
        print('FAIL mpirun -np %d %s: no exit within 240 s' % (np, ' '.join(argv)))
        return 1
    kill_group(p)   # nothing should be left; make sure
    return rc


def scenario(prog, mode, np=2, victim=None, mca=(), env=None, kill_after=1.0, limit=40):
    """Starts `test_comm mode` under mpirun, kills rank `victim` (if any) after kill_after s,
    then waits for mpirun and every rank to be gone. Returns (mpirun rc, seconds until mpirun
    exited, {rank: seconds until gone}, [(seconds, stderr line)]), times counted from the kill
    (or from the moment every rank had reported, when nothing is killed)."""
    p = subprocess.Popen(mpirun_cmd(np, [prog, mode], ['--mca', 'btl', 'self,vader'] + list(mca)),
                         env=mpi_env(np, env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines, errs = queue.Queue(), []
    threading.Thread(target=lambda: [lines.put(l) for l in p.stdout], daemon=True).start()
    t_err = threading.Thread(target=lambda: errs.extend((time.monotonic(), l) for l in p.stderr),
                             daemon=True)
    t_err.start()
    pids, start = {}, time.monotonic()
    while len(pids) < np and time.monotonic() - start < 30:
        try:
            f = lines.get(timeout=0.5).split()
        except queue.Empty:
            if p.poll() is not None:
                break
            continue
        if len(f) == 4 and f[0] == 'rank':
            pids[int(f[1])] = int(f[3])
    if len(pids) < np:
        kill_group(p)
        p.wait()
        t_err.join(5)
        return None, None, {}, [(0, 'ranks did not start\n')] + errs
    if victim is not None:
        time.sleep(kill_after)
        t0 = time.monotonic()
        os.kill(pids[victim], signal.SIGKILL)
    else:
        t0 = time.monotonic()
    gone, t_mpirun = {}, None
    while time.monotonic() - t0 < limit:
        for r, pid in pids.items():
            if r not in gone and not alive(pid):
                gone[r] = time.monotonic() - t0
        if t_mpirun is None and p.poll() is not None:
            t_mpirun = time.monotonic() - t0
        if t_mpirun is not None and len(gone) == np:
            break
        time.sleep(0.01)
    kill_group(p)
    rc = p.wait()
    t_err.join(5)
    return rc, t_mpirun, gone, [(t - t0, l) for t, l in errs]


def text(err):
    return ''.join(l for _, l in err)


def first_line(err, needle):
    """seconds (from the kill) at which a stderr line containing needle arrived, or None"""
    return next((t for t, l in err if needle in l), None)


def fmt(t_mpirun, gone):
    ranks = ', '.join('rank %d %.2f s' % (r, t) for r, t in sorted(gone.items()))
    return 'mpirun %s; %s' % ('%.2f s' % t_mpirun if t_mpirun is not None else 'still running',
                              ranks)


def cmd_killed(prog):
    # Open MPI's own reaction: mpirun notices the signal death and ends the job
    for mode, victim, np in (('loop', 1, 2), ('loop', 0, 2), ('idle', 0, 2), ('loop', 2, 3),
                             ('a2a', 1, 3)):
        rc, tm, gone, err = scenario(prog, mode, np=np, victim=victim)
        ok = rc not in (None, 0) and tm is not None and tm <= 30 and len(gone) == np and \
            max(gone.values()) <= 30
        check(ok, 'killed rank %d of %d (%s): mpirun exit %s; %s' % (victim, np, mode, rc,
                                                                     fmt(tm, gone)))
        if not ok:
            print(text(err)[-2000:])


def cmd_deadpeer(prog):
    # mpirun keeps the job when a rank dies: the survivors' watchdogs must end it
    keep = ['--mca', 'orte_abort_on_non_zero_status', '0']
    host = socket.gethostname()
    for mode, victim, op in (('loop', 1, 'allreduce'), ('idle', 0, 'bcast_idle'),
                             ('a2a', 1, 'alltoallv')):
        rc, tm, gone, err = scenario(prog, mode, victim=victim, mca=keep,
                                     env={'SAMPAN_COMM_TIMEOUT': '60'}, limit=30)
        survivor = 1 - victim
        msg = 'sampan: %s:rank %d: %s: rank %d (pid ' % (host, survivor, op, victim)
        seen = first_line(err, msg)
        # the watchdog looks once a second; leaving then takes MPI_Abort (about 1 s here)
        ok = rc not in (None, 0) and seen is not None and seen <= 3 and survivor in gone and \
            gone[survivor] <= 15 and 'on this node has exited (a peer is dead)' in text(err)
        check(ok, 'dead peer, %s, rank %d killed, mpirun not ending the job: noticed after %s s;'
              ' mpirun exit %s; %s' % (mode, victim, '%.2f' % seen if seen is not None else '-',
                                      rc, fmt(tm, gone)))
        if not ok:
            print(text(err)[-2000:])


def cmd_stuck(prog):
    host = socket.gethostname()
    rc, tm, gone, err = scenario(prog, 'stuck', env={'SAMPAN_COMM_TIMEOUT': '3'}, limit=30)
    msg = 'sampan: %s:rank 0: allreduce timed out after 3 s (a peer is dead or stuck)' % host
    seen = first_line(err, msg)
    ok = rc not in (None, 0) and seen is not None and 2.5 <= seen <= 6 and len(gone) == 2 and \
        max(gone.values()) <= 15
    check(ok, 'stuck peer, timeout 3 s: message after %s s; mpirun exit %s; %s' %
          ('%.2f' % seen if seen is not None else '-', rc, fmt(tm, gone)))
    if not ok:
        print(text(err)[-2000:])


def cmd_bench(prog, op='allreduce'):
    """op: allreduce (in place, busbw factor 2(n-1)/n) or alltoall (each rank's bytes split in
    n equal blocks, so a size is rounded down to n elements; factor (n-1)/n)"""
    for np, extra in ((2, ['--max', '1M', '--iters', '20']),
                      (3, ['--max', '256K', '--dtype', 'bf16', '--factor', '2', '--iters', '20'])):
        p = subprocess.run(mpirun_cmd(np, [prog] + extra, ['--mca', 'btl', 'self,vader']),
                           env=mpi_env(np), stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=120)
        try:
            doc = json.loads(p.stdout)
        except ValueError:
            check(False, '%s -np %d: JSON: %s %s' % (op, np, p.stdout[-500:], p.stderr[-500:]))
            continue
        res = doc.get('results', [])
        factor = 2 if '--factor' in extra else 4
        top = 1 << 20 if np == 2 else 256 << 10
        es = 2 if 'bf16' in extra else 4
        blocks = np if op == 'alltoall' else 1
        sizes = []
        s = 4096
        while s <= top:
            sizes.append((s // es) // blocks * blocks * es)
            s *= factor
        bus = (np - 1) / np if op == 'alltoall' else 2 * (np - 1) / np
        check(p.returncode == 0 and doc.get('ranks') == np and doc.get('bench') == op,
              '%s -np %d: exit %d, ranks %s' % (op, np, p.returncode, doc.get('ranks')))
        check([r['bytes'] for r in res] == sizes, '%s -np %d sizes %s' %
              (op, np, [r['bytes'] for r in res]))
        check(all(r['wrong'] == 0 for r in res), '%s -np %d: no wrong results' % (op, np))
        check(all(r['count'] * es == r['bytes'] and r['type'] == ('bf16' if es == 2 else 'f32')
                  for r in res), '%s -np %d: count and type columns' % (op, np))
        arith = all(abs(r['algbw_GBps'] - r['bytes'] / (r['time_us'] * 1e-6) * 1e-9) <=
                    1e-3 * r['algbw_GBps'] + 1e-4 and
                    abs(r['busbw_GBps'] - r['algbw_GBps'] * bus) <=
                    1e-3 * r['algbw_GBps'] + 1e-4 for r in res)
        check(arith and abs(doc.get('busbw_factor', 0) - bus) < 1e-5,
              '%s -np %d: algbw = bytes/time, busbw = algbw*%.4f' % (op, np, bus))
        check(doc.get('ceiling', {}).get('memcpy_GBps', 0) > 0, '%s -np %d: ceiling %s' %
              (op, np, doc.get('ceiling')))
        sys.stdout.write(p.stderr)


def cmd_bench_a2a(prog):
    cmd_bench(prog, 'alltoall')


def main():
    if len(sys.argv) < 3:
        print(__doc__)
        return 2
    what, rest = sys.argv[1], sys.argv[2:]
    if what == 'run':
        return cmd_run(rest)
    {'killed': cmd_killed, 'deadpeer': cmd_deadpeer, 'stuck': cmd_stuck,
     'bench': cmd_bench, 'bench-a2a': cmd_bench_a2a}[what](rest[0])
    print('%d passed, %d failed' % (passed, failed))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
