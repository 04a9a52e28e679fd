#!/usr/bin/env bash
# The main job on the built-in default: trains a small CAT-Seg on the synthetic remote-sensing
# scenes (CPU, a few minutes) and prints the seen/unseen evaluation. Extra arguments are
# passed to train_net.py (e.g. SOLVER.MAX_ITER 100, --num-gpus 2).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO/scripts/install.sh"
cd "$REPO"
exec python train_net.py --config-file configs/quickstart.yaml "$@"
