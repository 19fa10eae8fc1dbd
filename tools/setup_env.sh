#!/usr/bin/env bash
# Create or reuse the project virtual environment (.venv) and install what is
# missing: the tested stack, mmcv built with its ops, this package in editable
# mode with its test and mim extras. Every install is constrained by
# constraints.txt (the exact tested versions; setup.cfg only states ranges),
# and the torch and mmcv versions come from there too, so that file is the one
# place to change them. Idempotent: a second run checks and returns in seconds;
# a changed constraints.txt, setup.cfg or this script runs the set-up again.
#
#   bash tools/setup_env.sh            # what `make setup` runs
#   VENV=/path/to/venv bash tools/setup_env.sh
#   EXTRAS=tests,mim,mmpretrain bash tools/setup_env.sh
#   CONSTRAINTS=/path/to/constraints.txt bash tools/setup_env.sh
#
# Why the steps are ordered as they are: ../docs/install.md.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
EXTRAS=${EXTRAS:-tests,mim}
CONSTRAINTS=${CONSTRAINTS:-$ROOT/constraints.txt}
LOG=$VENV/setup.log
STEPS=7
STEP=0

step() {
  STEP=$((STEP + 1))
  STEP_START=$(date +%s)
  echo "[setup $STEP/$STEPS] $*"
}
done_step() { echo "             done in $(( $(date +%s) - STEP_START )) s"; }
die() {
  echo "setup failed: $1" >&2
  echo "fix: $2" >&2
  if [ -f "$LOG" ]; then
    echo "--- last lines of $LOG ---" >&2
    tail -n 25 "$LOG" >&2
  fi
  exit 1
}
pip_install() {
  "$VENV/bin/python" -m pip install --progress-bar off "$@" >>"$LOG" 2>&1
}
# The version constraints.txt pins a distribution to (a `name==version` line).
pinned() {
  local version
  version=$(sed -n "s/^[[:space:]]*$1[[:space:]]*==[[:space:]]*\([^[:space:];#]*\).*/\1/p" \
    "$CONSTRAINTS" | head -n 1)
  [ -n "$version" ] || die "$CONSTRAINTS pins no version of $1" \
    "add a line '$1==VERSION' with the tested version to $CONSTRAINTS"
  echo "$version"
}
# Version of an installed distribution, or nothing.
installed() {
  "$VENV/bin/python" - "$1" <<'PY' 2>/dev/null || true
import importlib.metadata, sys
try:
    print(importlib.metadata.version(sys.argv[1]))
except importlib.metadata.PackageNotFoundError:
    pass
PY
}

[ -f "$CONSTRAINTS" ] || die "no constraints file $CONSTRAINTS" \
  "restore constraints.txt from the repository, or set CONSTRAINTS=/path/to/constraints.txt"
TORCH_VERSION=$(pinned torch)
MMCV_VERSION=$(pinned mmcv)
MMSEG_VERSION=$(pinned mmsegmentation)

# A stamp of the files that decide what gets installed: unchanged files and an
# importable package mean there is nothing to do.
STAMP_SRC=$(cat "$ROOT/setup.cfg" "$ROOT/pyproject.toml" "$CONSTRAINTS" "$0" \
  | sha256sum | cut -c1-16)-$EXTRAS
STAMP=$VENV/.setup-stamp
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_SRC" ] \
    && "$VENV/bin/python" -c 'import mmseg_uncert' >/dev/null 2>&1; then
  echo "[setup] environment $VENV is up to date"
  exit 0
fi

step "Python and virtual environment ($VENV)"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found" \
  "install Python 3.10-3.12 or set PYTHON=/path/to/python3.11"
PYVER=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
case "$PYVER" in
  3.10|3.11|3.12) ;;
  *) die "Python $PYVER: mmcv $MMCV_VERSION and torch $TORCH_VERSION are used here with 3.10-3.12" \
         "set PYTHON=/path/to/python3.11 and rerun" ;;
esac
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV" || die "could not create $VENV" \
    "install the venv module (Debian: apt-get install python3-venv)"
fi
: >"$LOG"
done_step

step "torch $TORCH_VERSION"
TV=$(installed torch)
if [ "${TV%%+*}" != "$TORCH_VERSION" ]; then
  # An exact pin: a looser spec lets pip pick the newest release and its CUDA
  # packages. GPU users install their CUDA build of torch $TORCH_VERSION first.
  pip_install -c "$CONSTRAINTS" "torch==$TORCH_VERSION" || die "torch $TORCH_VERSION did not install" \
    "install torch==$TORCH_VERSION into $VENV by hand (CPU or CUDA build), then rerun"
fi
echo "             torch $(installed torch)"
done_step

step "build tools and pure-Python dependencies (mmengine, numpy, opencv)"
# mmcv's setup.py imports pkg_resources (removed in setuptools 81); torch
# 2.13 wants setuptools >= 77.
pip_install -c "$CONSTRAINTS" "setuptools>=77,<81" wheel ninja packaging numpy \
  mmengine opencv-python-headless || die "base dependencies did not install" \
  "check the package index is reachable (pip config list)"
done_step

step "mmcv $MMCV_VERSION with compiled ops"
if [ "$(installed mmcv)" = "$MMCV_VERSION" ] && "$VENV/bin/python" -c 'import mmcv._ext' >>"$LOG" 2>&1; then
  echo "             already built"
else
  if [ -n "$(installed mmcv-lite)" ]; then
    "$VENV/bin/python" -m pip uninstall -y mmcv-lite >>"$LOG" 2>&1
  fi
  echo "             no wheel exists for torch $TORCH_VERSION: built from source, or taken from"
  echo "             pip's cache if it was built on this machine before (then seconds)."
  echo "             A first build takes about 15-20 min on 2 cores."
  # --no-build-isolation: the build must see the installed torch.
  MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "$VENV/bin/python" -m pip install \
      --progress-bar off -v --no-build-isolation --force-reinstall --no-deps \
      "mmcv==$MMCV_VERSION" 2>&1 | tee -a "$LOG" \
    | grep --line-buffered -oE '^\[[0-9]+/[0-9]+\] [A-Za-z+]+ ' \
    | while read -r n _; do printf '\r             compiling %s' "$n"; done || true
  echo
  "$VENV/bin/python" -c 'import mmcv._ext' >>"$LOG" 2>&1 || die \
    "mmcv $MMCV_VERSION built without importable ops" \
    "install gcc/g++ and the Python headers, then rerun (log above)"
  # mmcv's own runtime dependencies (addict, yapf, ...).
  pip_install -c "$CONSTRAINTS" "mmcv==$MMCV_VERSION" || die "mmcv's dependencies did not install" \
    "see the log above"
fi
done_step

step "mmsegmentation $MMSEG_VERSION"
pip_install -c "$CONSTRAINTS" "mmsegmentation==$MMSEG_VERSION" ftfy regex || die "mmsegmentation did not install" \
  "see the log above"
done_step

step "mmseg_uncert (editable) with extras [$EXTRAS]"
# openmim drags in openxlab, which pins an old setuptools: installed here and
# setuptools restored afterwards (mmcv rebuilds need pkg_resources and torch
# wants >= 77).
pip_install -c "$CONSTRAINTS" -e "$ROOT[$EXTRAS]" || die "the package did not install" \
  "see the log above; a conflict names the package to fix in $CONSTRAINTS or setup.cfg"
pip_install "setuptools>=77,<81" || die "setuptools could not be restored" "see the log above"
done_step

step "check the stack imports"
"$VENV/bin/python" -c 'import mmseg_uncert, mmseg, mmcv, mmengine, torch; print("             torch", torch.__version__, "| mmcv", mmcv.__version__, "| mmengine", mmengine.__version__, "| mmseg", mmseg.__version__, "| mmseg_uncert", mmseg_uncert.__version__)' \
  2>>"$LOG" || die "the installed stack does not import" "read the error above; rerun after fixing"
echo "$STAMP_SRC" >"$STAMP"
done_step
echo "[setup] ready: $VENV"
