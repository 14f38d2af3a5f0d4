#!/usr/bin/env bash
# Installs everything into .venv and runs the main job: the shipped weights on synthetic and real hearts (a few
# minutes), then a short training run of every workflow whose models are undertrained (tools/demo.py).
# Usage: bash run_demo.sh [--skip-training] [--full] [--resume] (python -m tools.demo --help for more)
set -euo pipefail
cd "$(dirname "$0")"
bash install.sh requirements.txt
.venv/bin/python -m tools.demo "$@"
