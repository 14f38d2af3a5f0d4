#!/usr/bin/env bash
# Installs everything into .venv and runs the main job. Usage: bash run_demo.sh [--full] [--resume]
set -euo pipefail
cd "$(dirname "$0")"
bash install.sh requirements.txt
.venv/bin/python -m tools.demo "$@"
