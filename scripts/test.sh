#!/usr/bin/env bash
# Runs the test suite (installing what it needs on first use). Extra arguments go to pytest.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO/scripts/install.sh"
cd "$REPO"
exec python -m pytest "$@"
