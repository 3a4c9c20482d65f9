"""A built wheel carries the scenario pipelines and table schemas, and the package finds
them inside itself when the source checkout is not beside it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_carries_pipelines_and_schemas(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("prefdata", "pipelines", "schemas"):
        shutil.copytree(ROOT / name, src / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "dist")], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("prefdata-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for n in (1, 2, 3, 4):
        assert f"prefdata/_pipelines/scenario{n}.toml" in names
    for table in ("prompts", "candidates", "judgments", "pairs"):
        assert f"prefdata/_schemas/{table}.json" in names

    installed = tmp_path / "installed"
    zipfile.ZipFile(wheel).extractall(installed)
    probe = (f"import sys; sys.path.insert(0, {str(installed)!r}); import prefdata; "
             "from prefdata.config import pipelines_dir, scenario_pipeline; from prefdata.schemas import schema_dir; "
             "print(prefdata.__file__); print(pipelines_dir()); print(schema_dir()); "
             "print(sorted(scenario_pipeline(2)))")
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True,
                         cwd=tmp_path).stdout.splitlines()
    package, pipelines, schemas, sections = out
    assert package.startswith(str(installed))
    assert Path(pipelines) == installed / "prefdata" / "_pipelines"
    assert Path(schemas) == installed / "prefdata" / "_schemas"
    assert sections == str(sorted(__import__("tomllib").loads((ROOT / "pipelines" / "scenario2.toml").read_text())))
