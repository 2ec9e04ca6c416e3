"""What a redistributor needs: licences in the wheel and the sdist, metadata, an sdist of tracked files only."""
from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _git_files():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return sorted(p for p in out.decode().split("\0") if p and (REPO / p).is_file())


def test_metadata_licence_authors_urls():
    md = importlib.metadata.metadata("xcca")
    assert md.get("License-Expression") == "BSD-3-Clause" or "BSD-3-Clause" in (md.get("License") or "")
    assert md.get("Author") or md.get("Author-email")
    urls = dict(u.split(", ", 1) for u in md.get_all("Project-URL") or [])
    assert {"Homepage", "Source", "Issues", "Changelog"} <= set(urls)
    assert all(u.startswith("https://") for u in urls.values())
    assert any(r.startswith("matplotlib") for r in md.get_all("Requires-Dist") or []
               if "extra ==" not in r), "matplotlib must be a base dependency (xcca demo draws figures)"


def test_wheel_ships_both_licences():
    files = {str(f).replace(os.sep, "/") for f in importlib.metadata.distribution("xcca").files or []}
    lic = {f for f in files if ".dist-info/licenses/" in f}
    assert any(f.endswith("licenses/LICENSE") for f in lic), sorted(files)[:20]
    assert any(f.endswith("licenses/LICENSES/pocketfft.txt") for f in lic)


def test_pocketfft_notice_is_the_headers():
    pythran = pytest.importorskip("pythran")
    header = Path(pythran.__file__).parent / "pythonic" / "numpy" / "fft" / "pocketfft.hpp"
    if not header.exists():
        pytest.skip("pythran without its pocketfft header")
    text = header.read_text()
    notice = text[text.index("/*") + 2: text.index("*/")].strip()
    ours = (REPO / "LICENSES" / "pocketfft.txt").read_text()
    assert notice in ours
    assert "Redistributions in binary form must reproduce" in ours
    bsd = (REPO / "LICENSE").read_text()
    assert bsd.startswith("BSD 3-Clause License")


def test_citation_and_changelog():
    cff = (REPO / "CITATION.cff").read_text()
    assert "cff-version: 1.2.0" in cff and "title:" in cff and "authors:" in cff
    assert f"version: {importlib.metadata.version('xcca')}" in cff
    assert (REPO / "CHANGELOG.md").read_text().startswith("# Changelog")


def test_sdist_is_exactly_the_tracked_files(tmp_path):
    """Build the sdist from a copy of the tracked files plus untracked scratch: only the tracked files come out."""
    pytest.importorskip("scikit_build_core")
    tracked = _git_files()
    src = tmp_path / "src"
    for rel in tracked:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, src / rel)
    # What a developer leaves lying around: never part of a release.
    for junk in ("scratch/notes.txt", "scratch/try.py", "xcca-demo/run.h5", "run.h5", "result.png",
                 "build/cp311/CMakeCache.txt", "python/xcca/_core.cpython-311-x86_64-linux-gnu.so",
                 "tests/data/frame.cbf", "bench/results/x.json", "cpp/tests/big.bin"):
        (src / junk).parent.mkdir(parents=True, exist_ok=True)
        (src / junk).write_text("junk")
    dist = tmp_path / "dist"
    code = ("import sys; from scikit_build_core.build import build_sdist; "
            "print(build_sdist(sys.argv[1]))")
    r = subprocess.run([sys.executable, "-c", code, str(dist)], cwd=src, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    name = r.stdout.strip().splitlines()[-1]
    with tarfile.open(dist / name) as tar:
        members = sorted(m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile())
    members = [m for m in members if m != "PKG-INFO"]
    expected = sorted(f for f in tracked if not f.startswith(".") and "/." not in f)  # .ci/, .gitignore: CI only
    assert members == expected, (sorted(set(members) - set(expected)), sorted(set(expected) - set(members)))
    assert "LICENSE" in members and "LICENSES/pocketfft.txt" in members
