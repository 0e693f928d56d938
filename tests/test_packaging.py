"""A plain (non-editable) install must carry every module and data file of the tree."""

import subprocess
import sys
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# every folder that pyproject.toml maps to a recipekit subpackage, and the file kinds they ship
FOLDERS = {folder: package.replace(".", "/") for package, folder in
           tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].items()}
SUFFIXES = {".py", ".json", ".txt", ".toml", ".html", ".js", ".css", ".svg"}


@pytest.mark.slow
def test_wheel_contains_every_module_and_data_file(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("recipekit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = set()
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in SUFFIXES and "__pycache__" not in path.parts:
                expected.add(f"{package}/{path.relative_to(ROOT / folder).as_posix()}")
    assert {"recipekit/search/static/index.html", "recipekit/configs/ht.toml"} <= expected
    assert expected - names == set()
    assert not any(n.startswith("recipekit/__init__") for n in names)  # a namespace package
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "recipekit = recipekit.cli.main:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
