#!/usr/bin/env bash
# tests/http/venv.sh — a Python virtual environment with the official `openai` package, for
# tests/http/openai_test.py (which skips when it is missing). Idempotent; needs python3-venv
# and PyPI.
#   tests/http/venv.sh [VENV_DIR]      (default: build/venv)
set -euo pipefail
cd "$(dirname "$0")/../.."
V=${1:-build/venv}
if [ ! -x "$V/bin/python" ]; then
    python3 -m venv "$V"
fi
if ! "$V/bin/python" -c "import openai" 2>/dev/null; then
    "$V/bin/pip" install -q --disable-pip-version-check openai
fi
"$V/bin/python" -c "import openai; print('venv: openai', openai.__version__, 'in $V')"
