#!/usr/bin/env bash
# gpu_check.sh: the one script to run on a lent GPU (an H200 by default) to check hal's CUDA
# backend and bring its numbers back. See docs/gpu.md for the exact invocation.
#
# Steps, in order of value; each has its own time limit and the whole run stays within
# GPU_CHECK_BUDGET seconds (a step gets min(its limit, what is left); under 15 s left it is
# skipped and reported). A failing step is recorded and the next one still runs.
#   install      `command -v hal` or: python3 -m pip install --no-deps --no-build-isolation -e .
#                (the image has every dependency; nothing is fetched: PIP_NO_INDEX=1)
#   probe        nvidia-smi, package versions, `hal backends`, the L2 size the device reports
#   smoke        HAL_SYNC_EACH=1 hal run examples/tiny_gpt.hal --backend cuda (names a faulting
#                kernel, parity against the float64 reference)
#   conformance  hal conformance --backend cuda --device $DEVICE (JSON + JUnit; its .jsonl
#                sidecar keeps every finished case if the limit cuts it short)
#   membound     benchmarks/bench_membound.py: fused memory-bound kernels vs the measured copy
#                bandwidth, torch eager and torch.compile
#   kernels      benchmarks/bench_gpu_kernels.py: bf16 GEMM 4096^3 / 8192^3 vs torch.matmul,
#                fp8 GEMM 8192^3 vs torch._scaled_mm, causal prefill (s2048, s8192) and decode
#                (T=8192) attention vs torch SDPA, the Llama block vs torch eager and
#                torch.compile; gets whatever time is left (on sm_90a the GEMMs are hal's
#                wgmma + TMA kernels)
#
# Output: the steps write under $OUT/run (HAL_CACHE_DIR=$OUT/run/hal-cache, so the source a
# CompileError names is brought back); at the end (also on TERM/INT) everything is packed
# into at most 8 files directly under $OUT, the summary table first:
#   summary.md             step | status | seconds | limit | last line; then the key tables
#   results.tar.gz         run/ without the compile cache: logs, reports, benchmark outputs
#   hal-cache.tar.gz       run/hal-cache: generated sources (.cu) and NVRTC logs; cubins too
#                          while the archive stays under 15 MiB
#   membound.md, gpu_kernels.md, conformance.txt   copies of the key results, readable as is
# A path $OUT/run/X in a log is X inside results.tar.gz (hal-cache/X inside hal-cache.tar.gz).
#
# Env: OUT (default ./gpu-check-out), DEVICE (default h200), GPU_CHECK_BUDGET (default 380),
# PYTHON (default python3), CONFORMANCE_WORKERS (default 12), CONFORMANCE_FILTER (-k, default
# all cases), STEP_TIMEOUT (replaces every step's own limit; the budget still applies),
# GPU_CHECK_STEPS (comma-separated steps to run, default all: e.g. install,probe),
# GPU_CHECK_DRY_RUN=1 (print each step's command and worst-case limit; run and write nothing).
set -u

OUT="${OUT:-$PWD/gpu-check-out}"
DEVICE="${DEVICE:-h200}"
BUDGET="${GPU_CHECK_BUDGET:-380}"
PY="${PYTHON:-python3}"
WORKERS="${CONFORMANCE_WORKERS:-12}"
FILTER="${CONFORMANCE_FILTER:-}"
STEP_TIMEOUT="${STEP_TIMEOUT:-}"
STEPS="${GPU_CHECK_STEPS:-install,probe,smoke,conformance,membound,kernels}"
PACK_RESERVE=15            # seconds kept for packing
DRY="${GPU_CHECK_DRY_RUN:-0}"
SPENT=0                    # dry run: the worst case, every step using all of its limit
START=$(date +%s)
RUN="$OUT/run"
LOGS="$RUN/logs"
[ "$DRY" = 1 ] || mkdir -p "$LOGS"
export HAL_CACHE_DIR="$RUN/hal-cache"
export PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1

declare -a NAMES=() CODES=() LIMITS=() SECS=()

left() {
    local used=$(( $(date +%s) - START ))
    [ "$DRY" = 1 ] && used=$SPENT
    echo $(( BUDGET - PACK_RESERVE - used ))
}

limit() {  # limit SECONDS: min(STEP_TIMEOUT or SECONDS, what is left of the budget)
    local want="${STEP_TIMEOUT:-$1}" l
    l=$(left)
    [ "$want" -lt "$l" ] && l="$want"
    [ "$l" -lt 0 ] && l=0
    echo "$l"
}

step() {  # step NAME SECONDS CMD...: run with a timeout, log to $LOGS/NAME.log, keep the code
    local name="$1" t t0 rc; t=$(limit "$2"); shift 2
    case ",$STEPS," in *",$name,"*) ;; *) return 0 ;; esac
    if [ "$DRY" = 1 ]; then
        printf '[dry-run] %s: timeout %s %s\n' "$name" "$t" "$*"
        SPENT=$(( SPENT + t ))
        return 0
    fi
    if [ "$t" -lt 15 ]; then
        echo "=== $name: skipped, ${t}s left of the ${BUDGET}s budget"
        NAMES+=("$name"); CODES+=("budget"); LIMITS+=("$t"); SECS+=(0)
        return 0
    fi
    echo "=== $name (limit ${t}s): $*"
    t0=$(date +%s)
    timeout -k 5 "$t" "$@" >"$LOGS/$name.log" 2>&1
    rc=$?
    tail -n 15 "$LOGS/$name.log"
    NAMES+=("$name"); CODES+=("$rc"); LIMITS+=("$t"); SECS+=($(( $(date +%s) - t0 )))
    return 0
}

install_hal() {  # the image has cuda-core, torch, numpy, ...: only hal itself is missing
    if command -v hal >/dev/null 2>&1; then
        echo "hal already installed: $(command -v hal)"
        return 0
    fi
    echo "+ $PY -m pip install --no-deps --no-build-isolation -e ."
    "$PY" -m pip install --no-deps --no-build-isolation -e . || return $?
    hash -r
    command -v hal >/dev/null 2>&1 || { echo "hal not on PATH after the install"; return 1; }
    echo "installed: $(command -v hal)"
}

export PY
export -f install_hal

status_of() {
    case "$1" in
        0) echo "ok" ;;
        budget) echo "SKIPPED (budget)" ;;
        124|137) echo "TIMEOUT" ;;
        *) echo "FAILED (exit $1)" ;;
    esac
}

last_line() {  # the last non-empty line of a step's log, fit for a table cell
    [ -f "$LOGS/$1.log" ] || { echo "-"; return; }
    # ASCII only (a cut through a multi-byte character would break the file's UTF-8)
    tr -cd '\11\12\40-\176' <"$LOGS/$1.log" | grep -v '^[[:space:]]*$' | tail -n 1 \
        | cut -c1-160 | sed 's/|/\\|/g'
}

PACKED=0
pack() {  # everything under $OUT/run -> at most 8 files under $OUT, the summary first
    [ "$PACKED" = 1 ] || [ "$DRY" = 1 ] && return
    PACKED=1
    local s="$OUT/summary.md" f
    {
        echo "# gpu_check.sh on $DEVICE: $(date -u '+%Y-%m-%d %H:%M UTC'), $(( $(date +%s) - START ))s of ${BUDGET}s"
        echo
        echo "| step | status | seconds | limit | last line of its log |"
        echo "|---|---|---|---|---|"
        for i in "${!NAMES[@]}"; do
            echo "| ${NAMES[$i]} | $(status_of "${CODES[$i]}") | ${SECS[$i]} | ${LIMITS[$i]} | $(last_line "${NAMES[$i]}") |"
        done
        echo
        echo "Files: summary.md (this), results.tar.gz (run/: logs/, conformance/, membound/,"
        echo "kernels/), hal-cache.tar.gz (run/hal-cache: sources and logs a CompileError names),"
        echo "membound.md, gpu_kernels.md, conformance.txt. A path \$OUT/run/X is X in the archives."
        for f in "$RUN/kernels/gpu_kernels.md" "$RUN/membound/membound.md"; do
            [ -f "$f" ] && { echo; cat "$f"; }
        done
        echo
        echo "## conformance (last lines of its log)"
        echo '```'
        [ -f "$LOGS/conformance.log" ] && tail -n 25 "$LOGS/conformance.log"
        echo '```'
    } >"$s"
    [ -f "$RUN/kernels/gpu_kernels.md" ] && cp "$RUN/kernels/gpu_kernels.md" "$OUT/"
    [ -f "$RUN/membound/membound.md" ] && cp "$RUN/membound/membound.md" "$OUT/"
    [ -f "$LOGS/conformance.log" ] && tail -n 200 "$LOGS/conformance.log" >"$OUT/conformance.txt"
    tar -C "$RUN" -czf "$OUT/results.tar.gz" --exclude=./hal-cache . 2>/dev/null
    if [ -d "$HAL_CACHE_DIR" ]; then
        tar -C "$RUN" -czf "$OUT/hal-cache.tar.gz" hal-cache 2>/dev/null
        if [ "$(stat -c %s "$OUT/hal-cache.tar.gz")" -gt $(( 15 * 1024 * 1024 )) ]; then
            # too big to come back: keep the sources and logs, drop the compiled blobs
            tar -C "$RUN" -czf "$OUT/hal-cache.tar.gz" hal-cache/sources 2>/dev/null
        fi
    fi
    rm -rf "$RUN"
    echo
    cat "$s" | head -n 14
    echo "files under $OUT: $(ls "$OUT" | tr '\n' ' ')"
}
trap pack EXIT
trap 'exit 143' TERM INT

step install 45 bash -c install_hal
hash -r
# pip puts `hal` in the interpreter's scripts dir; make sure that dir is on PATH
command -v hal >/dev/null 2>&1 || PATH="$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
[ "$DRY" = 1 ] || cat >"$RUN/probe.py" <<'PY'
import importlib.metadata as m

for p in ("hal", "torch", "cuda-core", "cuda-bindings", "cuda-pathfinder", "nvidia-cuda-nvrtc",
          "triton"):
    try:
        print(p, m.version(p))
    except Exception as e:  # noqa: BLE001
        print(p, "missing:", e)
from hal.backends_registry import get_backend

b = get_backend("cuda")
print("cuda backend:", b.probe())
print("L2 bytes the device reports:", b.l2_bytes() if b.probe() else None)
PY
step probe 20 sh -c "nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv; '$PY' '$RUN/probe.py'; hal backends"
step smoke 30 env HAL_SYNC_EACH=1 hal run examples/tiny_gpt.hal --backend cuda --device "$DEVICE" --json
[ "$DRY" = 1 ] || mkdir -p "$RUN/conformance"
step conformance 120 hal conformance --backend cuda --device "$DEVICE" --workers "$WORKERS" \
    ${FILTER:+-k "$FILTER"} --report "$RUN/conformance/conformance-cuda-$DEVICE.json" \
    --junit "$RUN/conformance/conformance-cuda-$DEVICE.xml"
MB=$(limit 75)
step membound "$MB" "$PY" benchmarks/bench_membound.py --backend cuda --device "$DEVICE" \
    --out "$RUN/membound" --baselines torch,torch-compile --cols 4096,32768 \
    --dtypes bf16,f32 --repeat 20 --warmup 3 --time-budget $(( MB > 30 ? MB - 15 : MB / 2 ))
KB=$(limit 600)  # the last step: whatever is left
step kernels "$KB" "$PY" benchmarks/bench_gpu_kernels.py --device "$DEVICE" \
    --out "$RUN/kernels" --time-budget $(( KB > 30 ? KB - 10 : KB / 2 ))

failed=0
for rc in "${CODES[@]}"; do [ "$rc" = 0 ] || failed=1; done
exit "$failed"
