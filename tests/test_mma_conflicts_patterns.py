"""mma_sim._conflicts on phases of a few patterns each repeated at shifts by whole
128-byte bank spans (a swizzled tile's rows, negative addresses of inactive lanes
included): counted once per distinct pattern, equal to the count phase by phase."""

import numpy as np
import pytest

from hal.backends.cpu_sim import mma_sim


def _by_hand(byte_addr: np.ndarray, nbytes: int) -> int:
    total = 0
    for phase in byte_addr.tolist():
        words = {a // 4 + k for a in phase for k in range(max(1, nbytes // 4))}
        total += max(0, max(sum(1 for w in words if w % 32 == b) for b in range(32)) - 1)
    return total


@pytest.mark.parametrize("nbytes", [4, 8, 16])
def test_patterns_shifted_by_bank_spans(nbytes: int) -> None:
    rng = np.random.default_rng(5)
    for _ in range(150):
        patterns = rng.integers(0, 48, (int(rng.integers(1, 5)), 8)) * nbytes
        which = rng.integers(0, len(patterns), int(rng.integers(2, 40)))
        shifts = rng.integers(-30, 30, len(which)) * int(rng.choice([128, 256, 64, 32]))
        addr = (patterns[which] + shifts[:, None]).astype(np.int64)
        assert mma_sim._conflicts(addr, nbytes) == _by_hand(addr, nbytes)


def test_swizzled_rows() -> None:
    """One 128-byte row per phase, its 16-byte chunks XOR-swizzled by the row: no
    conflicts; rows 64 bytes apart instead: two rows' chunks share banks."""
    pr = np.repeat(np.arange(-64, 192), 8).reshape(-1, 8)
    chunk = np.arange(8)[None, :] ^ (pr % 8)
    assert mma_sim._conflicts(pr * 128 + chunk * 16, 16) == 0
    half = np.concatenate([pr[:, :4] * 128 + chunk[:, :4] * 16,
                           pr[:, :4] * 128 + 64 + chunk[:, :4] * 16], axis=1)
    assert mma_sim._conflicts(half, 16) == _by_hand(half, 16)
