"""Barriers and the shared-memory race tracking they delimit (`SharedRaces`).

A barrier counts once per block that reaches it; a block whose threads do not all reach
it is a `divergent_barrier` fault. Race tracking (check=True), per shared word since the
block's last barrier: the last writer thread (-1: none) and the reader thread (-1: none,
-2: several). Reads are recorded lazily (kept as a list, folded in only when a write
follows in the same epoch) because the common tiled pattern reads a lot between barriers
and writes nothing. A write over a word another thread read or wrote, or a read of a
word another thread wrote, since the last barrier is a `race` fault. A shared atomic add
counts as a write by its thread, except against another thread's atomic add (atomics to
one word do not race with each other): a word several threads updated atomically has
the writer SEVERAL_ATOMIC, so a plain read or write of it by any thread is a race, and
`sh_atomic` marks the words whose writer entry came from atomics.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .scans import first_true
from .values import ndim

READS_PENDING_LIMIT = 1 << 22   # recorded shared reads kept unfolded (bounds their memory)
#: sh_writer's entry for a word several threads updated atomically since the last barrier:
#: larger than any thread id, so every "another thread wrote it" check holds for it
SEVERAL_ATOMIC = np.int32(np.iinfo(np.int32).max)


def _wrote(w: int) -> str:
    """Who wrote a word, for a race message (w: its sh_writer entry)."""
    return "other threads updated atomically" if w == SEVERAL_ATOMIC else f"thread {w} wrote"


class SharedRaces:
    """Race bookkeeping of the shared buffers and the barrier that resets it (mixed into
    lanes.Wave: uses its `sh_*` race state, `tid`, `T`, `B`, tallies and `_fail`)."""

    def _race_read(self, j: int, flat: np.ndarray, act: Any, site: int,
                   per_lane: int = 1) -> None:
        """`flat`: the words each lane reads ([L] or, for vector reads, [L, per_lane])."""
        if self.sh_dirty[j]:
            self._check_read_written(j, flat, act, site, per_lane)
        # recorded with the lanes' mask, applied only if a write folds them in (most
        # reads are dropped unfolded at the next barrier)
        t = self.tid if per_lane == 1 else self.tid[:, None]
        self.sh_read[j] = True
        reads = self.sh_reads[j]
        reads.append((flat, t) if act is None else (flat, t, act))
        self.sh_pending[j] += flat.size
        if len(reads) > 256 or self.sh_pending[j] > READS_PENDING_LIMIT:
            self._fold_reads(j)

    def _check_read_written(self, j: int, flat: np.ndarray, act: Any, site: int,
                            per_lane: int) -> None:
        """Race: an active lane reads a word another thread wrote since the last barrier."""
        f = flat if act is None else flat[act]
        # (int32 like the writer entries: the comparisons stay in one dtype, half the bytes)
        t = (self.tid if act is None else self.tid[act]).astype(np.int32)
        if per_lane > 1:
            f, t = f.reshape(-1), np.repeat(t, per_lane)
        w = self.sh_writer[j].take(f)
        k = first_true((w >= 0) & (w != t))
        if k >= 0:
            li = k // per_lane
            lane = li if act is None else int(np.flatnonzero(act)[li])
            self._race(j, site, lane, int(f[k]),
                       f"reads a word that {_wrote(int(w[k]))} since the last barrier")

    def _race_read_uniform(self, j: int, words: np.ndarray, site: int) -> None:
        """All T threads of each block read words[b] (T >= 2 means several readers)."""
        if self.sh_dirty[j]:
            w = self.sh_writer[j][words]
            bad = (w >= 0) if self.T > 1 else np.zeros(len(words), bool)
            if bad.any():
                b = int(np.flatnonzero(bad)[0])
                reader = 0 if int(w[b]) != 0 else 1
                self._race(j, site, b * self.T + reader, int(words[b]),
                           f"reads a word that {_wrote(int(w[b]))} since the last barrier")
        self.sh_read[j] = True
        self.sh_reads[j].append((words, np.int32(-2 if self.T > 1 else 0)))
        self.sh_pending[j] += words.size   # (counted toward the fold limit like any read)
        if len(self.sh_reads[j]) > 256 or self.sh_pending[j] > READS_PENDING_LIMIT:
            self._fold_reads(j)

    def _pending_reads(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """The recorded reads of shared buffer j as one pair of flat arrays (word, reader)."""
        words, readers = [], []
        for f, t, *act in self.sh_reads[j]:
            t = np.asarray(t, np.int32)
            if act:   # the reading lanes (rows) of a masked read
                a = act[0]
                # (the readers' rows selected before they are broadcast over a vector's
                # words: a mask over [lanes, 1], not over [lanes, width])
                t = t[a] if t.ndim and t.shape[0] == a.shape[0] else \
                    np.broadcast_to(t, f.shape)[a]
                f = f[a]
            words.append(f.reshape(-1))
            readers.append(np.broadcast_to(t, f.shape).reshape(-1))
        if len(words) == 1:
            return words[0], readers[0]
        return np.concatenate(words), np.concatenate(readers)

    def _fold_reads(self, j: int) -> None:
        """Fold the recorded reads into sh_reader in one pass: a word keeps its one reader
        thread, else becomes -2 (several), exactly as folding the reads one at a time."""
        self.sh_pending[j] = 0
        if not self.sh_reads[j]:
            return
        f, t = self._pending_reads(j)
        self.sh_reads[j].clear()
        fold_reader_words(self.sh_reader[j], f, t, self._fold_scratch)

    def _forget_reads_of(self, j: int, reached: np.ndarray) -> None:
        """Drop the recorded reads of the blocks that reached a barrier (their reader
        words are reset anyway); the other blocks' reads stay recorded, unfolded."""
        if not self.sh_reads[j]:
            return
        f, t = self._pending_reads(j)
        keep = ~reached[f // self.sh_buf[j].size]
        f, t = f[keep], t[keep]
        self.sh_reads[j][:] = [(f, t)] if f.size else []
        self.sh_pending[j] = int(f.size)

    def _race_write(self, j: int, flat: Any, act: Any, site: int, per_lane: int = 1) -> None:
        """`flat`: the words the active lanes write ([n] or [n, per_lane] for vectors)."""
        f = np.broadcast_to(flat, (self._count(act),)) if ndim(flat) == 0 else flat
        # (int32 like sh_reader and sh_writer: each comparison stays in one dtype)
        t = (self.tid if act is None else self.tid[act]).astype(np.int32)
        if per_lane > 1:
            f, t = f.reshape(-1), np.repeat(t, per_lane)

        def lane_of(k: int) -> int:   # (only for a report: flatnonzero is not free)
            k //= per_lane
            return k if act is None else int(np.flatnonzero(act)[k])

        self._check_read_by_others(j, f, t, lane_of, site, "overwrites")
        writer = self.sh_writer[j]
        if self.sh_dirty[j]:  # otherwise every writer entry is -1
            w = writer.take(f)
            k = first_true((w >= 0) & (w != t))
            if k >= 0:
                self._race(j, site, lane_of(k), int(f[k]),
                           f"writes a word that {_wrote(int(w[k]))} since the last barrier")
        writer[f] = t
        if self.sh_atomic[j] is not None:   # (a plain write now, not an atomic)
            self.sh_atomic[j][f] = False
        again = writer.take(f)
        k = first_true(again != t)
        if k >= 0:
            self._race(j, site, lane_of(k), int(f[k]),
                       f"writes the same word as thread {int(again[k])} in one statement")
        self.sh_dirty[j] = True

    def _check_read_by_others(self, j: int, f: np.ndarray, t: np.ndarray,
                              lane_of: Any, site: int, verb: str) -> None:
        """Race: a write (`verb`) by threads `t` to words `f` that another thread read
        since the last barrier (`lane_of(k)`: the wave lane of the k-th word, for the
        report)."""
        if not self.sh_read[j]:   # otherwise every reader entry is -1
            return
        self._fold_reads(j)
        rd = self.sh_reader[j].take(f)
        k = first_true((rd == -2) | ((rd >= 0) & (rd != t)))
        if k >= 0:
            who = "other threads" if rd[k] == -2 else f"thread {int(rd[k])}"
            self._race(j, site, lane_of(k), int(f[k]),
                       f"{verb} a word that {who} read since the last barrier")

    def _race_atomic(self, j: int, f: np.ndarray, act: Any, site: int) -> None:
        """Shared words `f` (one per active lane) updated by an atomic add: a race with a
        plain read or write by another thread since the last barrier, not with another
        thread's atomic add; recorded as written by the lane's thread, or SEVERAL_ATOMIC
        where other threads updated the word atomically too."""
        t = (self.tid if act is None else self.tid[act]).astype(np.int32)

        def lane_of(k: int) -> int:
            return k if act is None else int(np.flatnonzero(act)[k])

        self._check_read_by_others(j, f, t, lane_of, site, "updates atomically")
        writer = self.sh_writer[j]
        atom = self.sh_atomic[j]
        if atom is None:
            atom = self.sh_atomic[j] = np.zeros(writer.shape, bool)
        old = writer.take(f)
        if self.sh_dirty[j]:   # a plain write by another thread
            k = first_true(~atom.take(f) & (old >= 0) & (old != t))
            if k >= 0:
                self._race(j, site, lane_of(k), int(f[k]), "updates atomically a word that "
                           f"thread {int(old[k])} wrote since the last barrier")
        writer[f] = t
        several = (writer.take(f) != t) | ((old >= 0) & (old != t))
        if several.any():
            writer[f[several]] = SEVERAL_ATOMIC
        atom[f] = True
        self.sh_dirty[j] = True

    def _race(self, j: int, site: int, lane: int, flat: int, what: str) -> None:
        sb = self.sh_buf[j]
        i = flat % sb.size
        self._fail("race", site, lane, f"shared {sb.name}[{i}]: thread {int(self.tid[lane])} "
                   f"{what}", buffer=sb.name, index=i,
                   hint="add a Barrier between the conflicting accesses")

    # ------------------------------------------------------------------ for contract.Reduction
    def check_written(self, j: int, words: np.ndarray, lanes: np.ndarray, site: int) -> None:
        """Reads of shared `words` [k, len(lanes)] by `lanes`: race if another thread
        wrote one of them since the last barrier."""
        w = self.sh_writer[j][words]
        t = self.tid[lanes]
        bad = (w >= 0) & (w != t)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            col = k % words.shape[1]
            self._race(j, site, int(lanes[col]), int(words.reshape(-1)[k]),
                       f"reads a word that {_wrote(int(w.reshape(-1)[k]))} since the last "
                       "barrier")

    def record_reads(self, j: int, words: np.ndarray, readers: np.ndarray) -> None:
        """Shared `words` read by `readers` (broadcast against words; -2: several threads)."""
        self.sh_read[j] = True
        self.sh_reads[j].append((words, readers))
        self.sh_pending[j] += words.size
        if len(self.sh_reads[j]) > 256 or self.sh_pending[j] > READS_PENDING_LIMIT:
            self._fold_reads(j)

    # ------------------------------------------------------------------ barrier
    def barrier(self, m: Any, site: int) -> None:
        if m is None:
            self.barriers += self.B
            reached = None
        else:
            per = m.reshape(self.B, self.T).sum(axis=1)
            split = (per != 0) & (per != self.T)
            if split.any():
                b = int(np.flatnonzero(split)[0])
                row = m.reshape(self.B, self.T)[b]
                missing, there = int(np.flatnonzero(~row)[0]), int(np.flatnonzero(row)[0])
                self._fail("divergent_barrier", site, b * self.T + missing,
                           f"barrier reached by {int(per[b])} of {self.T} threads "
                           f"(thread {there} waits, thread {missing} never arrives)",
                           hint="move the Barrier out of the thread-dependent branch")
            reached = per == self.T
            self.barriers += self.tally_at(np.flatnonzero(reached) * self.T)
        self.epoch += 1   # contract.Reduction records a repeated read once per epoch
        if self.check:
            if reached is not None and reached.all():
                reached = None   # every block passed: the same reset as an unmasked barrier
            for j, sb in enumerate(self.sh_buf):
                if reached is None:
                    self.sh_reads[j].clear()
                    self.sh_pending[j] = 0
                    if self.sh_dirty[j]:
                        self.sh_writer[j].fill(-1)
                        if self.sh_atomic[j] is not None:
                            self.sh_atomic[j].fill(False)
                    if self.sh_read[j]:
                        self.sh_reader[j].fill(-1)
                    self.sh_dirty[j] = self.sh_read[j] = False
                else:
                    self._forget_reads_of(j, reached)
                    wr = self.sh_writer[j].reshape(self.B, sb.size)
                    rd = self.sh_reader[j].reshape(self.B, sb.size)
                    wr[reached] = -1
                    rd[reached] = -1
                    if self.sh_atomic[j] is not None:
                        self.sh_atomic[j].reshape(self.B, sb.size)[reached] = False
                    # the flags stay set only while a block that did not reach this
                    # barrier (it left the loop earlier) still has words written or
                    # read since its last one: then every later access checks them
                    rest = ~reached
                    if self.sh_dirty[j]:
                        self.sh_dirty[j] = bool((wr[rest] >= 0).any())
                    if self.sh_read[j]:
                        self.sh_read[j] = bool(self.sh_reads[j]) or bool((rd[rest] != -1).any())


_I32_LO, _I32_HI = np.iinfo(np.int32).max, np.iinfo(np.int32).min   # "no reader yet"


def fold_reader_words(reader: np.ndarray, words: np.ndarray, readers: np.ndarray,
                      scratch: dict | None = None) -> None:
    """reader[w] becomes the one thread that read word w (its old entry, -1 for none,
    and every readers[k] with words[k] == w), or -2 where those are several. `scratch`
    (a wave's): keeps the per-word min/max arrays between folds, put back to their
    sentinels at the words hit (two buffer-sized fills per fold showed in profiles)."""
    if not words.size:
        return
    if _fold_single_readers(reader, words, readers, _scatter_array(reader.shape, scratch)):
        return
    lo, hi = _fold_arrays(reader.shape, scratch)
    np.minimum.at(lo, words, readers)
    np.maximum.at(hi, words, readers)
    hit = np.flatnonzero(hi != _I32_HI)
    lo_hit, hi_hit, old = lo[hit], hi[hit], reader[hit]
    if scratch is not None:
        lo[hit], hi[hit] = _I32_LO, _I32_HI
    one = (lo_hit == hi_hit) & ((old == -1) | (old == lo_hit))
    reader[hit] = np.where(one, lo_hit, np.int32(-2))


def _fold_single_readers(reader: np.ndarray, words: np.ndarray, readers: np.ndarray,
                         tmp: np.ndarray) -> bool:
    """fold_reader_words when every word has one reader value (the usual case: each lane
    reads its own words, a vector copy its own 16 bytes), else False with `reader`
    unchanged. A plain scatter into `tmp` (any content: only the words written here are
    read back) keeps one of each word's readers; reading it back equals every reader
    only if no word has two: then each word's lo == hi == its reader, and the ufunc.at
    passes and the scan of the whole buffer for the words hit are not needed."""
    tmp[words] = readers
    if not (tmp.take(words) == readers).all():
        return False
    old = reader.take(words)
    # (a repeated word gets the same value from each of its entries)
    reader[words] = np.where((old == -1) | (old == readers), readers, np.int32(-2))
    return True


def _scatter_array(shape: tuple, scratch: dict | None) -> np.ndarray:
    """An int32 array of `shape` for _fold_single_readers: a wave's kept one, or new."""
    if scratch is None:
        return np.empty(shape, np.int32)
    key = ("scatter", shape)
    got = scratch.get(key)
    if got is None:
        got = scratch[key] = np.empty(shape, np.int32)
    return got


def _fold_arrays(shape: tuple, scratch: dict | None) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) int32 arrays of `shape` holding the sentinels: new, or a wave's kept pair."""
    got = None if scratch is None else scratch.get(shape)
    if got is None:
        got = (np.full(shape, _I32_LO, np.int32), np.full(shape, _I32_HI, np.int32))
        if scratch is not None:
            scratch[shape] = got
    return got

