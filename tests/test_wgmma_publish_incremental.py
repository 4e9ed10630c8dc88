"""wgmma_sim: _publish and fence_proxy_async look only at the words generic writes noted
since they last looked (st.unpublished / st.unfenced); the per-word state after any
sequence of writes, arrivals and fences equals a scan of the whole buffer each time."""

from types import SimpleNamespace

import numpy as np

from hal.backends.cpu_sim import wgmma_sim

L, SIZE, NSLOTS = 256, 96, 4


def _wave():
    W = SimpleNamespace(L=L, check=True, sh=[np.zeros(SIZE)], hopper=None)
    st = SimpleNamespace(proxy_writer={}, sync_writer={}, pub_slot={}, pub_phase={},
                         unpublished={}, unfenced={},
                         phase=np.arange(2 * NSLOTS).reshape(2, NSLOTS) % 3)
    W.hopper = st
    return W, st


def _publish_by_scan(st, act, slots, blocks):
    lane_slot = np.full(L, -1, np.int64)
    lane_slot[act] = slots
    lane_phase = np.zeros(L, np.int64)
    lane_phase[act] = st.phase[blocks, slots]
    for j, writer in st.sync_writer.items():
        pub = st.pub_slot[j]
        idx = np.flatnonzero((writer >= 0) & (pub < 0))
        idx = idx[act[writer[idx]]]
        pub[idx] = lane_slot[writer[idx]]
        st.pub_phase[j][idx] = lane_phase[writer[idx]]


def _fence_by_scan(st, act):
    for arr in st.proxy_writer.values():
        pending = arr >= 0
        cleared = np.zeros_like(pending)
        cleared[pending] = act[arr[pending]]
        arr[cleared] = -1


def test_incremental_scans_equal_whole_buffer_scans() -> None:
    rng = np.random.default_rng(4)
    Wa, a = _wave()
    Wb, b = _wave()
    for step in range(400):
        op = rng.integers(0, 4)
        act = rng.random(L) < rng.random()
        if op <= 1:         # generic writes by some lanes (a word may be written again)
            lanes = rng.choice(L, int(rng.integers(1, 12)), replace=False)
            flat = rng.integers(0, SIZE, len(lanes))
            for W in (Wa, Wb):
                wgmma_sim.note_generic_write(W, 0, flat, lanes)
        elif op == 2:       # the active lanes arrive on mbarriers
            n = int(act.sum())
            slots, blocks = rng.integers(0, NSLOTS, n), rng.integers(0, 2, n)
            wgmma_sim._publish(Wa, a, act, slots, blocks)
            b.unpublished.clear()
            _publish_by_scan(b, act, slots, blocks)
        else:
            wgmma_sim.fence_proxy_async(Wa, a, act)
            b.unfenced.clear()
            _fence_by_scan(b, act)
        _assert_check_proxy_equals_a_scan(Wa, a, rng)
        for name in ("proxy_writer", "sync_writer", "pub_slot", "pub_phase"):
            for j, arr in getattr(b, name).items():
                np.testing.assert_array_equal(getattr(a, name)[j], arr, err_msg=f"{name} {step}")


class _Race(Exception):
    pass


def _assert_check_proxy_equals_a_scan(W, st, rng) -> None:
    """check_proxy (which skips the gather when no word is noted unfenced) raises exactly
    when one of the words read is still unfenced in proxy_writer."""
    if 0 not in st.proxy_writer:
        return
    words = rng.integers(0, SIZE, (2, 8))
    want = bool((st.proxy_writer[0][words] >= 0).any())

    def fail(*args, **kw):
        raise _Race(args)

    W._fail, W.tid, W.sh_buf = fail, np.arange(L), [SimpleNamespace(name="s", size=SIZE)]
    try:
        wgmma_sim.check_proxy(W, st, 0, words, np.ones(2, bool), 0)
        got = False
    except _Race:
        got = True
    assert got == want


def test_check_ordered_equals_the_per_word_rule() -> None:
    """check_ordered (one seen phase per row when a warpgroup's words share a slot, the
    `live` mask skipped when every word is live) raises exactly where some word read is
    live (a generic writer, no barrier since) and not published at a slot whose phase
    every reading thread observed complete."""
    from hal.backends.cpu_sim import async_proxy

    rng = np.random.default_rng(6)
    G, K, NS = 3, 16, 4
    raised = 0
    for case in range(400):
        W = SimpleNamespace(L=G * 128, check=True, tid=np.arange(G * 128),
                            sh_buf=[SimpleNamespace(name="s", size=SIZE)])
        W.sh_writer = [np.where(rng.random(SIZE) < 0.9, 1, -1).astype(np.int32)]
        writer = np.where(rng.random(SIZE) < 0.1, rng.integers(0, G * 128, SIZE), -1)
        slot = np.where(rng.random(SIZE) < 0.01, -1, rng.integers(0, NS, SIZE))
        if case % 2:                     # every word at one slot per warpgroup's rows
            slot[:] = -1 if case % 20 == 1 else rng.integers(0, NS)
        st = SimpleNamespace(sync_writer={0: writer.astype(np.int32)},
                             pub_slot={0: slot.astype(np.int32)},
                             pub_phase={0: rng.integers(0, 3, SIZE).astype(np.int32)},
                             seen=rng.integers(1, 8, (G, NS)))
        words = rng.integers(0, SIZE, (G, K))
        gl = np.ones(G, bool)
        live = (writer[words] >= 0) & (W.sh_writer[0][words] >= 0)
        s = slot[words]
        seen = st.seen[np.arange(G)[:, None], np.maximum(s, 0)]
        want = bool((live & ~((s >= 0) & (seen > st.pub_phase[0][words]))).any())

        def fail(*args, **kw):
            raise _Race(args)

        W._fail = fail
        try:
            async_proxy.check_ordered(W, st, 0, words, gl, 0)
            got = False
        except _Race:
            got = True
        assert got == want, case
        raised += got
    assert 50 < raised < 350, raised
