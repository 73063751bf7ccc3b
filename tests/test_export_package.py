"""Packaging: the wheel installs the export step as ``edge_colbert_export`` (no top-level
``export`` or ``models``), and a plain (non-editable) install finds the bundled model, the
recipes and the calibration passages through importlib.resources.

The wheel is built offline from this checkout (``pip wheel --no-deps --no-build-isolation``)
and installed with ``--no-deps`` into a fresh venv that borrows this venv's runtime
dependencies through a ``.pth`` file, so nothing is downloaded.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES_OUT_OF_THE_WHEEL = ("export", "models")


def _setuptools_version() -> tuple[int, ...]:
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return (0,)
    return tuple(int(part) for part in re.findall(r"\d+", version)[:2])


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        _setuptools_version() < (77,),
        reason="building the wheel offline needs setuptools>=77 in this venv: "
        "pip install 'setuptools>=77' wheel",
    ),
]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(out), str(ROOT)],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    (found,) = out.glob("edge_colbert-*.whl")
    return found


@pytest.fixture(scope="module")
def venv_python(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed (not editable) and this venv's runtime
    dependencies on its path, after its own site-packages."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
         "--no-index", str(wheel)],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    import numpy
    import onnxruntime
    import tokenizers

    borrowed = {
        str(Path(m.__file__ or "").resolve().parents[1]) for m in (numpy, onnxruntime, tokenizers)
    }
    (Path(site) / "zz_runtime_dependencies.pth").write_text("\n".join(sorted(borrowed)) + "\n")
    return python


def _run(python: Path, code: str, cwd: Path) -> dict[str, object]:
    """Run ``code`` in the venv, away from the checkout, and parse the JSON it prints."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EDGE_COLBERT_MODEL")}
    result = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, cwd=cwd, env=env,
        timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


def test_the_wheel_installs_no_top_level_export_or_models_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        declared = archive.read(top_level).decode().split()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"edge_colbert", "edge_colbert_export"}
    assert sorted(declared) == ["edge_colbert", "edge_colbert_export"]
    assert not any(name.split("/")[0] in PACKAGES_OUT_OF_THE_WHEEL for name in names)
    # Every subpackage of the checkout is in the wheel ([tool.setuptools] lists them).
    for init in (ROOT / "edge_colbert").rglob("__init__.py"):
        assert init.relative_to(ROOT).as_posix() in names, f"{init.parent} is not in the wheel"
    # What the installed packages read as resources is in the wheel.
    assert "edge_colbert_export/calibration/passages.txt" in names
    assert "edge_colbert/models/all-minilm-l6-v2-colbert-64/model.onnx" in names
    assert "edge_colbert/models/colbertv2.0.json" in names


def test_an_installed_wheel_finds_the_bundled_model_recipes_and_passages(
    venv_python: Path, tmp_path: Path
) -> None:
    code = """
import importlib.util, json, sys
from edge_colbert import Encoder
from edge_colbert.encoder import default_model_dir
import edge_colbert
encoder = Encoder(providers=["CPUExecutionProvider"], threads=1)
vectors = encoder.encode_queries(["where do glaciers come from?"])
from edge_colbert_export.recipes import recipe_files
from edge_colbert_export.reduce import shipped_calibration_texts
from edge_colbert_export.requirements import export_requirements
print(json.dumps({
    "package": edge_colbert.__file__,
    "model": str(default_model_dir()),
    "shape": list(vectors[0].shape),
    "recipes": [f.name for f in recipe_files()],
    "passages": len(shipped_calibration_texts()[1]),
    "export_extra": list(export_requirements()),
    "top_level": {n: importlib.util.find_spec(n) is not None for n in ("export", "models")},
    "torch_loaded": "torch" in sys.modules,
}))
"""
    got = _run(venv_python, code, tmp_path)
    venv = venv_python.parents[1]
    assert Path(str(got["package"])).is_relative_to(venv), got["package"]
    model = Path(str(got["model"]))
    assert model.is_relative_to(venv) and model.parts[-3:] == (
        "edge_colbert", "models", "all-minilm-l6-v2-colbert-64",
    )  # fmt: skip
    assert got["shape"][-1] == 64  # type: ignore[index]
    assert "colbertv2.0.json" in str(got["recipes"])
    assert isinstance(got["passages"], int) and got["passages"] >= 50
    assert got["top_level"] == {"export": False, "models": False}
    assert got["torch_loaded"] is False
    # The export extra's list, read from the installed metadata, is pyproject's.
    assert got["export_extra"] == _pyproject_export_extra()


def _pyproject_export_extra() -> list[str]:
    """The distribution names of the ``export`` extra as pyproject.toml writes them."""
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11+")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = project["optional-dependencies"]["export"]
    return [re.split(r"[<>=!~;\[ ]", str(r), maxsplit=1)[0] for r in requirements]
