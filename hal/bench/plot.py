"""Roofline plot: each benchmark as a point of achieved FLOP/s against arithmetic intensity.

Log-log axes; the ceilings are the device's DRAM bandwidth (a line of slope 1:
FLOP/s = intensity x bandwidth) and its compute peaks (the matrix peak of the
dtype and the vector f32 peak), each labelled. Points are coloured by op and
marked by how their figure was obtained (measured, modelled); baselines that
ran appear as hollow markers. Ops with no flops (gather) cannot sit on a
log-log roofline and are listed under the plot instead. Needs matplotlib
(`pip install 'hal[plot]'`); uses the Agg backend, so no display is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hal.bench.runner import BenchResult, summarize_times
from hal.devices.spec import DeviceSpec
from hal.errors import HalError
from hal.roofline import SIMT_F32
from hal.roofline import peak as roofline_peak

MARKERS = {"measured": "o", "modelled": "s"}


def _matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise HalError("--plot needs matplotlib", hint="pip install 'hal[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _op_label(r: BenchResult) -> str:
    return r.op if len(r.op) < 40 else Path(r.op).name


def roofline_plot(results: Sequence[BenchResult], spec: DeviceSpec, path: str | Path,
                  title: str | None = None, annotate: bool | None = None) -> Path:
    """Write the roofline PNG for `results` (all on `spec`) to `path`; returns the path."""
    plt = _matplotlib()
    fig, ax = plt.subplots(figsize=(13, 7), dpi=110)
    plotted = [r for r in results if r.flops > 0 and r.median_s > 0]
    skipped = [r for r in results if r not in plotted]
    xs = [r.intensity for r in plotted] or [1.0]
    lo, hi = min(min(xs) / 4, 0.05), max(max(xs) * 4, 4096.0)
    bw = spec.dram_bandwidth
    peaks = {}
    for r in plotted:
        peaks.setdefault(r.peak_kind, r.peak_flops)
    peaks.setdefault("vector f32", roofline_peak(spec, SIMT_F32))
    top = max(peaks.values())
    grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    ax.plot(grid, [min(x * bw, top) for x in grid], color="black", lw=2,
            label=f"DRAM {bw / 1e12:.2f} TB/s")
    styles = iter(["--", ":", "-."])
    for kind, peak in sorted(peaks.items(), key=lambda kv: -kv[1]):
        ax.plot([peak / bw, hi], [peak, peak], color="dimgray", lw=1.4, ls=next(styles, "--"))
        ax.text(hi, peak, f" {kind} {peak / 1e12:.0f} TFLOP/s", va="bottom", ha="right",
                fontsize=8, color="dimgray")
    ops = sorted({_op_label(r) for r in plotted})
    cmap = plt.get_cmap("tab10" if len(ops) <= 10 else "tab20")
    colors = {op: cmap(i % cmap.N) for i, op in enumerate(ops)}
    annotate = len(plotted) <= 24 if annotate is None else annotate
    for r in plotted:
        kind = "modelled" if r.modelled else "measured"
        ax.scatter(r.intensity, r.achieved_flops_per_s, color=colors[_op_label(r)],
                   marker=MARKERS[kind], s=42, zorder=3, edgecolors="black", linewidths=0.4)
        if annotate:
            ax.annotate(f"{r.case} ({r.pct_of_roofline:.0f}%)",
                        (r.intensity, r.achieved_flops_per_s), fontsize=6.5,
                        xytext=(4, -9), textcoords="offset points")
        for b in r.baselines:
            med = summarize_times(b.times_s)["median_s"]
            if b.available and med:
                ax.scatter(r.intensity, r.flops / med, facecolors="none",
                           edgecolors=colors[_op_label(r)], marker="D", s=36, zorder=3)
    for op in ops:   # legend: one entry per op, then the marker meanings
        ax.scatter([], [], color=colors[op], marker="o", s=36, label=op)
    for kind, m in MARKERS.items():
        if any((r.modelled if kind == "modelled" else not r.modelled) for r in plotted):
            ax.scatter([], [], color="lightgray", edgecolors="black", marker=m, s=36,
                       label=kind)
    if any(b.available for r in plotted for b in r.baselines):
        ax.scatter([], [], facecolors="none", edgecolors="black", marker="D", s=36,
                   label="framework baseline")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ymin = min([r.achieved_flops_per_s for r in plotted] + [lo * bw]) / 4
    ax.set_ylim(ymin, top * 3)
    ax.set_xlabel("arithmetic intensity (FLOP per compulsory DRAM byte)")
    ax.set_ylabel("achieved FLOP/s" + (" (modelled)" if plotted and all(r.modelled
                                                                       for r in plotted) else ""))
    methods = sorted({r.method for r in results})
    ax.set_title(title or f"roofline: {spec.name} ({spec.arch}) - " + ", ".join(methods))
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0)
    if skipped:
        fig.text(0.01, 0.005, "not plotted (no flops): " + ", ".join(r.case for r in skipped)[:220],
                 fontsize=7)
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
