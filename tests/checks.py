"""tests/checks.py — the PASS/FAIL tally of the Python tests: check() prints one line per check,
finish() the closing "N passed, N failed" line and exits 1 if any check failed (77, meson's
skip, when asked to and nothing ran). A test puts tests/ on sys.path and imports both."""
import sys

passed = failed = 0


def check(ok, what):
    global passed, failed
    print(("PASS " if ok else "FAIL ") + what, flush=True)
    if ok:
        passed += 1
    else:
        failed += 1
    return ok


def finish(skip_if_none=False):
    print(f"{passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else (77 if skip_if_none and passed == 0 else 0))
