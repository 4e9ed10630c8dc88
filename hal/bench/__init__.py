"""Op-level microbenchmarks: `hal bench`.

cases (an op or fused pattern as a graph, plus a framework recipe) ->
runner (measured with Backend.time, or modelled from the spec on simulated
backends; roofline figures) -> baselines (torch, torch-compile, jax on the
same device) and copy_bandwidth (a device-to-device copy of the same bytes, measured with
torch on GPUs, the spec's DRAM bandwidth labelled modelled on simulators) -> report
(JSON, CSV) / plot (roofline PNG) / provenance. benchmarks/bench_membound.py puts the
memory-bound cases against all three in one run.
Suites of cases live in YAML (suites).
"""

from hal.bench.cases import BenchCase, make_case
from hal.bench.runner import BenchResult, run_case

__all__ = ["BenchCase", "BenchResult", "make_case", "run_case"]
