#!/usr/bin/env bash
# Everything this project checks on a lent GPU, in one call (a machine start costs minutes).
# Run from the repo root on a CUDA machine with torch but without DGL; results go to $OUT:
#   log.txt           the whole console output
#   gm_mlic_*.md      bench/bench_gm_mlic.py tables (fp32, bf16 autocast)
#   extract.json      bench/bench_extract.py rows
#   suite.tar.gz      results/gpu_coco_synthetic (runs.jsonl, tables) + the run logs
# Each step has its own time limit so a slow step cannot starve the others; a step that hits
# it leaves what it finished (the suite runner writes a record per finished row).
#
#   OUT=/tmp/gpu bash bench/gpu_session.sh            # on the GPU machine
#   DEVICE=cpu SMALL=1 OUT=/tmp/gpu bash bench/gpu_session.sh   # rehearse the commands on CPU
#   STEPS="gpu-tests suite" OUT=/tmp/gpu bash bench/gpu_session.sh   # only these steps
# Python packages missing there (pydantic) travel as wheels in .whl/ (see docs/performance.md).
set -u
OUT=${OUT:-$PWD/gpu_out}
DEVICE=${DEVICE:-cuda}
SMALL=${SMALL:-0}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 DGLBACKEND=pytorch GMBENCH_CACHE=${GMBENCH_CACHE:-/tmp/gmbench-cache}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD}
WORK=/tmp/gmbench-gpu
rm -rf "$WORK" && mkdir -p "$WORK"
exec > >(tee -a "$OUT/log.txt") 2>&1

STEPS=${STEPS:-all}
step() {  # step NAME SECONDS CMD...
  local name=$1 limit=$2; shift 2
  if [ "$STEPS" != all ] && [[ " $STEPS " != *" $name "* ]]; then
    echo "=== $name: skipped (STEPS=$STEPS)"; return 0
  fi
  echo; echo "=== $name (limit ${limit}s) $(date +%T)"
  local t0=$SECONDS
  timeout --signal=TERM --kill-after=15 "$limit" "$@"
  echo "=== $name: exit $? after $((SECONDS - t0))s"
}

if [ "$SMALL" = 1 ]; then
  N_TRAIN=32; N_TEST=16; RES=64; ITERS=2; EPOCHS=1; IMAGES=8; SIZE=160x120; MIN=120; MAX=200
else
  N_TRAIN=1024; N_TEST=512; RES=448; ITERS=20; EPOCHS=2; IMAGES=128; SIZE=640x480; MIN=800; MAX=1333
fi
export N_TRAIN N_TEST RES EPOCHS SMALL DEVICE WORK

step env 60 python3 - <<'EOF'
import platform, numpy, torch, torchvision
print("python", platform.python_version(), "numpy", numpy.__version__, "torch", torch.__version__,
      "torchvision", torchvision.__version__)
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
try:
    import dgl
    print("dgl", dgl.__version__)
except Exception as e:
    print("dgl unavailable:", type(e).__name__, e)
EOF

step gpu-tests 150 python3 -m pytest -q -p no:cacheprovider -rs tests/test_gpu.py

if [ "$DEVICE" = cuda ]; then
  step bench-gm-mlic-fp32 60 bash -c "python3 bench/bench_gm_mlic.py --device cuda --iters $ITERS --warmup 3 | tee $OUT/gm_mlic_fp32.md"
  step bench-gm-mlic-bf16 60 bash -c "python3 bench/bench_gm_mlic.py --device cuda --amp bf16 --iters $ITERS --warmup 3 | tee $OUT/gm_mlic_bf16.md"
else
  step bench-gm-mlic-cpu 120 bash -c "python3 bench/bench_gm_mlic.py --device cpu --iters $ITERS --backends dense --sizes voc | tee $OUT/gm_mlic_fp32.md"
fi

# gpu_coco_synthetic: the cache row reads instance features extracted from the same images.
suite() {
  local DATA=(-o num_classes=80 -o n_train=$N_TRAIN -o n_test=$N_TEST -o resolution=$RES) SETS=()
  [ "$SMALL" = 1 ] && SETS=(--set data.resolution=$RES --set data.image_size=$RES --set model.depth=18)
  for s in train test; do
    python3 -m gmbench extract --dataset synthetic "${DATA[@]}" --split $s --source boxes \
      --weights none --n-false 40 --top-m 35 --device "$DEVICE" --no-progress \
      --out .cache/gpu_coco_synthetic/$s-boxes-m35 || return 1
  done
  python3 -m gmbench run --suite gpu_coco_synthetic --device "$DEVICE" --out "$WORK/results" \
    --set data.n_train=$N_TRAIN --set data.n_test=$N_TEST --set train.epochs=$EPOCHS \
    "${SETS[@]}" --format csv,md
}
export -f suite
step suite 240 bash -c suite
tar -czf "$OUT/suite.tar.gz" --exclude=checkpoints -C "$WORK" results 2>/dev/null || echo "no suite results"

step bench-extract 60 python3 bench/bench_extract.py --device "$DEVICE" --weights none \
  --images $IMAGES --image-size $SIZE --min-size $MIN --max-size $MAX --workers 8 \
  --batch-sizes 1 8 --json "$OUT/extract.json"

# The CPU suite under the machine's newer stack (numpy 2, torch 2.x): what breaks there?
# -v prints each result as it lands, so a run cut short still says what failed. On the
# 2026-11 H200 image the whole suite needed just over 100 s with 8 workers.
if python3 -c "import xdist" 2>/dev/null; then XD=(-n 8); else XD=(); fi
[ "$SMALL" = 1 ] || step cpu-tests-new-stack 180 python3 -m pytest -v --tb=short \
  -p no:cacheprovider "${XD[@]}" --ignore tests/test_gpu.py tests
echo "done $(date +%T)"
