"""Every command and snippet of the README runs verbatim, in order, in a fresh directory.

The README's code is extracted: fenced ```python blocks are executed, and every command line of the indented
(4-space) blocks is run -- ``xcca ...`` through :func:`xcca.cli.main` with the shell's glob expansion, after the
comment is stripped. ``pip install ...``, ``python -m pytest`` and ``cmake ...`` lines are left to ``.ci/run`` (which
runs the quick start in a brand-new venv and the C++ build); ``&&`` chains run their remaining parts. Every file the
README writes into the directory must be ignored by git.
"""
from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from xcca.cli import main

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
_LEFT_TO_CI = ("pip ", "python -m pytest", "cmake ", "ctest ")


_SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s*\((.+?)\)\s*-->")


def _blocks(text: str):
    """(kind, code) in order: kind "python" for fenced python blocks, "shell" for indented command blocks.

    A block right after ``<!-- readme-test: skip (reason) -->`` (templates for a real cluster or facility paths)
    has kind "skip"; the reason is mandatory.
    """
    out, lines, i = [], text.splitlines(), 0
    skip = False
    while i < len(lines):
        line = lines[i]
        if _SKIP.search(line):
            skip = True
            i += 1
            continue
        m = re.match(r"^```(\w*)\s*$", line)
        if m:
            j = i + 1
            while not lines[j].startswith("```"):
                j += 1
            if m.group(1) == "python":
                out.append(("skip" if skip else "python", "\n".join(lines[i + 1: j])))
            skip = False
            i = j + 1
            continue
        if line.startswith("    ") and (i == 0 or not lines[i - 1].strip()):
            j = i
            while j < len(lines) and (lines[j].startswith("    ") or not lines[j].strip()):
                j += 1
            code = "\n".join(ln[4:] for ln in lines[i:j] if ln.strip()).replace("\\\n", " ")
            out.append(("skip" if skip else "shell", code))
            skip = False
            i = j
            continue
        i += 1
    return out


def _commands(block: str, with_codes: bool = False):
    """The commands of a block; with `with_codes`, (command, expected exit code) -- 0 unless its comment says
    "exits N" (the exit-code convention: 1 = done, but inputs were skipped)."""
    for line in block.splitlines():
        # Strip a trailing shell comment (two spaces or more, then #), keep '#' inside arguments.
        parts = re.split(r"\s{2,}#", line, maxsplit=1)
        cmd, comment = parts[0], parts[1] if len(parts) > 1 else ""
        m = re.search(r"\bexits (\d)\b", comment)
        for part in cmd.strip().split("&&"):
            part = part.strip()
            if part:
                yield (part, int(m.group(1)) if m else 0) if with_codes else part


def _expand(args):
    out = []
    for a in args:
        hits = sorted(glob.glob(a)) if any(c in a for c in "*?[") else []
        out.extend(hits or [a])
    return out


def test_readme_extraction_finds_the_examples():
    blocks = _blocks(README.read_text())
    cmds = [c for kind, b in blocks if kind == "shell" for c in _commands(b)]
    assert "xcca demo" in cmds and any(c.startswith("xcca polar") for c in cmds)
    assert any(c.startswith("xcca correlate") for c in cmds) and any(c.startswith("xcca thumbnail") for c in cmds)
    assert sum(kind == "python" for kind, _ in blocks) >= 1
    assert sum(kind == "skip" for kind, _ in blocks) <= 4, "most of the README must run as written"


def test_readme_runs_verbatim(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ran = []
    namespace = {"__name__": "__readme__"}  # one session: later snippets use the names earlier ones defined
    for kind, code in _blocks(README.read_text()):
        if kind == "skip":
            continue
        if kind == "python":
            exec(compile(code, "README.md", "exec"), namespace)
            ran.append("python block")
            continue
        for cmd, expected in _commands(code, with_codes=True):
            if cmd.startswith(_LEFT_TO_CI):
                continue
            if not cmd.startswith("xcca "):
                continue  # prose-like or non-command lines (e.g. the CMake snippet is fenced, not run here)
            args = _expand(shlex.split(cmd)[1:])
            code_ = main(args)
            out = capsys.readouterr()
            assert code_ == expected, f"README command exited {code_}, not {expected}: {cmd}\n{out.err[-2000:]}"
            ran.append(cmd)
    assert len(ran) >= 5, ran
    # What the commands promise is there.
    for f in ("xcca-demo/run.h5", "xcca-demo/run.poni", "xcca-demo/image.h5", "xcca-demo/pilatus6m.cbf", "xcca-demo/bragg_ring.png",
              "thumbs/pilatus6m.png", "polar.png", "result.h5", "result.png", "pilatus6m.png", "result_q.h5",
              "xcca-demo/result_q.h5"):
        assert (tmp_path / f).is_file(), f
    # Everything the README writes into a checkout is ignored by git.
    if shutil.which("git") and (REPO / ".git").exists():
        written = sorted(p.name + ("/" if p.is_dir() else "") for p in tmp_path.iterdir())
        for name in written:
            r = subprocess.run(["git", "check-ignore", "-q", "--no-index", name], cwd=REPO)
            assert r.returncode == 0, f"{name} (written by the README's commands) is not in .gitignore"
