#!/usr/bin/env bash
# Creates a virtual environment (Python 3.11) and installs a requirements file into it, with the tested pins of
# constraints.txt unless --no-lock. Usage: bash install.sh [REQUIREMENTS [VENV]] [--no-lock]
#   bash install.sh                                   # .venv, requirements.txt, pinned
#   bash install.sh requirements-dev.txt              # .venv, with the test tools
#   bash install.sh requirements-monailabel.txt .venv-monailabel --no-lock   # beside MONAI Label
set -euo pipefail
cd "$(dirname "$0")"
lock=(-c constraints.txt)
positional=()
for arg in "$@"; do
  if [ "$arg" = "--no-lock" ]; then lock=(); else positional+=("$arg"); fi
done
requirements="${positional[0]:-requirements.txt}"
venv="${positional[1]:-.venv}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -r "$requirements" "${lock[@]}"
