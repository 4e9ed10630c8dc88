"""wgmma_sim: a wgmma reading the same A words as the previous one with nothing changed
since (a dual GEMM's gate and up products share their A tile) reuses that read: its
values, its TMA-mark check and its noting in the cluster read map. The reuse gives the
same outputs and counters as reading again, and anything its values or checks depend on
(shared writes, TMAs, mbarrier waits, the cluster's read map) invalidates it."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from hal.backends.cpu_sim import wgmma_sim
from hal.backends.cpu_sim.simulator import simulate
from hal.devices.loader import load_spec
from hal.dtypes import bf16
from hal.fusion import plan as fuse
from hal.ir import GraphBuilder
from hal.lowering import lower_group
from hal.reference import random_inputs

H100 = load_spec("h100-sxm")


@pytest.fixture(autouse=True)
def _no_measure(monkeypatch):
    monkeypatch.setenv("HAL_MEASURE", "off")


def _dual_kernel():
    b = GraphBuilder("ffn")   # gate and up: one dual GEMM kernel (clustered)
    h = b.input("h", bf16, (256, 256))
    gate = b.op("matmul", h, b.input("wg", bf16, (256, 256)), transpose_b=True)
    up = b.op("matmul", h, b.input("wu", bf16, (256, 256)), transpose_b=True)
    b.output(b.op("mul", b.op("silu", gate), up))
    g = b.build()
    (k,) = [k for grp in fuse(g, H100).groups for k in lower_group(grp, H100)
            if k.meta.plan is not None and k.meta.plan.strategy == "wgmma"]
    assert k.meta.plan.detail("contractions") == 2
    ins = random_inputs(g, 3)
    args = {}
    for p in k.params:
        if hasattr(p, "numel"):
            v = ins.get(k.meta.buffers.get(p.name, p.name))
            args[p.name] = np.zeros(p.numel, p.dtype.np_dtype) if v is None else \
                np.ascontiguousarray(v, p.dtype.np_dtype).ravel()
    return k, args


def _stats(s) -> dict:
    d = dataclasses.asdict(s) if dataclasses.is_dataclass(s) else dict(vars(s))
    return {n: v for n, v in d.items() if "time" not in n and not n.endswith("_s")}


def test_dual_gemm_reuses_a_and_matches_reading_it_again(monkeypatch) -> None:
    k, args = _dual_kernel()
    real = wgmma_sim._a_again
    hits = []

    def counting(*a):
        got = real(*a)
        hits.append(got is not None)
        return got

    monkeypatch.setattr(wgmma_sim, "_a_again", counting)
    fast_args = {n: v.copy() for n, v in args.items()}
    fast = simulate(k, fast_args, H100)
    # every other wgmma is up's, reading gate's A: served from the previous read
    assert sum(hits) * 2 == len(hits) > 0
    monkeypatch.setattr(wgmma_sim, "_a_again", lambda *a: None)
    slow_args = {n: v.copy() for n, v in args.items()}
    slow = simulate(k, slow_args, H100)
    for n in args:
        np.testing.assert_array_equal(fast_args[n], slow_args[n])
    assert _stats(fast) == _stats(slow)


def _state():
    W = SimpleNamespace(sh_version=[0, 0], cluster=SimpleNamespace(epoch=0))
    st = SimpleNamespace(tmas=0, waits=0, last_a=None)
    key = (b"desc", b"groups", 64, 16, 2, True)
    st.last_a = wgmma_sim.ARead(key, 0, wgmma_sim._a_tokens(W, st, 0), np.zeros(1), None,
                                None, 1)
    return W, st, key


@pytest.mark.parametrize("change", ["shared write", "other buffer", "tma", "wait",
                                    "cluster", "other words"])
def test_what_invalidates_the_previous_read(change) -> None:
    W, st, key = _state()
    assert wgmma_sim._a_again(W, st, key, 0) is st.last_a
    if change == "shared write":
        W.sh_version[0] += 1
    elif change == "other buffer":
        W.sh_version[1] += 1
    elif change == "tma":
        st.tmas += 1
    elif change == "wait":
        st.waits += 1
    elif change == "cluster":
        W.cluster.epoch += 1
    else:
        key = (b"desc2", *key[1:])
    got = wgmma_sim._a_again(W, st, key, 0)
    assert (got is st.last_a) if change == "other buffer" else got is None


def test_a_kernel_without_cluster_reuses_too() -> None:
    W, st, key = _state()
    W.cluster = None
    st.last_a = st.last_a._replace(tokens=wgmma_sim._a_tokens(W, st, 0))
    assert wgmma_sim._a_again(W, st, key, 0) is st.last_a
    st.waits += 1
    assert wgmma_sim._a_again(W, st, key, 0) is None
