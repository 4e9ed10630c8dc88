"""hal.conformance: one conformance suite that every backend runs (IREE style).

Modules: `cases` (generated from the op registry: ids, tags, inputs),
`tolerance` (the error model: per-element intervals from each op's
ErrorModel, dtypes and accumulation length), `compare` (verdicts, ulp
statistics), `random_graphs` (differential random testing and shrinking),
`expectations` (per-backend UNSUPPORTED / EXPECTED_FAILURES, applicability),
`runner` (parallel execution), `report` (JSON / JUnit / summary),
`selftest` (planted lowering faults), `pytest_plugin` + `test_suite`.

CLI: `hal conformance --backend cpu_sim --device h100-sxm [-k PATTERN] ...`.
"""
