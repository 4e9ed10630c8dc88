"""mma_sim's bank-conflict count and wgmma_sim's TMA box arithmetic: the fast paths against
the straightforward computation on small cases."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from hal.backends.cpu_sim import mma_sim, wgmma_sim
from hal.backends.cpu_sim.wgmma_operand import whole_chunks
from hal.kernel.wgmma import swizzle


def _conflicts_by_hand(byte_addr: np.ndarray, nbytes: int) -> int:
    """Per phase: the most distinct 4-byte words one of the 32 banks serves, less one."""
    total = 0
    for phase in byte_addr.tolist():
        words = {a // 4 + k for a in phase for k in range(max(1, nbytes // 4))}
        per_bank = [sum(1 for w in words if w % 32 == b) for b in range(32)]
        total += max(0, max(per_bank) - 1)
    return total


def test_known_counts() -> None:
    row = np.arange(8) * 128                      # 8 rows of 16 B, 128 B apart: one bank group
    assert mma_sim._conflicts(row[None, :], 16) == 7
    assert mma_sim._conflicts((np.arange(8) * 16)[None, :], 16) == 0
    assert mma_sim._conflicts(np.zeros((3, 8), np.int64), 16) == 0   # one word: a broadcast
    shifted = np.stack([row, row + 16, row + 128 * 8, row + 2048 + 16])
    assert mma_sim._conflicts(shifted, 16) == 4 * 7


@pytest.mark.parametrize("nbytes", [4, 8, 16])
def test_shifted_phases_count_as_each_phase_alone(nbytes: int) -> None:
    rng = np.random.default_rng(2)
    for _ in range(200):
        lanes = int(rng.choice([4, 8]))
        pattern = rng.integers(0, 64, lanes) * nbytes
        bases = rng.integers(0, 40, int(rng.integers(2, 9))) * int(rng.choice([4, 16, 64]))
        addr = bases[:, None] + pattern[None, :]
        want = _conflicts_by_hand(addr, nbytes)
        assert mma_sim._conflicts(addr, nbytes) == want
        assert mma_sim._conflicts_raw(addr, nbytes) == want


def test_phases_of_different_patterns() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        addr = rng.integers(0, 256, (int(rng.integers(1, 6)), 8)) * 16
        if rng.random() < 0.3:
            addr[1:] = addr[:1] + 16 * rng.integers(0, 2, (len(addr) - 1, 1))
            addr[-1, -1] += 16     # all but one phase shifted copies
        assert mma_sim._conflicts(addr, 16) == _conflicts_by_hand(addr, 16)


# ---------------------------------------------------------------- TMA boxes
def _box_by_hand(src: np.ndarray, dims, box, estr, origin) -> tuple[list, int]:
    """The box at `origin` element by element (innermost first), zero past the edge."""
    vals, read = [], 0
    for flat_i in range(int(np.prod(box))):
        rel, r = [], flat_i
        for b in box:
            rel.append(r % b)
            r //= b
        g = [o + x for o, x in zip(origin, rel, strict=True)]
        if all(0 <= x < d for x, d in zip(g, dims, strict=True)):
            vals.append(src[sum(x * e for x, e in zip(g, estr, strict=True))])
            read += 1
        else:
            vals.append(0)
    return vals, read


@pytest.mark.parametrize("where", ["inside", "edges"])
def test_box_gather_matches_element_by_element(where: str) -> None:
    rng = np.random.default_rng(4)
    dims, box = (10, 6, 3), (4, 2, 2)
    estr = (1, 12, 80)                        # padded rows: strides past the dims
    src = rng.standard_normal(3 * 80)
    tm = SimpleNamespace(dims=dims, box=box)
    for _ in range(30):
        lo = (0, 0, 0) if where == "inside" else (-3, -1, -1)
        hi = [d - b + 1 for d, b in zip(dims, box, strict=True)] if where == "inside" \
            else [d + 1 for d in dims]
        origins = [[int(rng.integers(lo[d], hi[d])) for d in range(3)] for _ in range(5)]
        coords = [np.array([o[d] for o in origins], np.int64) for d in range(3)]
        vals, read = wgmma_sim._box_gather(src, tm, estr, coords)
        for lane, o in enumerate(origins):
            want, n = _box_by_hand(src, dims, box, estr, o)
            assert vals[lane].tolist() == want
            assert int(read[lane]) == n


def test_box_gather_by_rows_matches_element_by_element() -> None:
    """Boxes whose rows start on whole rows of the tensor (the usual TMA of a tile) are
    gathered as rows: the same values as element by element."""
    rng = np.random.default_rng(5)
    dims, box = (16, 6, 3), (4, 2, 2)
    estr = (1, 16, 96)
    src = rng.standard_normal(3 * 96)
    tm = SimpleNamespace(dims=dims, box=box)
    for _ in range(30):
        origins = [[4 * int(rng.integers(0, 4)), int(rng.integers(0, 5)), int(rng.integers(0, 2))]
                   for _ in range(5)]
        coords = [np.array([o[d] for o in origins], np.int64) for d in range(3)]
        vals, read = wgmma_sim._box_gather(src, tm, estr, coords)
        for lane, o in enumerate(origins):
            want, n = _box_by_hand(src, dims, box, estr, o)
            assert vals[lane].tolist() == want
            assert int(read[lane]) == n


@pytest.mark.parametrize("mode", [0, 32, 64, 128])
@pytest.mark.parametrize("isz", [1, 2, 4])
def test_box_elements_match_the_swizzle(mode: int, isz: int) -> None:
    """The box's element offsets are the swizzled addresses', and its chunks (when given)
    those of whole_chunks: through the shared pattern and word by word, from a buffer
    that starts on or off a swizzle pattern."""
    elems = 512 // isz
    c = 16 // isz
    for base in (0, 16, 48, 1024):
        for addr in ([0, 1024, 4096], [0, 16, 1024], [128, 256, 2048 + 512], [8, 1032]):
            a = np.array(addr, np.int64) + base
            want = (swizzle(a[:, None] + np.arange(elems) * isz, mode) - base) // isz
            elem, chunks, (lo, hi) = wgmma_sim._box_elements(a, base, mode, elems, isz, c)
            assert elem.tolist() == want.tolist()
            assert lo.tolist() == want.min(axis=1).tolist()
            assert hi.tolist() == want.max(axis=1).tolist()
            whole = whole_chunks(want, c)
            if chunks is None:
                assert whole is None
            else:
                assert chunks.tolist() == whole.tolist()
    a = np.array([1024, 4096], np.int64)
    assert wgmma_sim._box_elements(a, 0, 128, 512, 2, 8)[1] is not None   # the usual case


# ---------------------------------------------------------------- vector copies
@pytest.mark.parametrize("width", [1, 2, 4, 8, 3])
def test_vectors_inside_matches_the_three_checks(width: int) -> None:
    rng = np.random.default_rng(5)
    size = 64
    for _ in range(300):
        start = rng.integers(-2 * width, size + width, int(rng.integers(0, 6))).astype(np.int64)
        if rng.random() < 0.5:
            start = start - start % width   # mostly aligned
        want = bool(((start >= 0) & (start + width <= size) & (start % width == 0)).all())
        assert mma_sim._vectors_inside(start, width, size) == want, start
    assert not mma_sim._vectors_inside(np.array([np.iinfo(np.int64).min]), 4, size)
    assert not mma_sim._vectors_inside(np.array([0]), 4, 2)


def test_memo_answers_by_content(monkeypatch: pytest.MonkeyPatch) -> None:
    """A repeated address set is answered from the memo (no recount); an array changed in
    place, another width or another shape is counted anew."""
    mma_sim._conflicts_memo.clear()
    counted = []
    real = mma_sim._count_conflicts
    monkeypatch.setattr(mma_sim, "_count_conflicts",
                        lambda a, n: counted.append(1) or real(a, n))
    row = (np.arange(8) * 128)[None, :]
    assert mma_sim._conflicts(row, 16) == 7
    assert mma_sim._conflicts(row.copy(), 16) == 7
    assert len(counted) == 1                       # the second call: a memo hit
    row[0, 1:] = np.arange(1, 8) * 16              # changed in place: a new count
    assert mma_sim._conflicts(row, 16) == _conflicts_by_hand(row, 16) == 0
    assert mma_sim._conflicts(row, 4) == _conflicts_by_hand(row, 4)
    assert mma_sim._conflicts(row.reshape(2, 4), 16) == _conflicts_by_hand(row.reshape(2, 4), 16)
    assert len(counted) == 4
    big = np.zeros((mma_sim.CONFLICTS_MEMO_WORDS // 8 + 1, 8), np.int64)
    memo = len(mma_sim._conflicts_memo)
    assert mma_sim._conflicts(big, 16) == 0 and len(mma_sim._conflicts_memo) == memo
