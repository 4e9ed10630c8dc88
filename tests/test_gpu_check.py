"""scripts/gpu_check.sh before any GPU sees it.

* The dry run: the script runs against a fake machine (fake `python3`, `hal`, `nvidia-smi`
  on PATH, `hal` absent until the install step installs it), and the test checks the
  install command, that at most 8 plain files come back under $OUT (the device tool's
  limit), that HAL_CACHE_DIR lies under $OUT and comes back, the summary table, and that no
  step would need the network (the fake pip refuses an install that could reach an index;
  proxies point nowhere).
* The fresh-image simulation: a venv that has cuda-core (and the rest of the image) but not
  hal runs the script's install step with the real pip, offline, then `hal backends`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
OFFLINE = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}

FAKE_PYTHON = r"""#!/usr/bin/env bash
echo "python3 $*" >>"$FAKE_LOG"
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
    args=" $* "
    if [ "${PIP_NO_INDEX:-}" != 1 ] || [[ "$args" != *" --no-build-isolation "* ]] \
        || [[ "$args" != *" --no-deps "* ]]; then
        echo "fake pip: this install would need the network (an index for build or runtime dependencies): $*" >&2
        exit 1
    fi
    cp "$FAKE_BIN/hal.installable" "$FAKE_BIN/hal" && chmod +x "$FAKE_BIN/hal"
    echo "Successfully installed hal-0.1.0"
    exit 0
fi
if [ "$1" = "-c" ]; then echo "$FAKE_BIN"; exit 0; fi
out=""; prev=""
for a in "$@"; do [ "$prev" = "--out" ] && out="$a"; prev="$a"; done
case "$1" in
    benchmarks/bench_membound.py)
        mkdir -p "$out"; echo "| softmax | PASS |" >"$out/membound.md"; echo '{}' >"$out/membound.json" ;;
    benchmarks/bench_gpu_kernels.py)
        mkdir -p "$out"; echo "| gemm 8192^3 | 0.90x |" >"$out/gpu_kernels.md" ;;
    *probe.py) echo "cuda-core 0.0-fake" ;;
    *) echo "fake python3: unexpected $*" >&2; exit 1 ;;
esac
"""

FAKE_HAL = r"""#!/usr/bin/env bash
echo "hal $* HAL_CACHE_DIR=$HAL_CACHE_DIR HAL_SYNC_EACH=${HAL_SYNC_EACH:-}" >>"$FAKE_LOG"
mkdir -p "$HAL_CACHE_DIR/sources" && echo "// kernel" >"$HAL_CACHE_DIR/sources/k-abc.cu"
prev=""
for a in "$@"; do
    [ "$prev" = "--report" ] && { echo '{"cases": 3}' >"$a"; echo '{}' >"$a.jsonl"; }
    [ "$prev" = "--junit" ] && echo '<testsuite/>' >"$a"
    prev="$a"
done
[ "$1" = conformance ] && sleep "${FAKE_CONFORMANCE_S:-0}"
echo "hal $1: 3 passed"
"""


def _fake_machine(tmp_path: Path) -> tuple[dict[str, str], Path, Path]:
    bin_dir, out, log = tmp_path / "bin", tmp_path / "out", tmp_path / "calls.log"
    bin_dir.mkdir()
    for name, text in (("python3", FAKE_PYTHON), ("hal.installable", FAKE_HAL),
                       ("nvidia-smi", "#!/bin/sh\necho 'name, memory.total'\necho 'NVIDIA H200, 143771 MiB'\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    tools = [shutil.which(t) for t in ("bash", "sh", "timeout", "tar", "gzip", "date", "mkdir",
                                       "tail", "grep", "cut", "sed", "cat", "cp", "rm", "ls",
                                       "stat", "tr", "head", "env", "chmod", "sleep")]
    sysbin = tmp_path / "sysbin"
    sysbin.mkdir()
    for t in tools:
        assert t, "a basic tool is missing"
        (sysbin / Path(t).name).symlink_to(t)
    env = {"PATH": f"{bin_dir}:{sysbin}", "HOME": str(tmp_path), "OUT": str(out),
           "FAKE_BIN": str(bin_dir), "FAKE_LOG": str(log), "GPU_CHECK_BUDGET": "300",
           **OFFLINE}
    return env, out, log


def _run(env: dict[str, str], script: Path = SCRIPT) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script)], capture_output=True, text=True,
                          errors="replace", env=env, cwd=ROOT, timeout=120)


def test_dry_run_against_a_fake_machine(tmp_path):
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    env, out, log = _fake_machine(tmp_path)
    p = _run(env)
    assert p.returncode == 0, p.stdout + p.stderr
    calls = log.read_text().splitlines()
    pips = [c for c in calls if c.startswith("python3 -m pip")]
    assert pips == ["python3 -m pip install --no-deps --no-build-isolation -e ."]
    # what comes back: at most 8 plain files, 16 MiB each, names the device tool accepts
    files = sorted(out.iterdir())
    assert 1 <= len(files) <= 8 and all(f.is_file() for f in files), files
    assert all(f.stat().st_size <= 16 << 20 for f in files)
    assert all(set(f.name) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                  "0123456789._-") for f in files)
    names = {f.name for f in files}
    assert {"summary.md", "results.tar.gz", "hal-cache.tar.gz"} <= names
    summary = (out / "summary.md").read_text().splitlines()
    assert summary[0].startswith("# gpu_check.sh on h200")
    assert summary[2] == "| step | status | seconds | limit | last line of its log |"
    rows = {r.split("|")[1].strip(): r.split("|")[2].strip() for r in summary[4:10]}
    assert rows == {s: "ok" for s in ("install", "probe", "smoke", "conformance", "membound",
                                      "kernels")}, summary[:12]
    # HAL_CACHE_DIR under $OUT, and brought back
    assert all(f"HAL_CACHE_DIR={out}/run/hal-cache" in c for c in calls if c.startswith("hal "))
    with tarfile.open(out / "hal-cache.tar.gz") as t:
        assert "hal-cache/sources/k-abc.cu" in t.getnames()
    with tarfile.open(out / "results.tar.gz") as t:
        got = t.getnames()
    assert "./conformance/conformance-cuda-h200.json" in got and "./logs/smoke.log" in got
    assert any("hal run examples/tiny_gpt.hal --backend cuda --device h200" in c
               and "HAL_SYNC_EACH=1" in c for c in calls)
    assert any(c.startswith("hal conformance --backend cuda --device h200 --workers")
               for c in calls)
    assert any("bench_membound.py" in c and "torch,torch-compile" in c for c in calls)
    assert any("bench_gpu_kernels.py --device h200" in c for c in calls)
    # a second run on the same machine: hal is there, nothing is installed again
    log.write_text("")
    p = _run(env)
    assert p.returncode == 0 and not [c for c in log.read_text().splitlines() if " pip " in c]


def test_dry_run_fails_when_the_install_would_need_the_network(tmp_path):
    env, out, _ = _fake_machine(tmp_path)
    online = tmp_path / "gpu_check_online.sh"  # the old install: build isolation fetches setuptools
    online.write_text(SCRIPT.read_text().replace("--no-build-isolation ", ""))
    p = _run(env, online)
    assert p.returncode != 0
    summary = (out / "summary.md").read_text()
    assert "| install | FAILED" in summary
    assert "would need the network" in p.stdout + p.stderr + summary or "FAILED" in summary


def test_a_step_over_the_budget_is_skipped_and_reported(tmp_path):
    env, out, _ = _fake_machine(tmp_path)
    env["GPU_CHECK_BUDGET"] = "40"     # 15 s kept for packing: 25 s for the steps
    env["FAKE_CONFORMANCE_S"] = "12"   # conformance leaves under 15 s for the rest
    p = _run(env)
    assert p.returncode == 1
    summary = (out / "summary.md").read_text()
    assert "| conformance | ok |" in summary
    assert "| membound | SKIPPED (budget)" in summary
    assert "| kernels | SKIPPED (budget)" in summary and len(list(out.iterdir())) <= 8


def _image_site(tmp_path: Path) -> Path:
    """This environment's site-packages as the lent machine's image: every package (cuda-core,
    torch, numpy, setuptools, pip...) except hal itself."""
    import sysconfig

    src = Path(sysconfig.get_paths()["purelib"])
    site = tmp_path / "image-site"
    site.mkdir()
    for entry in src.iterdir():
        low = entry.name.lower()
        if low.startswith(("hal-", "__editable__", "hal.")) or "editable___hal" in low:
            continue
        (site / entry.name).symlink_to(entry)
    return site


@pytest.mark.skipif(shutil.which("git") is None, reason="git is needed to copy the checkout")
def test_fresh_image_installs_hal_offline_and_runs_the_first_hal_command(tmp_path):
    pytest.importorskip("cuda.core")
    venv = tmp_path / "image"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()"
                              "['purelib'])"], capture_output=True, text=True, check=True)
    Path(purelib.stdout.strip(), "image.pth").write_text(str(_image_site(tmp_path)) + "\n")
    (venv / "bin" / "python3").unlink(missing_ok=True)
    (venv / "bin" / "python3").symlink_to(py.resolve())
    check = subprocess.run([str(py), "-c", "import cuda.core, setuptools, pip\n"
                            "import importlib.util as u; print(u.find_spec('hal'))"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert check.returncode == 0 and check.stdout.strip() == "None", check.stderr
    # the checkout as it travels to the device machine (tracked files)
    repo = tmp_path / "repo"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.split(b"\0")
    for f in filter(None, files):
        dst = repo / f.decode()
        if (ROOT / f.decode()).is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f.decode(), dst)
    shutil.copy2(SCRIPT, repo / "scripts" / "gpu_check.sh")  # this checkout's, even uncommitted
    out = tmp_path / "out"
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "OUT": str(out),
           "GPU_CHECK_STEPS": "install,probe", "GPU_CHECK_BUDGET": "400", **OFFLINE}
    p = subprocess.run(["bash", str(repo / "scripts" / "gpu_check.sh")], capture_output=True,
                       text=True, errors="replace", env=env, cwd=repo, timeout=400)
    summary = (out / "summary.md").read_text()
    assert p.returncode == 0, p.stdout + p.stderr
    assert "| install | ok |" in summary and "| probe | ok |" in summary
    assert (venv / "bin" / "hal").exists()
    with tarfile.open(out / "results.tar.gz") as t:
        install = t.extractfile("./logs/install.log").read().decode()
        probe = t.extractfile("./logs/probe.log").read().decode()
    assert "pip install --no-deps --no-build-isolation -e ." in install
    assert "Successfully installed hal" in install
    assert "cuda-core" in probe and "reference" in probe  # `hal backends` listed them
    os.environ.get("HAL_CACHE_DIR")  # the test's own cache setting is untouched


def _bench_kernels():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_gpu_kernels", ROOT / "benchmarks" / "bench_gpu_kernels.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_bench_gpu_kernels_skips_with_the_reason_without_a_gpu(tmp_path, capsys):
    from hal.backends.cuda.backend import CudaBackend

    if CudaBackend().probe():
        pytest.skip("a CUDA GPU is present")
    mod = _bench_kernels()
    assert mod.main(["--out", str(tmp_path)]) == 0
    said = capsys.readouterr().out
    assert said.startswith("SKIP: no GPU for backend cuda: ")
    assert said.strip() in (tmp_path / "gpu_kernels.md").read_text()


def test_bench_gpu_kernels_end_to_end_on_the_fake_driver(tmp_path, monkeypatch):
    """The script's own path (cases, run_case, error column, tables) on FakeCuda, shrunk."""
    pytest.importorskip("torch")
    import json

    from fake_cuda import FakeCuda, FakeCudaDriver
    from test_gpu_fixes import FakeBackend

    import hal.backends_registry
    from hal.devices.loader import load_spec

    mod = _bench_kernels()
    monkeypatch.setattr(mod, "CASES", (
        ("gemm4096", "64^3", lambda: mod.gemm_case(64), ("torch",)),
        ("decode", "q 1x32x1x128, k/v 1x8x256x128",
         lambda: mod.attention_case("decode", 1, 1, 256), ("torch",))))
    be = FakeBackend(FakeCudaDriver(FakeCuda(load_spec("h200"))))
    monkeypatch.setattr(hal.backends_registry, "get_backend", lambda name, **kw: be)
    args = mod.parse_args(["--out", str(tmp_path), "--torch-device", "cpu", "--repeat", "2",
                           "--warmup", "1", "--cases", "gemm4096,decode"])
    rows = mod.run(args)
    assert [r.name for r in rows] == ["gemm4096", "decode"]
    assert all(r.hal_s and r.hal_s > 0 and r.kernels >= 1 for r in rows), rows
    assert all(r.rel_err is not None and r.rel_err < 2e-2 for r in rows), rows
    table = (tmp_path / "gpu_kernels.md").read_text()
    assert "| gemm 64^3 bf16 |" in table and "torch sees no GPU" in table
    assert json.loads((tmp_path / "gpu_kernels.json").read_text())["rows"][1]["case"] == "decode"
