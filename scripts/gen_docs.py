"""Regenerate the command outputs in README.md and docs/*.md from real runs; `--check`
fails (exit 1, with a diff) when a document differs from what the commands print.

A document marks what is generated:

    <!-- hal-doc-file: my-npu.yaml -->          the next ```yaml block is written to the
                                                 run directory under that name
    <!-- hal-doc: hal fuse X --device D | keep=REGEX | edit=OLD=>NEW -->
    ```console                                   this block is replaced by "$ <command>"
    ...                                          and its output (stdout and stderr), kept
    ```                                          to the lines matching REGEX (a "..." line
                                                 marks each gap) when keep= is given;
                                                 edit= runs the command on copies of the
                                                 hal-doc-files with OLD replaced by NEW

Commands run in a temporary directory holding the hal-doc-files and links to examples/
and benchmarks/, with HAL_MEASURE=off (plans that do not depend on which compilers a
machine has) and the example plugin (examples/plugin) installed into a private target
directory. Only stable figures belong in kept lines:
counts, verdicts and modelled numbers, never wall times.

    python scripts/gen_docs.py [--check] [FILE.md ...]
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FILE_MARK = re.compile(r"<!-- hal-doc-file: (?P<name>\S+) -->\n```yaml\n(?P<body>.*?)```\n",
                       re.S)
CMD_MARK = re.compile(r"<!-- hal-doc: (?P<spec>.+?) -->\n```console\n"
                      r"(?P<body>(?:(?!```).*\n)*?)```\n")  # a fence only at a line start


def _install_plugin(work: Path) -> Path:
    site = work / "_plugin_site"
    if not site.exists():
        src = work / "_plugin_src"
        shutil.copytree(ROOT / "examples" / "plugin", src)
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps",
                        "--no-build-isolation", "--no-index", "-q", "--target", str(site),
                        str(src)], check=True, capture_output=True, timeout=300)
    return site


def _parse(spec: str) -> tuple[str, str | None, list[tuple[str, str]]]:
    parts = [p.strip() for p in spec.split(" | ")]
    keep, edits = None, []
    for p in parts[1:]:
        key, _, value = p.partition("=")
        if key == "keep":
            keep = value
        elif key == "edit":
            old, _, new = value.partition("=>")
            edits.append((old, new))
        else:
            raise SystemExit(f"gen_docs: unknown option '{p}' in '{spec}'")
    return parts[0], keep, edits


def run_command(command: str, work: Path, files: dict[str, str],
                edits: list[tuple[str, str]]) -> str:
    run_dir = work / ("edit" if edits else "base")
    run_dir.mkdir(exist_ok=True)
    for name, text in files.items():
        for old, new in edits:
            text = text.replace(old, new)
        (run_dir / name).write_text(text)
    for d in ("examples", "benchmarks"):
        if not (run_dir / d).exists():
            (run_dir / d).symlink_to(ROOT / d)
    env = {**os.environ, "HAL_MEASURE": "off", "COLUMNS": "200"}
    argv = shlex.split(command)
    if argv[0] != "hal":
        raise SystemExit(f"gen_docs: only hal commands run here, not '{command}'")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_install_plugin(work)),
                                                      env.get("PYTHONPATH")]))
    p = subprocess.run([sys.executable, "-c", "import sys; from hal.cli import entry; "
                        "sys.argv[0] = 'hal'; sys.exit(entry())", *argv[1:]],
                       cwd=run_dir, env=env, capture_output=True, text=True, timeout=1800)
    out = (p.stdout + p.stderr).replace(str(run_dir) + os.sep, "")
    return "\n".join(ln.rstrip() for ln in out.splitlines())


def _keep(text: str, pattern: str | None) -> str:
    if pattern is None:
        return text
    rx = re.compile(pattern)
    out, gap = [], False
    for ln in text.splitlines():
        if rx.search(ln):
            out.append(ln)
            gap = False
        elif not gap:
            out.append("...")
            gap = True
    return "\n".join(out)


def regenerate(doc: Path, work: Path) -> str:
    text = doc.read_text()
    files = {m["name"]: m["body"] for m in FILE_MARK.finditer(text)}

    def block(m: re.Match) -> str:
        command, keep, edits = _parse(m["spec"])
        out = _keep(run_command(command, work, files, edits), keep)
        return f"<!-- hal-doc: {m['spec']} -->\n```console\n$ {command}\n{out}\n```\n"

    return CMD_MARK.sub(block, text)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    docs = [Path(a).resolve() for a in argv if not a.startswith("--")] or DOCS
    drift = 0
    with tempfile.TemporaryDirectory(prefix="hal-docs-") as d:
        for doc in docs:
            if "hal-doc:" not in doc.read_text():
                continue
            new = regenerate(doc, Path(d))
            old = doc.read_text()
            if new == old:
                continue
            if check:
                drift += 1
                sys.stdout.writelines(difflib.unified_diff(
                    old.splitlines(True), new.splitlines(True), str(doc), "generated"))
            else:
                doc.write_text(new)
                print(f"regenerated {doc.relative_to(ROOT)}")
    if drift:
        print(f"{drift} document(s) differ from what the commands print: "
              "run python scripts/gen_docs.py")
    return 1 if drift else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
