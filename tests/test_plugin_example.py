"""The example plugin (examples/plugin) installs as its own distribution and hal finds it.

This interpreter's own pip (`--no-deps --no-build-isolation --no-index`, so this
environment's setuptools builds the wheel, offline) installs a copy of the plugin
(a copy, so the build leaves nothing in the source tree) into a separate target
directory outside the hal package; a child interpreter that has that directory on
PYTHONPATH then finds the backend through its `hal.backends` entry point: `hal
backends` lists `scratchnpu` as available and a small conformance selection
passes on it. Nothing here depends on what the base interpreter has installed
(a nested venv would see the *base* interpreter's site-packages, not this
environment's). Offline and a few seconds.
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


def _run(site: Path | None, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    """This interpreter, with `site` (the plugin's install directory) on its path.

    The working directory is a neutral one, so the source tree's `hal/` folder is
    never imported in place of the installed package."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(COLUMNS="200", PYTHONDONTWRITEBYTECODE="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    if site is not None:
        env["PYTHONPATH"] = str(site)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=PLUGIN.parent)


def _hal(site: Path, *args: str) -> subprocess.CompletedProcess:
    return _run(site, "-c", "import sys; from hal.cli.main import main; sys.exit(main())", *args)


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plugin_site")
    src = root / "plugin"
    shutil.copytree(PLUGIN, src, ignore=shutil.ignore_patterns("*.egg-info", "build", ".ruff_cache",
                                                               "__pycache__"))
    site = root / "site"
    r = _run(None, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
             "--target", str(site), "-q", str(src), timeout=120)
    assert r.returncode == 0, (
        "installing the example plugin with this environment's pip failed; the test extra "
        "must provide setuptools (>= 70.1, which builds wheels itself) and wheel:\n"
        + r.stdout + r.stderr)
    return site


def test_plugin_installs_outside_the_hal_package(plugin_site):
    r = _run(plugin_site, "-c", "import hal_scratchnpu, hal, pathlib; "
             "print(pathlib.Path(hal_scratchnpu.__file__).parent.parent); "
             "print(pathlib.Path(hal.__file__).parent)")
    assert r.returncode == 0, r.stderr
    installed_at, hal_dir = (Path(p) for p in r.stdout.split())
    assert installed_at == plugin_site         # its own install directory
    assert not installed_at.is_relative_to(hal_dir)


def test_hal_backends_lists_the_plugin_as_available(plugin_site):
    r = _hal(plugin_site, "backends")
    assert r.returncode == 0, r.stderr
    row = next((line for line in r.stdout.splitlines() if "scratchnpu" in line), None)
    assert row is not None, r.stdout
    cells = [c.strip() for c in row.split("│") if c.strip()]
    assert cells[:2] == ["scratchnpu", "yes"], row
    assert "f64" not in cells[-1] and "fp8" not in cells[-1], row   # its own capabilities
    assert "kernels" in cells[-1]


def test_conformance_passes_on_the_plugin(plugin_site):
    r = _hal(plugin_site, "conformance", "--backend", "scratchnpu", "--device",
             "scratch-npu", "-k", "elementwise/add/*", "--workers", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "conformance scratchnpu / scratch-npu" in r.stdout
    total = next(line for line in r.stdout.splitlines() if "total" in line)
    passed, failed, error, xfail, xpass, skip = (int(x) for x in re.findall(r"\d+", total))
    assert passed > 0 and failed == error == xpass == 0, total
    assert skip > 0, total      # the f64 and fp8 cases: no such capability


def test_plugin_registers_its_expectations(plugin_site):
    r = _run(plugin_site, "-c",
             "from hal.backends_registry import get_backend; "
             "from hal.conformance.expectations import EXPECTED_FAILURES, UNSUPPORTED; "
             "b = get_backend('scratchnpu'); "
             "print(b.default_device, 'scratchnpu' in EXPECTED_FAILURES "
             "and 'scratchnpu' in UNSUPPORTED)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["scratch-npu", "True"]
