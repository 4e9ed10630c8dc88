#!/usr/bin/env bash
# Run the LLM op suite on the cpu_sim backend for every shipped device spec and write,
# per device, JSON (with provenance), CSV and a roofline PNG under
# benchmarks/results/cpu_sim/. Figures are MODELLED from each spec (the cost model for
# large shapes, simulator counts for small ones): the expected roofline before silicon.
#
#   benchmarks/run_llm_suite.sh                 # all shipped specs
#   benchmarks/run_llm_suite.sh h100-sxm mi300x # just these
#   SUITE=my.yaml OUT=/tmp/res benchmarks/run_llm_suite.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SUITE="${SUITE:-benchmarks/suites/llm.yaml}"
OUT="${OUT:-benchmarks/results/cpu_sim}"
if [ "$#" -gt 0 ]; then
    DEVICES=("$@")
else
    mapfile -t DEVICES < <(python -c \
        "from hal.devices.loader import shipped_spec_names; print('\n'.join(shipped_spec_names()))")
fi
mkdir -p "$OUT"
start=$(date +%s)
for dev in "${DEVICES[@]}"; do
    echo "== $dev"
    hal bench --suite "$SUITE" --backend cpu_sim --device "$dev" \
        --json "$OUT/$dev.json" --csv "$OUT/$dev.csv" --plot "$OUT/$dev.png" > "$OUT/$dev.txt"
    tail -n 3 "$OUT/$dev.txt"
done
echo "done: ${#DEVICES[@]} device(s) in $(( $(date +%s) - start )) s; results in $OUT"
python benchmarks/llm_suite_table.py "$OUT" > "$OUT/table.md"
echo "table (benchmarks/RESULTS.md, LLM op suite): $OUT/table.md"
