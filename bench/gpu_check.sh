#!/usr/bin/env bash
# The checks a lent GPU machine runs in one call of the device tool (issue 16; README "GPU check"):
#
#     bash bench/gpu_check.sh            # on the device machine, from the repository root
#
# It records the machine, then runs each check with its own time limit so that one slow or failing check
# does not cost the others: the CUDA tests, the default H-PD run on CUDA (its wall time and steps/s), the
# same run on 2 GPUs under torchrun where there are 2, and the StyleGAN-XL generator's per-image cost on
# CUDA. Everything goes to $OUT/gpu_check.txt (run folders under $OUT/runs), which the device tool
# brings back. The device machine has its own python3 and torch and no package registry: modules it
# lacks are listed first; carry their wheels in wheels/ (made here with `pip download --no-deps -d
# wheels NAME==VERSION`; the device tool's `carry` takes 64 MiB) and they are installed from there.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu_check}"
mkdir -p "$OUT/runs"
LOG="$OUT/gpu_check.txt"
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD" GRADIO_ANALYTICS_ENABLED=False

step() {  # step <seconds> <title> <command...>: one check, timed, its output in the log
  local limit="$1" title="$2"; shift 2
  echo "=== $title ($(date -u +%H:%M:%S), limit ${limit}s)" >>"$LOG"
  local t0=$SECONDS
  timeout "$limit" "$@" >>"$LOG" 2>&1
  echo "=== $title: exit $? after $((SECONDS - t0)) s, load $(cut -d' ' -f1-3 /proc/loadavg)" >>"$LOG"
}

: >"$LOG"
step 60 "machine" bash -c "nvidia-smi; nproc; free -g; $PY -c 'import sys, torch; print(sys.version); print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"devices\", torch.cuda.device_count())'"
if [ -d wheels ] && ls wheels/*.whl >/dev/null 2>&1; then
  step 300 "install carried wheels" "$PY" -m pip install --no-index --no-deps --user -q wheels/*.whl
fi
step 60 "modules" "$PY" - <<'PYEOF'
import importlib
for name in ("numpy", "PIL", "tqdm", "torchvision", "pytorch_grad_cam", "cv2", "matplotlib", "pytest"):
    try:
        module = importlib.import_module(name)
        print(f"{name}: {getattr(module, '__version__', 'present')}")
    except Exception as exc:  # noqa: BLE001 - a list of what to carry is the point
        print(f"{name}: MISSING ({type(exc).__name__}: {exc})")
PYEOF
step 900 "CUDA tests" "$PY" -m pytest -q -p no:cacheprovider tests/test_stylegan_xl_generator.py tests/test_run.py \
  tests/test_engine_core.py -k "cuda or device" -o addopts=""
step 900 "default H-PD run on CUDA" "$PY" -m engine distill --device cuda --out "$OUT/runs/default-cuda"
if [ "$("$PY" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)" -ge 2 ]; then
  step 900 "default H-PD run on 2 GPUs (torchrun)" "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 \
    -m engine distill --device cuda --out "$OUT/runs/default-2gpu"
fi
step 900 "StyleGAN-XL generator cost on CUDA" "$PY" bench/bench_stylegan_xl.py --device cuda --json "$OUT/stylegan_xl_cuda.json"
for folder in "$OUT"/runs/*/; do
  [ -f "$folder/run.json" ] && "$PY" -c "import json,sys; m=json.load(open(sys.argv[1])); print(sys.argv[1], m.get('state'), 'elapsed_s', m.get('elapsed_s'), 'steps', m.get('steps_done'))" "$folder/run.json" >>"$LOG"
done
echo "done: $LOG"
