#!/usr/bin/env bash
# Run the GPU tests (tests/test_cuda.py) on a GPU machine that has no network.
#
#   bash tools/gpu_check.sh fetch                 # after make setup, where PyPI is
#                                                 # reachable: wheels + mmcv sdist into .whl/
#   LOG_DIR=DIR bash tools/gpu_check.sh run       # on the GPU machine, .whl/ beside the code
#
# The GPU machine needs Python 3.10-3.12 with a CUDA build of torch 2.x,
# numpy, scipy, matplotlib, opencv, rich, pyyaml and pytest (a usual CUDA
# image). `run` installs mmengine, mmsegmentation and their small pure-Python
# dependencies from .whl/ into /tmp/site, builds mmcv 2.1.0 there with its CPU
# ops only (this package's models use no mmcv CUDA kernel; hiding the GPU
# keeps the build to a few minutes), and runs pytest on tests/test_cuda.py
# with the repository on PYTHONPATH, so that nothing is installed over the
# machine's own torch. The log and pytest's JUnit report go to LOG_DIR.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WHEELS=$ROOT/.whl
SITE=/tmp/site
PY=${PYTHON:-python3}

# pure-Python distributions the OpenMMLab stack needs beyond a CUDA image
# (mmseg imports ftfy unguarded; regex, which it also needs, is compiled and
# usually in the image already)
PURE=(mmengine==0.10.7 mmsegmentation==1.2.2 addict yapf platformdirs
      termcolor prettytable wcwidth ftfy "setuptools<81" wheel)

fetch() {
  # the project's environment (make setup): pip reads mmcv's metadata by
  # running its setup.py, which needs torch and setuptools < 81
  local py=${PYTHON:-$ROOT/.venv/bin/python}
  mkdir -p "$WHEELS"
  "$py" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation py --abi none --platform any -d "$WHEELS" "${PURE[@]}"
  "$py" -m pip download --no-deps --no-binary=:all: --no-build-isolation \
    -d "$WHEELS" mmcv==2.1.0
  echo "fetched into $WHEELS:"
  ls -l "$WHEELS"
}

run() {
  : "${LOG_DIR:?set LOG_DIR to the folder for the log and the test report}"
  mkdir -p "$LOG_DIR"
  exec > >(tee "$LOG_DIR/gpu_check.log") 2>&1
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
  "$PY" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__,
"cuda", torch.version.cuda, "gpus", torch.cuda.device_count())'
  [ -d "$WHEELS" ] || { echo "no $WHEELS: run 'bash tools/gpu_check.sh fetch' where PyPI is reachable and copy .whl/ here"; exit 1; }
  if [ ! -d "$SITE/mmengine" ]; then  # a rerun on the same machine keeps $SITE
    "$PY" -m pip install -q --no-index --no-deps --no-compile \
      --target "$SITE" "$WHEELS"/*.whl
  fi
  export PYTHONPATH=$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}
  local start=$(date +%s)
  if "$PY" -c 'import mmcv._ext' 2>/dev/null; then
    echo "mmcv with its ops is already in $SITE"
  else
    ( cd /tmp && rm -rf mmcv-2.1.0 && tar xzf "$WHEELS"/mmcv-2.1.0.tar.gz && cd mmcv-2.1.0 \
      && CUDA_VISIBLE_DEVICES= FORCE_CUDA=0 MMCV_WITH_OPS=1 MAX_JOBS=$(nproc) \
         "$PY" -m pip install -q --no-index --no-deps --no-build-isolation \
         --target "$SITE" . )
    echo "mmcv built in $(( $(date +%s) - start )) s"
  fi
  "$PY" -c 'import mmseg_uncert, mmcv, mmengine, mmseg; print("stack:", mmcv.__version__, mmengine.__version__, mmseg.__version__)'
  cd "$ROOT"
  "$PY" -m pytest -p no:cacheprovider -rs -q tests/test_cuda.py \
    --junitxml "$LOG_DIR/test_cuda.xml"
}

case "${1:-}" in
  fetch) fetch ;;
  run) run ;;
  *) echo "usage: bash tools/gpu_check.sh fetch | LOG_DIR=DIR bash tools/gpu_check.sh run" >&2; exit 2 ;;
esac
