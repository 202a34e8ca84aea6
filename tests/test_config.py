"""Specification of l2d_utils.config: profiles and the folders taken from environment variables."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from l2d_utils.config import (
    PACKAGED_MINILM,
    PACKAGED_QWEN,
    PROFILES,
    Profile,
    artifacts_root,
    data_dir,
    get_profile,
    model_cache_dir,
    results_root,
)

# get_profile


@pytest.mark.parametrize("name", ["smoke", "laptop", "paper"])
def test_profile_by_name(name: str) -> None:
    profile = get_profile(name)

    assert isinstance(profile, Profile)
    assert profile.name == name


def test_profile_names() -> None:
    assert sorted(PROFILES) == ["laptop", "paper", "smoke"]


def test_smoke_profile_is_small() -> None:
    smoke = get_profile("smoke")

    assert smoke.ade_rows == 900
    assert smoke.llm_subset_size == 48
    assert smoke.encoder.max_epochs == 2
    assert smoke.encoder.model == PACKAGED_MINILM
    assert smoke.llm.model == PACKAGED_QWEN


def test_laptop_profile_uses_packaged_models() -> None:
    laptop = get_profile("laptop")

    assert laptop.ade_rows is None
    assert laptop.llm_subset_size == 500
    assert laptop.encoder.model == PACKAGED_MINILM
    assert laptop.llm.backend == "local"


def test_paper_profile_settings() -> None:
    paper = get_profile("paper")

    assert paper.ade_rows is None
    assert paper.llm_subset_size == 500
    assert paper.cv_folds == 5
    assert paper.encoder.model == "dmis-lab/biobert-base-cased-v1.2"
    assert paper.encoder.learning_rate == 5e-5
    assert paper.encoder.batch_size == 16
    assert paper.llm.backend == "azure"
    assert paper.llm.model == "gpt-5-nano"


def test_profile_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_profile("smoke").llm_subset_size = 1  # type: ignore[misc]


def test_profile_override() -> None:
    profile = get_profile("smoke", llm_subset_size=100, cv_folds=3)

    assert profile.llm_subset_size == 100
    assert profile.cv_folds == 3
    assert profile.ade_rows == 900


def test_profile_override_leaves_registry() -> None:
    get_profile("smoke", llm_subset_size=100)

    assert get_profile("smoke").llm_subset_size == 48


def test_profile_without_override_is_registered() -> None:
    assert get_profile("laptop") is PROFILES["laptop"]


@pytest.mark.parametrize("name", ["Smoke", "full", "", "paper "])
def test_unknown_profile(name: str) -> None:
    with pytest.raises(ValueError) as raised:
        get_profile(name)

    message = str(raised.value)
    assert repr(name) in message
    assert "['laptop', 'paper', 'smoke']" in message


@pytest.mark.parametrize("field", ["llm_subset", "epochs", "NAME"])
def test_unknown_override_field(field: str) -> None:
    with pytest.raises(ValueError) as raised:
        get_profile("smoke", **{field: 1})

    message = str(raised.value)
    assert repr(field) in message
    for valid in ("ade_rows", "llm_subset_size", "encoder", "llm", "cv_folds", "random_deferral_seeds"):
        assert valid in message


# Folders


def test_data_dir_from_argument(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("L2D_DATA_DIR", raising=False)

    assert data_dir(tmp_path) == tmp_path.resolve()


def test_data_dir_accepts_string(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("L2D_DATA_DIR", raising=False)

    assert data_dir(str(tmp_path)) == tmp_path.resolve()


def test_data_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("L2D_DATA_DIR", str(tmp_path))

    assert data_dir() == tmp_path.resolve()


def test_data_dir_argument_beats_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from_argument = tmp_path / "argument"
    from_argument.mkdir()
    monkeypatch.setenv("L2D_DATA_DIR", str(tmp_path))

    assert data_dir(from_argument) == from_argument.resolve()


def test_data_dir_expands_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path))

    assert data_dir("~/data") == (tmp_path / "data").resolve()


@pytest.mark.parametrize("value", [None, ""])
def test_data_dir_unset(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("L2D_DATA_DIR", raising=False)
    else:
        monkeypatch.setenv("L2D_DATA_DIR", value)

    with pytest.raises(FileNotFoundError) as raised:
        data_dir()

    message = str(raised.value)
    assert "L2D_DATA_DIR" in message
    assert "data_dir=" in message


def test_data_dir_missing_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "no-such-folder"
    monkeypatch.setenv("L2D_DATA_DIR", str(missing))

    with pytest.raises(FileNotFoundError) as raised:
        data_dir()

    message = str(raised.value)
    assert str(missing) in message
    assert "L2D_DATA_DIR" in message


def test_data_dir_rejects_file(tmp_path: Path) -> None:
    a_file = tmp_path / "corpus.txt"
    a_file.write_text("not a folder\n", encoding="utf-8")

    with pytest.raises(FileNotFoundError, match="does not exist"):
        data_dir(a_file)


def test_output_folders_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("L2D_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.setenv("L2D_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("L2D_MODEL_CACHE", str(tmp_path / "cache"))

    assert artifacts_root() == tmp_path / "artifacts"
    assert results_root() == tmp_path / "results"
    assert model_cache_dir() == tmp_path / "cache"


def test_output_folder_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("L2D_ARTIFACTS_DIR", "L2D_RESULTS_DIR", "L2D_MODEL_CACHE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    assert artifacts_root() == tmp_path.resolve() / "artifacts"
    assert results_root() == tmp_path.resolve() / "results"
    assert model_cache_dir() == (tmp_path / "home").resolve() / ".cache" / "l2d-clinical"


def test_profile_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("L2D_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.setenv("L2D_RESULTS_DIR", str(tmp_path / "results"))

    profile = get_profile("smoke")

    assert profile.artifacts_dir == tmp_path / "artifacts" / "smoke"
    assert profile.results_dir == tmp_path / "results" / "smoke"
