"""The package layout the architecture promises (issue 14): the CLI uses only public API, the run pipeline is split
into sources -> stages -> drivers -> result, and every C++ binding file is named after the kernel it binds."""
from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

import xcca

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "python" / "xcca"


def _relative_imports(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            for alias in node.names:
                yield node.module, alias.name, node.lineno


@pytest.mark.parametrize("name", ["cli.py", "cli_analysis.py"])
def test_cli_uses_only_public_api(name):
    path = PKG / name
    if not path.exists():
        pytest.skip(f"{name} not in this tree")
    for module, attr, line in _relative_imports(path):
        where = f"{name}:{line}: from .{module or ''} import {attr}"
        assert not attr.startswith("_") or attr == "__version__", where
        if module is None:  # from . import X: a public submodule or a name of xcca's namespace
            assert attr in xcca.__all__ or importlib.util.find_spec(f"xcca.{attr}") is not None, where
            continue
        assert not any(part.startswith("_") for part in module.split(".")), where
        mod = importlib.import_module(f"xcca.{module}")
        public = getattr(mod, "__all__", None)
        assert public is not None and attr in public, f"{where} (not in xcca.{module}.__all__)"


def test_pipeline_modules_show_the_data_flow():
    from xcca import kernels, pipeline, reference, result, sources, stages

    assert sources.open_source is pipeline.open_source and sources.load_mask is pipeline.load_mask
    assert stages.Accumulator is pipeline.Accumulator and stages.polar_stage is pipeline.polar_stage
    assert result.AnalysisResult is pipeline.AnalysisResult is xcca.AnalysisResult
    assert pipeline.analyze is xcca.analyze
    # the NumPy/SciPy baseline lives with the executable specification, not in the product's driver
    assert type(kernels.make_kernels("numpy", (10, 10), [3, 4], 8, (20, 20))) is reference.PipelineKernels
    assert not hasattr(pipeline, "_NumpyKernels")
    for mod in (sources, stages, kernels, result, pipeline):
        for name in mod.__all__:
            assert getattr(mod, name).__doc__, f"{mod.__name__}.{name} has no docstring"


def test_binding_files_are_named_after_their_kernel():
    bindings = ROOT / "cpp" / "bindings"
    headers = {p.stem for p in (ROOT / "cpp" / "include" / "xcca").glob("*.hpp")}
    for cpp in bindings.glob("*.cpp"):
        if cpp.stem in ("module", "core"):  # the module itself; library-wide facts (version, usable cores)
            continue
        assert cpp.stem in headers, f"{cpp.name} is not named after a kernel of cpp/include/xcca"
        included = {line.split('"xcca/')[1].split(".hpp")[0] for line in cpp.read_text().splitlines()
                    if line.startswith('#include "xcca/')}
        assert included == {cpp.stem}, f"{cpp.name} binds {sorted(included)}"
