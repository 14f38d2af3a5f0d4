#!/usr/bin/env bash
# Creates .venv (Python 3.11) and installs a requirements file into it. Usage: bash install.sh requirements.txt
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r "${1:-requirements.txt}"
