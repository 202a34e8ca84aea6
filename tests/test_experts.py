"""The experts a sentence can be deferred to: retrieval, the nearest label and the tuned threshold.

The sentences are invented. LLM experts are checked against the stand-in
OpenAI-compatible server of ``test_llm_api``, which replies 1 when the input
contains "induced". The retrieval uses the packaged sentence encoder.
"""

from __future__ import annotations

import pandas as pd
import pytest

from l2d_utils.config import LLMSettings, get_profile
from l2d_utils.experts import (
    EXPERTS,
    expert_predictions,
    get_expert,
    identical_in_training,
    neighbours,
    retrieval_pool,
    shots,
)
from l2d_utils.pipeline import ADE_TASK, OUTCOME_TASK, deferral_inputs
from test_llm_api import isolated_environment, server  # noqa: F401 because pytest injects these fixtures by name

TRAIN = [
    ("Amiodarone-induced pulmonary fibrosis developed after two years.", 1),
    ("Phenytoin-induced gingival overgrowth was noted.", 1),
    ("Lithium toxicity caused a coarse tremor.", 1),
    ("The patients were followed for six months.", 0),
    ("Serum creatinine was measured weekly.", 0),
    ("Blood pressure was recorded at each visit.", 0),
    # A repeated row, as ADE Corpus V2 has one row per drug-effect relation.
    ("Phenytoin-induced gingival overgrowth was noted.", 1),
]
TEST = [
    ("Phenytoin-induced gingival overgrowth was noted.", 1),  # also in the training split
    ("Heart rate was recorded at each visit.", 0),
]


def invented_splits() -> pd.DataFrame:
    rows = [(text, label, "train") for text, label in TRAIN] + [(text, label, "test") for text, label in TEST]
    frame = pd.DataFrame(rows, columns=["text", "label", "split"])
    frame.insert(0, "row_id", range(len(frame)))
    frame["in_llm_subset"] = frame["split"] == "test"
    frame["in_validation_subset"] = False
    return frame


@pytest.fixture
def folders(tmp_path, monkeypatch):
    monkeypatch.setenv("L2D_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.setenv("L2D_RESULTS_DIR", str(tmp_path / "results"))
    return tmp_path


@pytest.fixture
def api_profile(server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", f"{server.root_url}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "test-key-not-secret")
    return get_profile("smoke", llm=LLMSettings(backend="openai", model="stand-in"))


def test_unknown_expert_names_the_choices():
    with pytest.raises(ValueError, match=r"Unknown expert 'gpt'.*'nearest-label'"):
        get_expert("gpt")


def test_shots_follow_the_paper_prompt():
    assert shots(ADE_TASK, EXPERTS["knn-llm"]) == 5
    assert shots(ADE_TASK, EXPERTS["balanced-llm"]) == 4
    assert shots(OUTCOME_TASK, EXPERTS["knn-llm"]) == 3
    assert shots(OUTCOME_TASK, EXPERTS["balanced-llm"]) == 3


def test_pool_drops_repeated_texts_and_needs_training_rows():
    splits = invented_splits()
    assert len(retrieval_pool(splits)) == 6
    with pytest.raises(ValueError, match="no rows with split == 'train'"):
        retrieval_pool(splits[splits["split"] == "test"])


def test_identical_texts_are_found():
    splits = invented_splits()
    assert identical_in_training(splits, splits[splits["split"] == "test"]).tolist() == [True, False]


def test_nearest_label_skips_the_input_itself(folders):
    """Without the exclusion the first test sentence finds itself; with it, a different sentence."""
    splits = invented_splits()
    test = splits[splits["split"] == "test"].reset_index(drop=True)
    profile = get_profile("smoke")
    labels = expert_predictions(profile, splits, test, "nearest-label")
    assert labels.columns.tolist()[:2] == ["row_id", "llm_label"]
    assert labels["row_id"].tolist() == test["row_id"].tolist()
    # The nearest distinct sentence to a blood-pressure style sentence is negative.
    assert labels["llm_label"].tolist()[1] == 0
    assert labels["latency_ms"].eq(0).all()
    assert labels["llm_probability"].isna().all()


def test_retrieved_examples_exclude_the_input_unless_leaky(folders, api_profile, server):
    splits = invented_splits()
    test = splits[splits["split"] == "test"].reset_index(drop=True)

    expert_predictions(api_profile, splits, test, "knn-llm")
    clean = [request.body["messages"] for request in server.state.requests]
    server.state.requests.clear()
    expert_predictions(api_profile, splits, test, "knn-llm-leaky")
    leaky = [request.body["messages"] for request in server.state.requests]

    def example_texts(messages):
        return [message["content"] for message in messages[1:-1] if message["role"] == "user"]

    input_text = TEST[0][0]
    by_input = {messages[-1]["content"]: example_texts(messages) for messages in clean}
    assert len(by_input[input_text]) == 5
    assert input_text not in by_input[input_text]
    leaky_by_input = {messages[-1]["content"]: example_texts(messages) for messages in leaky}
    assert leaky_by_input[input_text][-1] == input_text  # the most similar example is last


def test_retrieved_labels_are_cached(folders, api_profile, server):
    splits = invented_splits()
    test = splits[splits["split"] == "test"].reset_index(drop=True)
    first = expert_predictions(api_profile, splits, test, "balanced-llm")
    calls = server.state.request_count()
    second = expert_predictions(api_profile, splits, test, "balanced-llm")
    assert server.state.request_count() == calls == 2
    assert second["cached"].all()
    assert second["llm_label"].tolist() == first["llm_label"].tolist() == [1, 0]


def test_balanced_examples_hold_each_class_equally(folders, api_profile, server):
    splits = invented_splits()
    test = splits[splits["split"] == "test"].reset_index(drop=True)
    expert_predictions(api_profile, splits, test, "balanced-llm")
    for request in server.state.requests:
        answers = [message["content"] for message in request.body["messages"] if message["role"] == "assistant"]
        assert sorted(answers) == ["0", "0", "1", "1"]


def test_threshold_expert_input_checks(folders):
    splits = invented_splits()
    test = splits[splits["split"] == "test"]
    with pytest.raises(ValueError, match="needs two classes"):
        expert_predictions(get_profile("smoke"), splits, test, "llm-threshold", task=OUTCOME_TASK)
    with pytest.raises(ValueError, match="in_validation_subset"):
        expert_predictions(get_profile("smoke"), splits, test, "llm-threshold")


def test_deferral_inputs_take_the_expert_labels(folders, monkeypatch):
    """deferral_inputs puts the chosen expert's labels in the llm_label column."""
    splits = invented_splits()
    encoder = splits[splits["split"] == "test"][["row_id", "split", "text", "label"]].reset_index(drop=True)
    encoder["p_negative"], encoder["p_positive"] = 0.4, 0.6
    encoder["bert_label"], encoder["confidence"] = 1, 0.6
    monkeypatch.setattr("l2d_utils.pipeline.encoder_predictions", lambda *args, **kwargs: encoder)
    inputs = deferral_inputs(get_profile("smoke"), splits, expert="nearest-label")
    expected = expert_predictions(get_profile("smoke"), splits, encoder, "nearest-label")
    assert inputs["llm_label"].tolist() == expected["llm_label"].tolist()


def test_leaky_expert_reuses_clean_responses(folders, api_profile, server):
    """Where no training text equals the input, both retrievals build the same prompt and share its response."""
    splits = invented_splits()
    test = splits[splits["split"] == "test"].reset_index(drop=True)
    expert_predictions(api_profile, splits, test, "knn-llm")
    server.state.requests.clear()
    expert_predictions(api_profile, splits, test, "knn-llm-leaky")
    assert [request.last_user_message for request in server.state.requests] == [TEST[0][0]]


def test_leaky_retrieval_finds_the_input_itself(folders):
    splits = invented_splits()
    test = splits[splits["split"] == "test"].reset_index(drop=True)
    profile = get_profile("smoke")
    leaky, pool, _ = neighbours(profile, splits, test, EXPERTS["nearest-label-leaky"], ADE_TASK)
    clean, _, _ = neighbours(profile, splits, test, EXPERTS["nearest-label"], ADE_TASK)
    assert pool["text"][leaky[0, 0]] == TEST[0][0]
    assert TEST[0][0] not in set(pool["text"][clean[0]])
