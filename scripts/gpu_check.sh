#!/usr/bin/env bash
# gpu_check.sh: the one script a session with an H100 runs to check hal's CUDA backend.
#
# Steps (each with a timeout; a failing step is recorded and the next one still runs):
#   1. pip install -e ".[cuda]"  only when cuda.core is missing
#   2. hal backends
#   3. hal conformance --backend cuda  (JSON + JUnit reports)
#   4. hal run examples/tiny_gpt.hal --backend cuda --json
#   5. benchmarks/bench_membound.py --backend cuda: fused memory-bound kernels (x*sigmoid(x)+y,
#      softmax, layer_norm, rms_norm; 4096-32768 columns; bf16, f32) against the measured
#      device-to-device copy bandwidth, torch eager and torch.compile in one run
#      ($OUT/membound/membound.md, .json, .csv); it stops itself before its step limit
#   6. hal bench on the memory-bound and matmul-with-epilogue cases of benchmarks/suites/llm.yaml
#      (a filtered copy of the suite, since `hal bench --suite` has no filter), torch baseline,
#      with the copy-bandwidth reference (% copy BW column)
# Everything is written under $OUT (default: ./gpu-check-out); a summary ends the run.
# GPU_CHECK_DRY_RUN=1 prints the commands instead of running them.
#
# Time: each step has its own limit (seconds, below), and the whole script stays within
# GPU_CHECK_BUDGET (default 540 = 9 minutes): a step gets min(its limit, what is left), and
# a step with under 15 s left is skipped and reported as such. Worst case with cuda.core
# already installed: backends 30 + conformance 150 (a partial run: its .jsonl sidecar keeps
# each finished case) + tiny_gpt 45 + membound 240 + suite_subset 15, then bench gets the
# remaining ~60 s. For a full conformance or bench run: GPU_CHECK_BUDGET=3600 STEP_TIMEOUT=1200.
# Env: OUT, DEVICE (default h100-sxm), GPU_CHECK_BUDGET (default 540), STEP_TIMEOUT (when
# set, replaces every step's own limit; the budget still applies).
set -u

OUT="${OUT:-$PWD/gpu-check-out}"
DEVICE="${DEVICE:-h100-sxm}"
STEP_TIMEOUT="${STEP_TIMEOUT:-}"
BUDGET="${GPU_CHECK_BUDGET:-540}"
DRY="${GPU_CHECK_DRY_RUN:-0}"
START=$(date +%s)
SUITE="benchmarks/suites/llm.yaml"
SUITE_SUBSET="$OUT/llm-memory-bound-and-epilogues.yaml"
mkdir -p "$OUT"

declare -a NAMES=() CODES=() LIMITS=()

SPENT=0  # dry run: the worst case, every step using all of its limit

limit() {  # limit SECONDS: min(STEP_TIMEOUT or SECONDS, what is left of the budget)
    local want="${STEP_TIMEOUT:-$1}" used
    if [ "$DRY" = "1" ]; then used=$SPENT; else used=$(( $(date +%s) - START )); fi
    local left=$(( BUDGET - used ))
    [ "$want" -lt "$left" ] && left="$want"
    [ "$left" -lt 0 ] && left=0
    echo "$left"
}

step() {  # step NAME SECONDS CMD...: run with a timeout, log to $OUT/NAME.log, keep the exit code
    local name="$1" t; t=$(limit "$2"); shift 2
    if [ "$DRY" = "1" ]; then
        printf '[dry-run] %s: timeout %s %s\n' "$name" "$t" "$*"
        NAMES+=("$name"); CODES+=("dry"); LIMITS+=("$t"); SPENT=$(( SPENT + t ))
        return 0
    fi
    if [ "$t" -lt 15 ]; then
        echo "=== $name: skipped, ${t}s left of the ${BUDGET}s budget"
        NAMES+=("$name"); CODES+=("budget"); LIMITS+=("$t")
        return 0
    fi
    echo "=== $name (limit ${t}s): $*"
    timeout "$t" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    tail -n 20 "$OUT/$name.log"
    NAMES+=("$name"); CODES+=("$rc"); LIMITS+=("$t")
    return 0
}

if [ "$DRY" != "1" ] && ! python -c "import cuda.core" >/dev/null 2>&1; then
    step install 90 pip install -e ".[cuda]"
fi

step backends 30 hal backends
step conformance 150 hal conformance --backend cuda --device "$DEVICE" \
    --report "$OUT/conformance-cuda-h100.json" --junit "$OUT/conformance-cuda-h100.xml"
step tiny_gpt 45 sh -c "hal run examples/tiny_gpt.hal --backend cuda --device $DEVICE --json \
    > '$OUT/tiny_gpt-cuda.json'"
# the issue's memory-bound target: hal vs copy bandwidth, torch eager, torch.compile; the
# script's own --time-budget stops it (skipping torch.compile first, then cases, labelled)
# 30 s before the step's limit, so it always writes its table
MEMBOUND_LIMIT=$(limit 240)
MEMBOUND_BUDGET=$(( MEMBOUND_LIMIT > 60 ? MEMBOUND_LIMIT - 30 : MEMBOUND_LIMIT / 2 ))
step membound "$MEMBOUND_LIMIT" python benchmarks/bench_membound.py --backend cuda \
    --device "$DEVICE" --out "$OUT/membound" --baselines torch,torch-compile \
    --time-budget "$MEMBOUND_BUDGET"
step suite_subset 15 python - "$SUITE" "$SUITE_SUBSET" <<'PY'
import sys, yaml
src, dst = sys.argv[1], sys.argv[2]
suite = yaml.safe_load(open(src))
keep = ("rms_norm", "layer_norm", "residual_add", "softmax", "silu_", "gelu_",
        "matmul_silu_up", "matmul_residual_down", "matmul_bias_gelu")
suite["cases"] = [c for c in suite["cases"] if c["name"].startswith(keep)]
suite["suite"] = str(suite.get("suite", "llm")) + "-memory-bound-epilogues"
yaml.safe_dump(suite, open(dst, "w"), sort_keys=False)
print(len(suite["cases"]), "case templates ->", dst)
PY
step bench 600 hal bench --suite "$SUITE_SUBSET" --backend cuda --device "$DEVICE" \
    --baseline torch --json "$OUT/bench-cuda-h100.json" --csv "$OUT/bench-cuda-h100.csv" \
    --plot "$OUT/bench-cuda-h100.png"

echo
echo "=== summary (logs and reports in $OUT; $(( $(date +%s) - START ))s of ${BUDGET}s)"
failed=0
for i in "${!NAMES[@]}"; do
    rc="${CODES[$i]}"
    case "$rc" in
        0) status="ok" ;;
        dry) status="dry-run" ;;
        budget) status="SKIPPED (time budget spent)"; failed=1 ;;
        124) status="TIMEOUT after ${LIMITS[$i]}s"; failed=1 ;;
        *) status="FAILED (exit $rc)"; failed=1 ;;
    esac
    printf '  %-14s %s\n' "${NAMES[$i]}" "$status"
done
exit "$failed"
