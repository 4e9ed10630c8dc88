#!/usr/bin/env bash
# gpu_check.sh: the one script a session with an H100 runs to check hal's CUDA backend.
#
# Steps (each with a timeout; a failing step is recorded and the next one still runs):
#   1. pip install -e ".[cuda]"  only when cuda.core is missing
#   2. hal backends
#   3. hal conformance --backend cuda  (JSON + JUnit reports)
#   4. hal run examples/tiny_gpt.hal --backend cuda --json
#   5. hal bench on the memory-bound and matmul-with-epilogue cases of benchmarks/suites/llm.yaml
#      (a filtered copy of the suite, since `hal bench --suite` has no filter), torch baseline
# Everything is written under $OUT (default: ./gpu-check-out); a summary ends the run.
# GPU_CHECK_DRY_RUN=1 prints the commands instead of running them.
# Env: OUT, DEVICE (default h100-sxm), STEP_TIMEOUT (seconds, default 1200).
set -u

OUT="${OUT:-$PWD/gpu-check-out}"
DEVICE="${DEVICE:-h100-sxm}"
STEP_TIMEOUT="${STEP_TIMEOUT:-1200}"
DRY="${GPU_CHECK_DRY_RUN:-0}"
SUITE="benchmarks/suites/llm.yaml"
SUITE_SUBSET="$OUT/llm-memory-bound-and-epilogues.yaml"
mkdir -p "$OUT"

declare -a NAMES=() CODES=()

step() {  # step NAME CMD...: run with a timeout, log to $OUT/NAME.log, remember the exit code
    local name="$1"; shift
    if [ "$DRY" = "1" ]; then
        printf '[dry-run] %s: timeout %s %s\n' "$name" "$STEP_TIMEOUT" "$*"
        NAMES+=("$name"); CODES+=("dry")
        return 0
    fi
    echo "=== $name: $*"
    timeout "$STEP_TIMEOUT" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    tail -n 20 "$OUT/$name.log"
    NAMES+=("$name"); CODES+=("$rc")
    return 0
}

if [ "$DRY" != "1" ] && ! python -c "import cuda.core" >/dev/null 2>&1; then
    step install pip install -e ".[cuda]"
fi

step backends hal backends
step conformance hal conformance --backend cuda --device "$DEVICE" \
    --report "$OUT/conformance-cuda-h100.json" --junit "$OUT/conformance-cuda-h100.xml"
step tiny_gpt sh -c "hal run examples/tiny_gpt.hal --backend cuda --device $DEVICE --json \
    > '$OUT/tiny_gpt-cuda.json'"
step suite_subset python - "$SUITE" "$SUITE_SUBSET" <<'PY'
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
step bench hal bench --suite "$SUITE_SUBSET" --backend cuda --device "$DEVICE" \
    --baseline torch --json "$OUT/bench-cuda-h100.json" --csv "$OUT/bench-cuda-h100.csv" \
    --plot "$OUT/bench-cuda-h100.png"

echo
echo "=== summary (logs and reports in $OUT)"
failed=0
for i in "${!NAMES[@]}"; do
    rc="${CODES[$i]}"
    case "$rc" in
        0) status="ok" ;;
        dry) status="dry-run" ;;
        124) status="TIMEOUT after ${STEP_TIMEOUT}s"; failed=1 ;;
        *) status="FAILED (exit $rc)"; failed=1 ;;
    esac
    printf '  %-14s %s\n' "${NAMES[$i]}" "$status"
done
exit "$failed"
