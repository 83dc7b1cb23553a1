#!/usr/bin/env bash
# Continue the embedded model's design study run on one CUDA GPU, for a bounded time, offline.
#
#   bash tools/train_cuda.sh OUT_DIR [SECONDS]        (default 480 s of training; about 10 minutes in all)
#
# Starts from the committed resumable checkpoint of the chosen design (training/$IGGT_TRAIN_DESIGN/last.pt:
# weights, optimiser, step, CPU seconds, log; default tiny_fine_image), renders the training window cache
# once into OUT_DIR/cache (python -m iggt_ros.train.cache, training seeds only), and trains with the study's
# recipe on it at 140x84, 8 windows per step, writing everything into OUT_DIR/run: last.pt (resume from it,
# or compact it with iggt_ros.train.trainer.compact_checkpoint and copy it back), model.safetensors (fp16
# weights with the configuration: the shippable file), train_log.csv, losses.png. Needs PyTorch with CUDA,
# numpy, scipy, safetensors, tqdm, pillow and matplotlib; no network. IGGT_TRAIN_DEVICE=cpu runs the same
# script on a CPU (used by the test suite); IGGT_TRAIN_CACHE_WINDOWS sets the cache size (default 2400).
set -euo pipefail
OUT=${1:?usage: tools/train_cuda.sh OUT_DIR [SECONDS]}
LIMIT=${2:-480}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
DEVICE=${IGGT_TRAIN_DEVICE:-cuda}
BATCH=${IGGT_TRAIN_BATCH:-8}
MORE_STEPS=${IGGT_TRAIN_MORE_STEPS:-2000}
DESIGN=${IGGT_TRAIN_DESIGN:-tiny_fine_image}
CACHE_WINDOWS=${IGGT_TRAIN_CACHE_WINDOWS:-2400}
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
COMMITTED="$ROOT/training/$DESIGN"
if [ ! -f "$COMMITTED/last.pt" ]; then
  echo "no committed run for design '$DESIGN' ($COMMITTED/last.pt); set IGGT_TRAIN_DESIGN to one of:" \
       "$(cd "$ROOT/training" && ls -d */ | tr -d / | tr '\n' ' ')" >&2
  exit 2
fi
mkdir -p "$RUN"
if [ ! -f "$RUN/last.pt" ]; then
  cp "$COMMITTED/last.pt" "$COMMITTED/train_log.csv" "$RUN/"
fi
"$PY" -m iggt_ros.train.cache --out "$OUT/cache" --windows "$CACHE_WINDOWS"
STEP=$("$PY" -c "import torch; print(int(torch.load('$RUN/last.pt', map_location='cpu', weights_only=False)['step']))")
echo "resuming $DESIGN at step $STEP on $DEVICE for ${LIMIT}s: $MORE_STEPS more steps of $BATCH windows"
"$PY" -m iggt_ros.cli train --out "$RUN" --resume --model "$DESIGN" --cache "$OUT/cache" --steps $((STEP + MORE_STEPS)) \
  --frames 2:8 --warmup 100 --lr-backbone 5e-4 --lr-heads 1e-3 --instance-weight 3 --samples 2048 --pull 1.0 \
  --pull-ramp 0 --batch-size "$BATCH" --device "$DEVICE" --checkpoint-every 100 \
  --time-limit "$(( $("$PY" -c "import torch; print(int(torch.load('$RUN/last.pt', map_location='cpu', weights_only=False).get('elapsed_s', 0)))") + LIMIT ))"
echo "done: $RUN/model.safetensors"
