#!/usr/bin/env bash
# Idempotent environment set-up, sourced by scripts/quickstart.sh and scripts/test.sh.
# Creates a virtual environment (default: <repo>/.venv, override with OVRSIS_VENV), installs
# requirements.txt, detectron2 (the PyPI sdist pb1-detectron2==0.6 built without its C++
# extension, unless a detectron2 is already importable) and ovrsis itself in editable mode.
# A stamp file makes repeated calls return in well under a second.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${OVRSIS_VENV:-$REPO/.venv}"
PY="$VENV/bin/python"
STAMP="$VENV/.ovrsis-install-stamp"
want="$(cat "$REPO/requirements.txt" "$REPO/scripts/install.sh" "$REPO/pyproject.toml" | sha256sum | cut -d' ' -f1)"

if [ -x "$PY" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  export PATH="$VENV/bin:$PATH"
  return 0 2>/dev/null || exit 0
fi

echo "[ovrsis] setting up the environment in $VENV (first run only)"
if [ ! -x "$PY" ]; then
  "${PYTHON:-python3}" -m venv "$VENV"
fi
pip_q() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }
# torch first: detectron2's setup.py imports it.
pip_q "torch>=2.4" "torchvision>=0.19"
pip_q -r "$REPO/requirements.txt"

if ! "$PY" -c "import detectron2" 2>/dev/null; then
  echo "[ovrsis] building detectron2 0.6 (pure Python, no C++ extension)"
  work="$(mktemp -d)"
  "$PY" -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: \
      --no-build-isolation -d "$work" "pb1-detectron2==0.6"
  tar -xzf "$work"/pb1-detectron2-0.6.tar.gz -C "$work"
  src="$(find "$work" -maxdepth 1 -type d -name 'pb1*detectron2*0.6' | head -n1)"
  # The sdist lacks detectron2/layers/csrc: drop the extension; ovrsis uses no compiled op.
  sed -i 's/ext_modules=get_extensions()/ext_modules=[]/' "$src/setup.py"
  grep -q 'ext_modules=\[\]' "$src/setup.py" || { echo "detectron2 setup.py patch failed" >&2; exit 1; }
  pip_q --no-build-isolation "$src"
  rm -rf "$work"
fi

# Editable in "compat" mode: the clone goes on sys.path through a .pth file, so `import ovrsis`
# finds the package even when Python runs in the folder holding the clone (a clone folder named
# ovrsis/ would otherwise shadow it as a namespace package: the default editable finder comes after
# the path search). tests/test_first_hour.py checks it.
pip_q --no-build-isolation --no-deps -e "$REPO" --config-settings editable_mode=compat
"$PY" -c "import ovrsis.compat, detectron2, open_clip, timm; print('[ovrsis] environment ready')"
echo "$want" > "$STAMP"
export PATH="$VENV/bin:$PATH"
