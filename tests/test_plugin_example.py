"""The example plugin (examples/plugin) installs as its own distribution and hal finds it.

A throwaway virtual environment that sees this interpreter's packages (hal,
numpy, setuptools, pip) gets `pip install --no-deps --no-build-isolation
--no-index` of a copy of the plugin (a copy, so the build leaves nothing in the
source tree); then, in that environment, `hal backends` lists `scratchnpu` as
available and a small conformance selection passes on it. Offline and a few
seconds; skipped with the reason when a venv or pip is not usable here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parent.parent / "examples" / "plugin"


def _run(python: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(COLUMNS="200", PYTHONDONTWRITEBYTECODE="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return subprocess.run([str(python), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _hal(python: Path, *args: str) -> subprocess.CompletedProcess:
    # the venv has no `hal` script of its own (hal lives in the parent environment)
    return _run(python, "-c", "import sys; from hal.cli.main import main; sys.exit(main())",
                *args)


@pytest.fixture(scope="module")
def plugin_python(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plugin_venv")
    venv = root / "venv"
    # --without-pip: the venv uses the parent's pip and setuptools (a bundled, older
    # setuptools would shadow them and lack bdist_wheel offline)
    try:
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip",
                        str(venv)], check=True, capture_output=True, timeout=60)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        pytest.skip(f"cannot create a virtual environment here: {e}")
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    probe = _run(python, "-c", "import hal, importlib.util as u; "
                 "assert u.find_spec('pip') and u.find_spec('setuptools'), 'no pip/setuptools'")
    if probe.returncode != 0:
        pytest.skip("the venv does not see hal, pip and setuptools from the parent "
                    f"environment: {probe.stderr.strip()[-300:]}")
    src = root / "plugin"
    shutil.copytree(PLUGIN, src, ignore=shutil.ignore_patterns("*.egg-info", "build", ".ruff_cache",
                                                               "__pycache__"))
    r = _run(python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
             "-q", str(src), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return python


def test_plugin_installs_outside_the_hal_package(plugin_python):
    r = _run(plugin_python, "-c", "import hal_scratchnpu, hal, pathlib; "
             "print(pathlib.Path(hal_scratchnpu.__file__).parent.parent); "
             "print(pathlib.Path(hal.__file__).parent)")
    assert r.returncode == 0, r.stderr
    plugin_site, hal_dir = (Path(p) for p in r.stdout.split())
    assert plugin_site.is_relative_to(plugin_python.parent.parent)   # in the venv
    assert not plugin_site.is_relative_to(hal_dir)


def test_hal_backends_lists_the_plugin_as_available(plugin_python):
    r = _hal(plugin_python, "backends")
    assert r.returncode == 0, r.stderr
    row = next((line for line in r.stdout.splitlines() if "scratchnpu" in line), None)
    assert row is not None, r.stdout
    cells = [c.strip() for c in row.split("│") if c.strip()]
    assert cells[:2] == ["scratchnpu", "yes"], row
    assert "f64" not in cells[-1] and "fp8" not in cells[-1], row   # its own capabilities
    assert "kernels" in cells[-1]


def test_conformance_passes_on_the_plugin(plugin_python):
    r = _hal(plugin_python, "conformance", "--backend", "scratchnpu", "--device",
             "scratch-npu", "-k", "elementwise/add/*", "--workers", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "conformance scratchnpu / scratch-npu" in r.stdout
    total = next(line for line in r.stdout.splitlines() if "total" in line)
    passed, failed, error, xfail, xpass, skip = (int(x) for x in re.findall(r"\d+", total))
    assert passed > 0 and failed == error == xpass == 0, total
    assert skip > 0, total      # the f64 and fp8 cases: no such capability


def test_plugin_registers_its_expectations(plugin_python):
    r = _run(plugin_python, "-c",
             "from hal.backends_registry import get_backend; "
             "from hal.conformance.expectations import EXPECTED_FAILURES, UNSUPPORTED; "
             "b = get_backend('scratchnpu'); "
             "print(b.default_device, 'scratchnpu' in EXPECTED_FAILURES "
             "and 'scratchnpu' in UNSUPPORTED)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["scratch-npu", "True"]
