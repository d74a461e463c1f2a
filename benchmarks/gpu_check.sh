#!/usr/bin/env bash
# Every GPU figure in docs/benchmarks.md, in one run (most of it compilation; each step stops at its own timeout),
# in stages, most important first; tune, autotune and bytes run only when named:
#   graph:   training, paper size, fast path with torch.compile and whole steps in one CUDA graph (--cuda-graph),
#            batch 8 and 256, each then profiling a few more steps (GPU kernel time per step against wall time), then
#            batch 8 again with the students side by side on two CUDA streams (--overlap-towers), and batch 8 and 256
#            with each shared-input group of linears (attention's queries, keys and values) as one matmul
#            (--fuse-linears), and batch 8 with both and inductor's combo kernels (below); about 3 minutes started
#            together (below), 9 one after another
#   parts:   parts of a step, each timed more than one way: ViT-B/32's patch embedding as a convolution and as a
#            matmul, clipping + fused AdamW as two passes and folded into one, the two students' forward and
#            backward in a CUDA graph one after the other and on two streams, and the model's attention calls with
#            each SDPA backend (benchmarks/step_parts.py)
#   tests:   tests/test_cuda_graph.py, tests/test_fast_path.py and the GPU-only training, model and prediction tests
#            on the GPU: capture and replay, the fast path's losses (Trainer steps, whole steps, compiled whole steps
#            in a CUDA graph, on one stream and two, and the Trainer's compiled fp32 steps with --fuse-linears) against
#            the naive path's, a captured run with dropout, evaluation, checkpoints and a resume, the students on
#            two streams against one, and prediction on the GPU against the CPU's
#   train:   the naive path at batch 8 and 256, and the fast path with torch.compile's own CUDA graphs (mode
#            reduce-overhead, batch 8) and with torch.compile alone (batch 256), profiled
#   tune:    (only when named) the batch-8 and batch-256 --cuda-graph runs again with inductor's combo kernels,
#            which fuse independent small kernels such as the per-weight bf16 casts (--inductor combo_kernels=True:
#            torch reads no environment variable for it),
#            and batch 256 with coordinate-descent tuning of the generated Triton kernels' block sizes, the
#            memory-bound ones included (--inductor coordinate_descent_tuning=True; max-autotune does it as well,
#            with its matmul tuning), and batch 256 with flash attention first (--attention-backends)
#   autotune: (only when named) batch 256 with --cuda-graph, --fuse-linears and max-autotune-no-cudagraphs: tuned
#            matmuls, and Triton matmul templates into which inductor can fuse bias, GELU and casts (compiles for
#            minutes)
#   bytes:   (only when named) the bytes the compiled step's Triton kernels move, batches 32 and 64 projected to
#            256, and the time they would take at the H100 SXM's bandwidth, and the number of kernels of each kind
#            (benchmarks/step_bytes.py)
#   targets: (only when named) the short check, for a few minutes on a GPU: the two targets' runs alone, started
#            together, unprofiled: batch 8 with --compile --cuda-graph, on one stream and with --overlap-towers,
#            and batch 256 with --compile --cuda-graph, plain and with --fuse-linears (about 2.5 minutes on an H200)
#   capture: (only when named) the GPU tests that compile nothing: capture and replay, a captured run with dropout,
#            evaluation and resume, the students on two streams against one, prediction on the GPU (seconds, where
#            the tests stage's compiled losses take minutes)
#   data:    data throughput: JPEG decoding vs the image cache, 0 and 8 loader workers
#   predict: prediction throughput, batch 1 and 64, GPU then CPU
# Targets on an H100: batch 8 >= 700 samples/s, batch 256 >= 4,300 samples/s (fast path).
# The graph and train stages' runs start together and take turns for their timed steps (TOGETHER=0: one after
# another).
# Usage: bash benchmarks/gpu_check.sh [output folder [stage ...]]   (a relative folder is taken from the current
# one, the default is gpu_check_out in the checkout; default stages: every stage not marked "only when named", and
# an unknown stage is refused; logs and JSON lines are kept in the folder; a call without a training stage keeps
# the folder's train.jsonl and prints no summary). SIZE=tiny DEVICE=cpu DATA_IMAGES=200 bash benchmarks/gpu_check.sh runs the
# same steps small, to check the script. The exit status is non-zero when the GPU tests fail or run out of time.
set -uo pipefail
# An output folder given relative is relative to where the script is called from, not to the checkout it moves to.
given="${1:-${OUT:-}}"
[[ -n "$given" && "$given" != /* ]] && given="$PWD/$given"
cd "$(dirname "$0")/.."
# This checkout's clfa, not whichever one is installed.
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
status=0  # non-zero once the GPU tests fail
OUT_DIR="${given:-gpu_check_out}"
shift $(( $# > 0 ? 1 : 0 ))
# A misspelt stage would otherwise run nothing and end with status 0.
for s in "$@"; do
    case "$s" in
        graph|targets|parts|tests|capture|train|tune|autotune|bytes|data|predict) ;;
        *) echo "gpu_check.sh: unknown stage '$s' (stages: graph targets parts tests capture train tune autotune bytes data predict)" >&2
           exit 2 ;;
    esac
done
STAGES=" ${*:-graph parts tests train data predict} "
stage() { [[ "$STAGES" == *" $1 "* ]]; }
mkdir -p "$OUT_DIR"
rm -rf "$OUT_DIR/turns"  # left by a call that was stopped
# The training figures of this call (a later call into the same folder with no training stage keeps them).
training=false; for s in graph targets train tune autotune; do stage $s && training=true; done
$training && rm -f "$OUT_DIR/train.jsonl"
SIZE="${SIZE:-paper}"
PYTHON="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"
export TOKENIZERS_PARALLELISM=false
# Report why CUDA graphs were skipped, if they were (mutated inputs, CPU tensors, dynamic shapes...).
export TORCH_LOGS="${TORCH_LOGS:-perf_hints}"

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"; } | tee "$OUT_DIR/gpu.txt"
"$PYTHON" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)" | tee -a "$OUT_DIR/gpu.txt"
echo "cpu cores: $(nproc)" | tee -a "$OUT_DIR/gpu.txt"

# The training runs of the graph and train stages start together: they compile side by side, then time their steps
# one at a time (benchmarks/turns.py), each with the host and the GPU otherwise idle; the waiting runs keep their
# GPU memory. Compilation is most of each run, so a stage takes little more than its slowest run. Each run's
# timeout then covers the whole stage (TOGETHER_LIMIT seconds). A run that has warmed up waits at most TURN_PATIENCE
# seconds for the others (one that hangs must not take the whole stage's figures with it), then is timed alongside
# them and marked so. TOGETHER=0 runs them one after another, each with its own timeout, as the tune and autotune
# stages always do.
TOGETHER="${TOGETHER:-1}"
TOGETHER_LIMIT="${TOGETHER_LIMIT:-540}"
TURN_PATIENCE="${TURN_PATIENCE:-240}"
names=(); pids=()

train() {  # name, timeout in seconds (when run alone), arguments for train_throughput.py
    local name=$1 limit=$2; shift 2
    local run=("$PYTHON" benchmarks/train_throughput.py --size "$SIZE" --device "$DEVICE" --json "$@")
    if [ "$TOGETHER" = 1 ]; then
        [ ${#pids[@]} -eq 0 ] && started=$SECONDS
        timeout "$TOGETHER_LIMIT" "${run[@]}" --take-turns "$OUT_DIR/turns" --turn-patience "$TURN_PATIENCE" >"$OUT_DIR/$name.log" 2>&1 &
        names+=("$name"); pids+=($!)
    else
        echo "== $name" >&2
        timeout "$limit" "${run[@]}" >"$OUT_DIR/$name.log" 2>&1
        report "$name" $?
    fi
}

together() {  # waits for the runs started together, then reports each, in the order they were started
    local i rc
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}"; rc=$?
        echo "== ${names[$i]}" >&2
        report "${names[$i]}" $rc
    done
    [ ${#pids[@]} -gt 0 ] && echo "   (these ${#pids[@]} runs, started together, took $((SECONDS - started)) s)"
    names=(); pids=(); rm -rf "$OUT_DIR/turns"
}

report() {  # name, exit status: the run's figure, profile summary and JSON line
    local name=$1 rc=$2
    grep -E "samples/s" "$OUT_DIR/$name.log" | tail -1
    grep -E "^(profiled|GPU kernels|GPU time by kind)" "$OUT_DIR/$name.log" | sed 's/^/   /'
    grep -m3 -i "skipping cudagraphs" "$OUT_DIR/$name.log" || true
    if [ $rc -eq 0 ]; then grep '^{"path"' "$OUT_DIR/$name.log" | tail -1 | sed "s/^{/{\"run\": \"$name\", /" >>"$OUT_DIR/train.jsonl"
    else echo "   $name failed (exit $rc): see $OUT_DIR/$name.log"; fi
}

script() {  # log name, title, timeout in seconds, benchmark script, its arguments: figures printed, JSON kept in the log
    local name=$1 title=$2 limit=$3 file=$4; shift 4
    echo "== $title" >&2
    timeout "$limit" "$PYTHON" "benchmarks/$file" "$@" --json 2>"$OUT_DIR/$name.err" | tee "$OUT_DIR/$name.log" | grep -v '^{'
    [ "${PIPESTATUS[0]}" -eq 0 ] || echo "   $title failed: see $OUT_DIR/$name.err"
}

gpu_tests() {  # log name, timeout in seconds, title, test ids: the GPU tests' verdict; a failure makes the exit status 1
    local name=$1 limit=$2 title=$3; shift 3
    echo "== GPU tests $title" >&2
    timeout "$limit" "$PYTHON" -m pytest -q -p no:cacheprovider "$@" >"$OUT_DIR/$name.log" 2>&1
    local rc=$?
    tail -1 "$OUT_DIR/$name.log"
    if [ $rc -ne 0 ]; then
        local why=""; [ $rc -eq 124 ] && why=", out of time"
        echo "   GPU tests failed (exit $rc$why): see $OUT_DIR/$name.log"; status=1
    fi
}
# The GPU-only training, model and prediction tests, which both test stages run.
captured_run=(tests/test_trainer.py::test_whole_steps_learn_with_dropout_evaluate_and_resume
              "tests/test_modeling.py::test_students_side_by_side_compute_what_they_compute_one_after_the_other"
              tests/test_predict.py::test_predictions_on_a_gpu_are_those_of_the_cpu)

if stage graph; then
    train fast_b8_graph   240 --path fast --batch-size 8   --warmup 15 --steps 300 --compile --cuda-graph --profile 20
    train fast_b256_graph 200 --path fast --batch-size 256 --warmup 5  --steps 40  --compile --cuda-graph --profile 5
    train fast_b8_graph_overlap 240 --path fast --batch-size 8 --warmup 15 --steps 300 --compile --cuda-graph --overlap-towers --profile 20
    train fast_b8_graph_fused 240 --path fast --batch-size 8 --warmup 15 --steps 300 --compile --cuda-graph --fuse-linears --profile 20
    train fast_b256_graph_fused 200 --path fast --batch-size 256 --warmup 5 --steps 40 --compile --cuda-graph --fuse-linears --profile 5
    # Everything that could shorten a batch-8 step at once, so that one call shows whether together they reach the
    # target even before each has been judged alone.
    train fast_b8_graph_all 240 --path fast --batch-size 8 --warmup 15 --steps 300 --compile --cuda-graph --overlap-towers --fuse-linears \
        --inductor combo_kernels=True --profile 20
    together
fi

if stage targets; then
    train fast_b8_graph   240 --path fast --batch-size 8   --warmup 15 --steps 300 --compile --cuda-graph
    train fast_b8_graph_overlap 240 --path fast --batch-size 8 --warmup 15 --steps 300 --compile --cuda-graph --overlap-towers
    train fast_b256_graph 200 --path fast --batch-size 256 --warmup 5  --steps 40  --compile --cuda-graph
    train fast_b256_graph_fused 200 --path fast --batch-size 256 --warmup 5 --steps 40 --compile --cuda-graph --fuse-linears
    together
fi

if stage parts; then
    # At tiny size (checking the script on a CPU) the parts stay paper-sized: a few repeats are enough.
    parts_args=(); [ "$SIZE" = tiny ] && parts_args=(--batch-size 8 --precision bf16 --repeats 2)
    script step_parts "step parts" 240 step_parts.py --device "$DEVICE" "${parts_args[@]}"
fi

if stage tests; then
    gpu_tests pytest 420 "capture and replay, the fast path's losses, a captured run with dropout, evaluation and resume" \
        tests/test_cuda_graph.py tests/test_fast_path.py "${captured_run[@]}"
fi

if stage capture; then
    gpu_tests pytest_capture 240 "without compilation: capture and replay, a captured run with dropout, evaluation and resume" \
        tests/test_cuda_graph.py "${captured_run[@]}"
fi

if stage train; then
    train naive_b8    90  --path naive --batch-size 8   --warmup 10 --steps 100
    train fast_b8_cg  240 --path fast  --batch-size 8   --warmup 15 --steps 300 --compile-mode reduce-overhead --profile 20
    train fast_b256   200 --path fast  --batch-size 256 --warmup 5  --steps 40  --compile --profile 5
    train naive_b256  90  --path naive --batch-size 256 --warmup 3  --steps 15
    together
fi

# These runs' point is what inductor chooses by timing kernels: one at a time, so that no other run disturbs it.
if stage tune; then
    TOGETHER=0 train fast_b8_graph_combo   240 --path fast --batch-size 8   --warmup 15 --steps 300 --compile --cuda-graph --inductor combo_kernels=True
    TOGETHER=0 train fast_b256_graph_combo 200 --path fast --batch-size 256 --warmup 5  --steps 40  --compile --cuda-graph --inductor combo_kernels=True
    TOGETHER=0 train fast_b256_graph_cdt 300 --path fast --batch-size 256 --warmup 5 --steps 40 --compile --cuda-graph --inductor coordinate_descent_tuning=True
    # Flash attention wherever it applies (not BERT's padding mask), then memory-efficient: PyTorch's own order puts
    # cuDNN first on an H100; the parts stage times each backend on each call.
    TOGETHER=0 train fast_b256_graph_flash 200 --path fast --batch-size 256 --warmup 5 --steps 40 --compile --cuda-graph --attention-backends flash,efficient,cudnn,math
    together
fi

if stage autotune; then
    TOGETHER=0 train fast_b256_graph_autotune 480 --path fast --batch-size 256 --warmup 5 --steps 40 --compile-mode max-autotune-no-cudagraphs --cuda-graph --fuse-linears
    together
fi

if stage bytes; then
    script step_bytes "bytes moved by the compiled step's own kernels" 480 step_bytes.py --device "$DEVICE" --size "$SIZE" \
        --batch-size 32 64
fi

if stage data; then
    # Enough batches that each of 8 workers serves several an epoch (fewer tell nothing about the workers).
    script data data 150 data_throughput.py --images "${DATA_IMAGES:-2000}" --workers 0 8
fi

if stage predict; then
    script predict predict 120 predict_throughput.py --size "$SIZE"
fi

$training || exit $status
"$PYTHON" - "$OUT_DIR/train.jsonl" <<'EOF' || status=1
import json, sys
sys.path.insert(0, "benchmarks")
from train_throughput import setup
runs = []
try:
    runs = [json.loads(line) for line in open(sys.argv[1])]
except FileNotFoundError:
    pass
if not runs:
    sys.exit("no training figures")
first = runs[0]
print(f"\nsummary: {first['size']} size, {first['machine']}, torch {first['torch']}")
naive = {r["batch_size"]: r for r in runs if r["path"] == "naive"}
for r in sorted(runs, key=lambda r: (r["batch_size"], r["path"] != "naive")):
    ratio = f"  {r['samples_per_s'] / naive[r['batch_size']]['samples_per_s']:5.2f}x naive" if r["path"] == "fast" and r["batch_size"] in naive else ""
    host = f" (host {r['host_ms_per_step']:.1f})" if r.get("host_ms_per_step") is not None else ""
    alongside = " (timed while other runs still compiled)" if (r.get("turns") or {}).get("timed_alongside") else ""
    print(f"batch {r['batch_size']:>3}  {r['run']} ({setup(r)}): {r['samples_per_s']:8.1f} samples/s, {r['ms_per_step']:6.1f} ms/step{host}, "
          f"{r['peak_memory_mb']:6.0f} MiB{ratio}{alongside}")
for batch, target in ((8, 700), (256, 4300)):
    fast = [r["samples_per_s"] for r in runs if r["path"] == "fast" and r["batch_size"] == batch]
    if fast:
        print(f"batch {batch:>3}: best fast {max(fast):.1f} samples/s, target {target}: {'met' if max(fast) >= target else 'not met'}")
EOF
exit $status
