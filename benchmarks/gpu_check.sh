#!/usr/bin/env bash
# Every GPU figure in docs/benchmarks.md, in one run (about 9 minutes on one H100, most of it compilation):
#   1. training, paper size, batch 8:   naive vs fast with torch.compile + CUDA graphs (mode reduce-overhead)
#   2. training, paper size, batch 256: naive vs fast with torch.compile (default mode)
#      each fast run then profiles a few more steps: GPU kernel time per step against the step's wall time
#   3. data throughput: JPEG decoding vs the image cache, 0 / 4 / 16 loader workers
#   4. prediction throughput, batch 1 and 64, GPU and CPU
#   5. tests/test_fast_path.py on the GPU: the fast path's losses against the naive path's, both on the GPU
# Targets on an H100: batch 8 >= 700 samples/s, batch 256 >= 4,300 samples/s (fast path).
# Usage: bash benchmarks/gpu_check.sh [output folder]   (logs and JSON lines are kept there)
# SIZE=tiny DEVICE=cpu DATA_IMAGES=200 bash benchmarks/gpu_check.sh runs the same steps small, to check the script.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-gpu_check_out}}"
mkdir -p "$OUT_DIR"
rm -f "$OUT_DIR/train.jsonl"
SIZE="${SIZE:-paper}"
PYTHON="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"
export TOKENIZERS_PARALLELISM=false
# Report why CUDA graphs were skipped, if they were (mutated inputs, CPU tensors, dynamic shapes...).
export TORCH_LOGS="${TORCH_LOGS:-perf_hints}"

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"; } | tee "$OUT_DIR/gpu.txt"
"$PYTHON" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)" | tee -a "$OUT_DIR/gpu.txt"
echo "cpu cores: $(nproc)" | tee -a "$OUT_DIR/gpu.txt"

train() {  # name, timeout in seconds, arguments for train_throughput.py
    local name=$1 limit=$2; shift 2
    echo "== $name" >&2
    timeout "$limit" "$PYTHON" benchmarks/train_throughput.py --size "$SIZE" --device "$DEVICE" --json "$@" >"$OUT_DIR/$name.log" 2>&1
    local rc=$?
    grep -E "samples/s" "$OUT_DIR/$name.log" | tail -1
    grep -E "^(profiled|GPU kernels)" "$OUT_DIR/$name.log" | sed 's/^/   /'
    grep -m3 -i "skipping cudagraphs" "$OUT_DIR/$name.log" || true
    if [ $rc -eq 0 ]; then grep '^{"path"' "$OUT_DIR/$name.log" | tail -1 >>"$OUT_DIR/train.jsonl"
    else echo "   $name failed (exit $rc): see $OUT_DIR/$name.log"; fi
}

# The compiled runs first: they matter most and, compiling, take longest.
train fast_b8_cg  240 --path fast  --batch-size 8   --warmup 15 --steps 300 --compile-mode reduce-overhead --profile 20
train naive_b8    90  --path naive --batch-size 8   --warmup 10 --steps 100
train fast_b256   200 --path fast  --batch-size 256 --warmup 5  --steps 40  --compile --profile 5
train naive_b256  90  --path naive --batch-size 256 --warmup 3  --steps 15

echo "== data" >&2
timeout 120 "$PYTHON" benchmarks/data_throughput.py --images "${DATA_IMAGES:-800}" --workers 0 4 16 --json 2>"$OUT_DIR/data.err" | tee "$OUT_DIR/data.log" | grep -v '^{'

echo "== predict" >&2
timeout 120 "$PYTHON" benchmarks/predict_throughput.py --size "$SIZE" --json 2>"$OUT_DIR/predict.err" | tee "$OUT_DIR/predict.log" | grep -v '^{'

echo "== tests/test_fast_path.py: the fast path's losses against the naive path's, on this device" >&2
timeout 120 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_fast_path.py >"$OUT_DIR/pytest.log" 2>&1
tail -1 "$OUT_DIR/pytest.log"

"$PYTHON" - "$OUT_DIR/train.jsonl" <<'EOF'
import json, sys
runs = {}
try:
    for line in open(sys.argv[1]):
        r = json.loads(line)
        runs[(r["path"], r["batch_size"], r["compile"])] = r
except FileNotFoundError:
    sys.exit("no training figures")
first = next(iter(runs.values()), None)
if first is None:
    sys.exit("no training figures")
print(f"\nsummary: {first['size']} size, {first['machine']}, torch {first['torch']}")
for batch, target in ((8, 700), (256, 4300)):
    naive = runs.get(("naive", batch, False))
    fast = runs.get(("fast", batch, True))
    if not (naive and fast):
        print(f"batch {batch}: incomplete")
        continue
    verdict = "meets" if fast["samples_per_s"] >= target else "below"
    print(f"batch {batch:>3}: naive {naive['samples_per_s']:8.1f}  fast {fast['samples_per_s']:8.1f} samples/s "
          f"({fast['samples_per_s'] / naive['samples_per_s']:.2f}x; target {target}: {verdict}; "
          f"peak memory {fast['peak_memory_mb']:.0f} MiB)")
EOF
