#!/usr/bin/env bash
# Continue the embedded tiny model's training run on one CUDA GPU, for a bounded time, offline.
#
#   bash tools/train_cuda.sh OUT_DIR [SECONDS]        (default 480 s of training; about 9 minutes in all)
#
# Starts from the committed resumable checkpoint (training/tiny_iggt/last.pt: weights, optimiser, step,
# log), trains with the same recipe at 252x168 on randomised synthetic scenes, 8 windows per step, with a
# rendering worker per spare CPU core (a GPU step is cheaper than rendering its windows), and writes
# everything into OUT_DIR/run: last.pt (resume from it, or copy it back to training/tiny_iggt/),
# model.safetensors (fp16 weights with the configuration: the shippable file), train_log.csv,
# losses.png. Needs PyTorch with CUDA, numpy, scipy, safetensors, tqdm, pillow and matplotlib; no
# network. IGGT_TRAIN_DEVICE=cpu runs the same script on a CPU (used by the test suite).
set -euo pipefail
OUT=${1:?usage: tools/train_cuda.sh OUT_DIR [SECONDS]}
LIMIT=${2:-480}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
DEVICE=${IGGT_TRAIN_DEVICE:-cuda}
BATCH=${IGGT_TRAIN_BATCH:-8}
MORE_STEPS=${IGGT_TRAIN_MORE_STEPS:-2000}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

missing=$("$PY" - <<'PYCODE'
import importlib.util
names = ["torch", "numpy", "scipy", "safetensors", "tqdm", "PIL", "matplotlib", "yaml"]
print(" ".join(n for n in names if importlib.util.find_spec(n) is None))
PYCODE
)
if [ -n "$missing" ]; then
  echo "missing Python packages: $missing (install them; this script needs no network otherwise)" >&2
  exit 2
fi
if [ "$DEVICE" = cuda ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no CUDA device visible to PyTorch; set IGGT_TRAIN_DEVICE=cpu to run on the CPU" >&2
  exit 2
fi

RUN="$OUT/run"
mkdir -p "$RUN"
if [ ! -f "$RUN/last.pt" ]; then
  cp "$ROOT/training/tiny_iggt/last.pt" "$ROOT/training/tiny_iggt/train_log.csv" "$RUN/"
fi
STEP=$("$PY" -c "import torch; print(int(torch.load('$RUN/last.pt', map_location='cpu', weights_only=False)['step']))")
WORKERS=$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))
echo "resuming at step $STEP on $DEVICE for ${LIMIT}s: $MORE_STEPS more steps of $BATCH windows, $WORKERS render workers"
"$PY" -m iggt_ros.cli train --out "$RUN" --resume --size 168x252 --steps $((STEP + MORE_STEPS)) --frames 2:8 \
  --warmup 100 --lr-backbone 3e-4 --lr-heads 6e-4 --instance-weight 3 --samples 2048 --pull 1.0 --pull-ramp 0 \
  --batch-size "$BATCH" --device "$DEVICE" --prefetch "$WORKERS" --checkpoint-every 100 \
  --time-limit "$(( $("$PY" -c "import torch; print(int(torch.load('$RUN/last.pt', map_location='cpu', weights_only=False).get('elapsed_s', 0)))") + LIMIT ))"
echo "done: $RUN/model.safetensors"
