"""cluster_sim's race bookkeeping (backends/cpu_sim/cluster_sim.py): the per-chunk ReadMap,
its split to words, and the lane loops it replaced, against a per-word model of the same
rules (a bool per word per issuer rank and the phase of each word's read fill; every
lane's arrival and wait taken in order), on random sequences of wgmma reads, releases,
observed waits and TMA writes on a made-up wave of a 2-CTA cluster."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from hal.backends.cpu_sim import cluster_sim as cl

B, T, N, C = 4, 256, 512, 8        # blocks, threads per block, words per block, chunk words
NG = T // cl.WG                     # warpgroups per block
SLOTS = 2                           # mbarrier slots per block (one barrier array of 2)


class Failed(Exception):
    pass


def _wave():
    L = B * T
    blk = np.repeat(np.arange(B), T)

    def fail(kind, site, lane, what, **kw):
        raise Failed(kind, lane, what, kw.get("index"))

    W = SimpleNamespace(
        name="k", B=B, T=T, L=L, grid=(B, 1, 1), check=True, blk=blk,
        bx=blk, by=np.zeros(L, np.int64), bz=np.zeros(L, np.int64), tid=np.tile(np.arange(T), B),
        sh={0: np.zeros(B * N, np.float32)},
        sh_buf={0: SimpleNamespace(name="t", size=N, stages=2,
                                   dtype=SimpleNamespace(itemsize=16 // C))},
        _fail=fail)
    hs = SimpleNamespace(expected=np.zeros((B, SLOTS), np.int64),
                         phase=np.zeros((B, SLOTS), np.int64), bar_slot={1: 0})
    cs = cl.state(W, hs, (2, 1, 1))
    cs.init_at[:] = -1             # every mbarrier initialised before a cluster barrier
    cs.arrived[:] = np.arange(L) % 7   # (told apart per lane: the last multicast lane counts)
    return W, hs, cs


class Model:
    """The rules per word and per lane: what the ReadMap must agree with."""

    def __init__(self, cs):
        self.cs = cs
        self.unrel = np.zeros((cs.size, B * N), bool)
        self.phase = np.full(B * N, -1, np.int64)
        self.since: dict = {}
        self.rel: dict = {}
        self.rem = np.full((B, SLOTS, 3), -1, np.int64)   # phase, issuer arrivals, issuer

    def reads(self, gids, flat, phase):
        self.unrel[:, flat.ravel()] = True
        self.phase[flat] = np.broadcast_to(phase, flat.shape)
        for g, row in zip(gids.tolist(), flat, strict=True):
            for r in range(self.cs.size):
                self.since.setdefault((g, r), []).append(row)

    def release(self, hs, lanes, dst, slots):
        for ln, d, sl in zip(lanes.tolist(), dst.tolist(), slots.tolist(), strict=True):
            got = self.since.pop((ln // cl.WG, int(self.cs.rank[d])), None)
            if got:
                self.rel.setdefault((d, sl), []).extend((int(hs.phase[d, sl]), w) for w in got)

    def observe(self, hs, blocks, slots):
        for b, s in set(zip(blocks.tolist(), slots.tolist(), strict=True)):
            ph, r = int(hs.phase[b, s]), int(self.cs.rank[b])
            if 0 <= self.rem[b, s, 0] < ph:
                self.rem[b, s, 0] = -1
            for p, w in self.rel.get((b, s), []):
                if p < ph:
                    self.unrel[r, w] = False
            self.rel[(b, s)] = [(p, w) for p, w in self.rel.get((b, s), []) if p >= ph]

    def write(self, hs, src, dst, lanes, words):
        """(issuer rank, lane, word, phase) of the first race, or None; clears the words."""
        for s_, d, ln in zip(src.tolist(), dst.tolist(), lanes.tolist(), strict=True):
            if s_ != d:
                self.rem[d, 0] = hs.phase[d, 0], self.cs.arrived[ln], s_
        for r in range(self.cs.size):
            hit = self.unrel[r][words] & (self.cs.rank[src] == r)[:, None]
            if hit.any():
                i, w = (int(x[0]) for x in np.nonzero(hit))
                return r, i, int(words[i, w]), int(self.phase[words[i, w]])
        self.unrel[:, words.ravel()] = False
        return None


def _aligned_words(rng, blocks, k):
    """[len(blocks), k] words: whole chunks of each block, in a random order."""
    chunks = np.stack([rng.choice(N // C, k // C, replace=False) for _ in blocks])
    return (blocks[:, None] * N + (chunks[:, :, None] * C + np.arange(C)).reshape(len(blocks), -1))


def _loose_words(rng, blocks, k):
    """[len(blocks), k] words anywhere in each block (chunks split)."""
    return blocks[:, None] * N + rng.integers(0, N, (len(blocks), k))


def _map_state(cs):
    """Per rank, per word: unreleased; and each word's entry (phase << SHIFT | bits)."""
    mp = cs.maps[0]
    a = np.repeat(mp.a, mp.c)
    return np.stack([((a >> r) & 1) == 1 for r in range(cs.size)]), a >> cl.SHIFT


def _step(rng, W, hs, cs, model, loose: bool, phases: str):
    op = rng.integers(0, 5)
    words = _loose_words if loose and rng.random() < 0.15 else _aligned_words
    if op == 0:                                                  # wgmma reads
        gids = np.sort(rng.choice(B * NG, rng.integers(1, B * NG + 1), replace=False))
        flat = words(rng, gids // NG, 64)
        if phases == "row":
            ph = np.broadcast_to(rng.integers(-1, 4, (len(gids), 1)), flat.shape)
        elif phases == "chunk":
            ph = np.repeat(rng.integers(-1, 4, (len(gids), 64 // C)), C, axis=1)
        else:
            ph = rng.integers(-1, 4, flat.shape)
        cl.note_reads(W, gids, 0, flat, ph)
        model.reads(gids, flat, ph)
    elif op == 1:                                                # arrivals (lanes in runs)
        m = np.zeros(W.L, bool)
        for g in rng.choice(B * NG, rng.integers(1, 4), replace=False):
            m[g * cl.WG: g * cl.WG + rng.integers(1, cl.WG + 1)] = True
        idx = rng.integers(0, SLOTS, W.L)
        cta = None if rng.random() < 0.5 else rng.integers(0, cs.size, W.L)
        lanes = np.flatnonzero(m)
        own = W.blk[lanes]
        dst = own if cta is None else cs.peer[own, cta[lanes]]
        model.release(hs, lanes, dst, idx[lanes])
        cl.note_release(W, hs, cs, 1, idx, cta, m)
    elif op == 2:                                                # phases complete, waits
        hs.phase += rng.integers(0, 2, hs.phase.shape)
        m = rng.random(W.L) < 0.3
        idx = rng.integers(0, SLOTS, W.L)
        model.observe(hs, W.blk[m], idx[m])
        cl.observe(W, hs, cs, 1, idx, m)
    else:                                                        # a TMA (maybe multicast)
        lanes = np.sort(rng.choice(W.L, rng.integers(1, 5), replace=False))
        src = W.blk[lanes]
        dst = cs.peer[src, rng.integers(0, cs.size)]
        dst[rng.random(len(dst)) < 0.3] = 1        # lanes of several blocks into one
        w = words(rng, dst, 32)
        want = model.write(hs, src, dst, lanes, w)
        try:
            cl.before_write(W, hs, cs, src, dst, 0, w, 1, np.zeros(len(lanes), np.int64),
                            0, lanes)
        except Failed as e:
            kind, lane, what, index = e.args
            assert want is not None, what
            r, i, word, phase = want
            assert (kind, lane, index) == ("race", int(lanes[i]), word % N)
            assert f"phase {phase})" in what and f"CTA rank {r} has not observed" in what
        else:
            assert want is None


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("loose,phases", [(False, "row"), (False, "chunk"), (True, "row"),
                                          (False, "word")])
def test_read_map_agrees_with_the_per_word_rules(seed, loose, phases):
    rng = np.random.default_rng(seed)
    W, hs, cs = _wave()
    model = Model(cs)
    for _ in range(300):
        _step(rng, W, hs, cs, model, loose, phases)
        if 0 in cs.maps:
            unrel, ph = _map_state(cs)
            assert np.array_equal(unrel, model.unrel)
            live = unrel.any(axis=0)      # a phase counts while its read is unreleased
            assert np.array_equal(ph[live], model.phase[live])
        rem = np.stack([cs.rem_phase, cs.rem_arr, cs.rem_from], axis=-1)
        seen = model.rem[..., 0] >= 0
        assert np.array_equal(cs.rem_phase, model.rem[..., 0])
        assert np.array_equal(rem[seen], model.rem[seen])
    # the fast path held where every access covered whole chunks, and split where not
    assert cs.maps[0].c == (1 if loose or phases == "word" else C)


def test_whole_chunks_needs_every_word_in_place():
    rng = np.random.default_rng(0)
    w = _aligned_words(rng, np.arange(3), 64)
    assert np.array_equal(cl._whole_chunks(w, C), w[:, ::C] // C)
    for bad in ((1, 13, 1), (2, 8, 1), (0, 63, -1)):    # a middle word, a first, a last
        v = w.copy()
        v[bad[0], bad[1]] += bad[2]
        assert cl._whole_chunks(v, C) is None
    assert cl._whole_chunks(w + 1, C) is None            # not aligned
    assert cl._whole_chunks(w[:, :60], C) is None        # a partial chunk


def test_chunk_phases():
    per_row = np.broadcast_to(np.array([[3], [5]]), (2, 16))
    assert np.array_equal(cl._chunk_phases(per_row, C), [[3], [5]])
    per_chunk = np.repeat(np.array([[1, 2], [3, 4]]), C, axis=1)
    assert np.array_equal(cl._chunk_phases(per_chunk, C), [[1, 2], [3, 4]])
    mixed = per_chunk.copy()
    mixed[1, 9] = 7
    assert cl._chunk_phases(mixed, C) is None


def test_first_and_last_of_each():
    codes = np.array([5, 5, 2, 2, 5, 7, 2, 7, 7])
    assert cl._first_of_each(codes).tolist() == [0, 2, 5]
    assert sorted(cl._last_of_each(codes).tolist()) == [4, 6, 8]
