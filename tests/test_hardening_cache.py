"""The cache is an optimisation, never a requirement (issue 16).

Reproductions: an unusable HAL_CACHE_DIR (a file, uncreatable, read-only) made every
`fuse`/`compile` fail with `internal error: OSError`; an empty, truncated or garbage entry
under measured/ broke every plan of that graph; a garbage .cu under sources/ was reused.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from hal.cli.main import main
from hal.render.cache import CompileCache, save_source

EXAMPLE = str(Path(__file__).resolve().parents[1] / "examples" / "mlp.hal")


def _need_nvcc() -> None:
    from hal.backends.cuda.compiler import nvcc_available

    why = nvcc_available()
    if why:
        pytest.skip(why)


def _fuse(monkeypatch, cache: Path):
    from hal.fusion import measured

    monkeypatch.setattr(measured, "_MEMO", {})  # measure again, through the disk cache
    monkeypatch.setenv("HAL_CACHE_DIR", str(cache))
    monkeypatch.delenv("HAL_MEASURE", raising=False)
    return CliRunner().invoke(main, ["fuse", EXAMPLE, "--device", "h100-sxm"],
                              catch_exceptions=False)


def _bad_dirs(tmp_path: Path) -> dict[str, Path]:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    out = {"file": a_file, "uncreatable": a_file / "below"}
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        out["read-only"] = ro / "cache"
    return out


@pytest.mark.parametrize("kind", ["file", "uncreatable", "read-only"])
def test_unusable_cache_dir_warns_once_and_runs(kind, tmp_path, monkeypatch):
    _need_nvcc()
    dirs = _bad_dirs(tmp_path)
    if kind not in dirs:
        pytest.skip("running as root: a read-only directory is writable")
    r = _fuse(monkeypatch, dirs[kind])
    assert r.exit_code == 0, r.output
    assert "internal error" not in r.output
    assert r.output.count(f"warning: cache directory {dirs[kind]} is unusable") == 1
    assert "kernels:" in r.output


@pytest.mark.parametrize("content", [b"", b"HALCACHE1\n", b"\xff\xfe garbage \x00",
                                     b"[{\"kernel\": 3}]"])
def test_corrupt_measured_entry_is_named_once_and_replaced(content, tmp_path, monkeypatch):
    _need_nvcc()
    cache = tmp_path / "cache"
    assert _fuse(monkeypatch, cache).exit_code == 0
    (entry,) = [p for p in (cache / "measured").rglob("*") if p.is_file()]
    entry.write_bytes(content)
    r = _fuse(monkeypatch, cache)
    assert r.exit_code == 0, r.output
    assert r.output.count(f"cache entry {entry} is corrupt") == 1
    from hal.fusion.measured import records_from_json

    fresh = CompileCache(cache, namespace="measured").get(entry.name, records_from_json)
    assert fresh is not None and records_from_json(fresh)  # replaced by a valid measurement


def test_truncated_and_foreign_entries_are_misses(tmp_path, capsys):
    cache = CompileCache(tmp_path, namespace="t")
    cache.put("k1", b"payload-1")
    assert cache.get("k1") == b"payload-1"
    path = cache.path("k1")
    raw = path.read_bytes()
    path.write_bytes(raw[:-3])                       # truncated
    assert cache.get("k1") is None and not path.exists()
    cache.put("k2", b"two")
    cache.path("k3").parent.mkdir(parents=True)
    cache.path("k2").replace(cache.path("k3"))       # another key's entry under this name
    assert cache.get("k3") is None
    err = capsys.readouterr().err
    assert "content hash mismatch" in err and "entry of another key" in err
    cache.put("k1", b"payload-1")
    assert cache.get("k1") == b"payload-1" and cache.hits == 2


def test_schema_check_rejects_wrong_payload(tmp_path, capsys):
    cache = CompileCache(tmp_path, namespace="t")
    cache.put("k", b"not json")

    def validate(raw: bytes) -> None:
        import json

        json.loads(raw)

    assert cache.get("k", validate=validate) is None
    assert "bad content: JSONDecodeError" in capsys.readouterr().err


def test_garbage_source_is_rewritten(tmp_path, capsys):
    src = 'extern "C" __global__ void k(float* a) { a[0] = 1.f; }\n'
    path = save_source(src, "k", ".cu", tmp_path)
    path.write_text("garbage")
    again = save_source(src, "k", ".cu", tmp_path)
    assert again == path and path.read_text() == src
    assert "does not match its hash" in capsys.readouterr().err


def test_garbage_cached_source_does_not_break_compile(tmp_path, monkeypatch):
    _need_nvcc()
    cache = tmp_path / "cache"
    monkeypatch.setenv("HAL_CACHE_DIR", str(cache))
    monkeypatch.setenv("HAL_MEASURE", "off")
    args = ["compile", EXAMPLE, "--backend", "cuda", "--device", "h100-sxm"]
    assert CliRunner().invoke(main, args, catch_exceptions=False).exit_code == 0
    for p in (cache / "sources").glob("*.cu"):
        p.write_text("this is not CUDA")
    r = CliRunner().invoke(main, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output


def test_unwritable_emit_dir_is_a_clear_error(tmp_path):
    a_file = tmp_path / "f"
    a_file.write_text("x")
    with pytest.raises(Exception) as e:
        save_source("int x;\n", "k", ".cu", a_file / "sub")
    from hal.errors import HalError

    assert isinstance(e.value, HalError) and "cannot write" in e.value.message
