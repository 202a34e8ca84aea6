"""The cached pipeline steps that chapters call."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict

import pandas as pd
import pytest

from l2d_utils.config import get_profile
from l2d_utils.consensus import labeler_prompts
from l2d_utils.llm.cache import CacheMissError
from l2d_utils.pipeline import (
    ADE_TASK,
    OUTCOME_TASK,
    _rows_fingerprint,
    ade_splits,
    deferral_inputs,
    draw_posts,
    encoder_folder,
    llm_predictions,
    outcome_splits,
    write_results,
)
from l2d_utils.splits import leak_report
from test_llm_api import isolated_environment, server  # noqa: F401 because pytest injects these fixtures by name

needs_data = pytest.mark.skipif(not os.environ.get("L2D_DATA_DIR"), reason="set L2D_DATA_DIR to the folder holding ade_corpus_v2/")


@pytest.fixture
def isolated_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("L2D_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.setenv("L2D_RESULTS_DIR", str(tmp_path / "results"))
    return tmp_path


def test_replay_only_raises_on_cold_cache(isolated_folders, monkeypatch):
    monkeypatch.setenv("L2D_LLM_REPLAY_ONLY", "1")
    rows = pd.DataFrame({"row_id": [0], "text": ["Fatal hepatitis due to ketoconazole."]})
    with pytest.raises(CacheMissError, match="replay-only"):
        llm_predictions(get_profile("smoke"), rows)


def test_write_results_uses_profile_folder(isolated_folders):
    path = write_results(pd.DataFrame({"method": ["l2d"], "f1": [0.5]}), get_profile("smoke"), "table")
    assert path == isolated_folders / "results" / "smoke" / "table.csv"
    assert pd.read_csv(path)["method"].tolist() == ["l2d"]


@needs_data
def test_smoke_splits_sizes():
    splits = ade_splits(get_profile("smoke"))
    assert len(splits) == 900
    assert int(splits["in_llm_subset"].sum()) == 48
    assert set(splits.loc[splits["in_llm_subset"], "split"]) == {"test"}


@needs_data
def test_laptop_splits_match_paper():
    splits = ade_splits(get_profile("laptop"))
    assert splits["split"].value_counts().to_dict() == {"train": 16461, "validation": 3528, "test": 3527}
    assert int(splits["in_llm_subset"].sum()) == 500
    assert int(splits["in_validation_subset"].sum()) == 500
    assert set(splits.loc[splits["in_validation_subset"], "split"]) == {"validation"}
    # The laptop profile labels the whole test split for the sensitivity analysis.
    assert splits["in_sensitivity_pool"].sum() == 3527


@needs_data
def test_smoke_sensitivity_pool_contains_draws():
    splits = ade_splits(get_profile("smoke"))
    assert int(splits["in_sensitivity_pool"].sum()) == 96
    assert set(splits.loc[splits["in_sensitivity_pool"], "split"]) == {"test"}


@needs_data
def test_grouped_scheme_has_no_leak():
    splits = ade_splits(get_profile("laptop"), scheme="grouped")
    report = leak_report(splits)
    assert report.leaked_rows == 0
    assert not splits["text"].duplicated().any()
    assert splits.groupby("pmid")["split"].nunique().max() == 1
    assert int(splits["in_llm_subset"].sum()) == 500


def test_unknown_scheme_names_choices():
    with pytest.raises(ValueError, match="grouped"):
        ade_splits(get_profile("smoke"), scheme="random")


def test_encoder_folder_depends_on_split_assignment():
    """The same rows split differently must not share a fine-tuned encoder."""
    rows = pd.DataFrame({"row_id": [0, 1, 2, 3], "label": [0, 1, 0, 1], "split": ["train", "train", "test", "test"]})
    swapped = rows.assign(split=["test", "test", "train", "train"])
    profile = get_profile("smoke")

    assert _rows_fingerprint(rows) != _rows_fingerprint(swapped)
    assert encoder_folder(profile, rows) != encoder_folder(profile, swapped)


def test_deferral_inputs_rejects_unknown_rows():
    splits = pd.DataFrame({"row_id": [0], "label": [0], "split": ["test"], "in_llm_subset": [True]})
    with pytest.raises(ValueError, match=r"rows='everything'.*\['in_llm_subset'\]"):
        deferral_inputs(get_profile("smoke"), splits, rows="everything")



def test_paper_profile_labels_through_azure(isolated_folders, server, monkeypatch):
    """The paper profile's LLM settings reach an Azure deployment as the API expects."""
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", server.root_url)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "test-key-not-secret")
    monkeypatch.setenv("OPENAI_API_VERSION", "2024-10-21")
    rows = pd.DataFrame({"row_id": [3, 7], "text": ["Vancomycin-induced nephrotoxicity.", "Serum sodium was measured weekly."]})

    labels = llm_predictions(get_profile("paper"), rows)

    request = server.state.requests[0]
    assert labels["llm_label"].tolist() == [1, 0]
    assert request.path == "/openai/deployments/gpt-5-nano/chat/completions"
    assert request.body["max_completion_tokens"] == 512
    assert request.body["reasoning_effort"] == "minimal"
    assert "temperature" not in request.body


def test_ade_encoder_folder_keeps_its_earlier_name():
    """Saved ADE encoders stay valid: the task is not part of the ADE folder hash."""
    rows = pd.DataFrame({"row_id": [0, 1], "label": [0, 1], "split": ["train", "test"]})
    profile = get_profile("smoke")
    payload = json.dumps({"settings": asdict(profile.encoder), "rows": _rows_fingerprint(rows)}, sort_keys=True)
    expected = profile.artifacts_dir / f"encoder-{hashlib.sha256(payload.encode()).hexdigest()[:10]}"
    assert encoder_folder(profile, rows) == expected == encoder_folder(profile, rows, ADE_TASK)


def test_outcome_task_has_its_own_encoder_folder():
    rows = pd.DataFrame({"row_id": [0, 1], "label": [0, 1], "split": ["train", "test"]})
    profile = get_profile("smoke", outcome_encoder=get_profile("smoke").encoder)
    assert encoder_folder(profile, rows, OUTCOME_TASK) != encoder_folder(profile, rows, ADE_TASK)


def test_outcome_task_describes_three_classes():
    assert OUTCOME_TASK.num_classes == 3
    assert OUTCOME_TASK.probability_columns == ["p_neutral", "p_adverse", "p_effective"]
    assert ADE_TASK.probability_columns == ["p_negative", "p_positive"]
    assert OUTCOME_TASK.encoder_settings(get_profile("paper")).model == "emilyalsentzer/Bio_ClinicalBERT"


def test_draw_posts_keeps_whole_posts():
    frame = pd.DataFrame({"row_id": range(60), "post_id": [f"post{k // 6}" for k in range(60)], "label": [0] * 60})
    drawn = draw_posts(frame, 20, seed=42)
    assert 20 <= len(drawn) < 26
    assert (drawn.groupby("post_id").size() == 6).all()
    pd.testing.assert_frame_equal(drawn, draw_posts(frame, 20, seed=42))
    assert not drawn.equals(draw_posts(frame, 20, seed=7))
    with pytest.raises(ValueError, match="n_rows=5"):
        draw_posts(frame, 5)


def test_unknown_outcome_source_names_choices():
    with pytest.raises(ValueError, match="psytar"):
        outcome_splits(get_profile("smoke"), source="n2c2")


@needs_data
def test_laptop_outcome_splits_by_post():
    splits = outcome_splits(get_profile("laptop"), source="psytar")
    assert splits.attrs["source"] == "psytar"
    assert list(splits.columns) == ["row_id", "group_id", "text", "label", "split"]
    assert splits["split"].value_counts().to_dict() == {"train": 4555, "test": 681, "validation": 592}
    assert splits["label"].value_counts().to_dict() == {0: 2531, 1: 2385, 2: 912}
    assert splits.groupby("group_id")["split"].nunique().max() == 1
    assert splits.attrs["left_out_mixed"] == 175


@needs_data
def test_smoke_outcome_splits_draw_whole_posts():
    splits = outcome_splits(get_profile("smoke"), source="psytar")
    assert 400 <= len(splits) < 460
    assert set(splits["split"]) == {"train", "validation", "test"}
    assert splits.groupby("group_id")["split"].nunique().max() == 1


def test_paper_profile_labelers_reach_their_models(isolated_folders, server, monkeypatch):
    """Each consensus labeler of the paper profile is asked with its own model and prompt."""
    monkeypatch.setenv("OPENAI_BASE_URL", f"{server.root_url}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "test-key-not-secret")
    profile = get_profile("paper")
    rows = pd.DataFrame({"row_id": [1], "text": ["The tablets stopped my panic attacks."]})
    server.state.queued_actions.extend(["reply:E", "reply:B"])

    prompts = labeler_prompts(profile.labelers)
    first = llm_predictions(profile, rows, template=prompts[0], llm=profile.labelers[0])
    second = llm_predictions(profile, rows, template=prompts[1], llm=profile.labelers[1])

    assert [request.body["model"] for request in server.state.requests] == ["gpt-5.2", "claude-sonnet-4-5"]
    assert [request.path for request in server.state.requests] == ["/v1/chat/completions"] * 2
    assert first["llm_label"].tolist() == second["llm_label"].tolist() == [2]
