"""Fine-tuning the packaged MiniLM encoder on a few invented sentences: training, resuming, predicting."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from l2d_utils.config import EncoderSettings
from l2d_utils.encoder import fine_tune, load_state, predict_proba

POSITIVE = [
    "Severe rash developed after the first dose of carbamazepine.",
    "Lithium toxicity caused tremor and confusion.",
    "Acute kidney injury was attributed to vancomycin.",
    "Hepatitis induced by isoniazid resolved after withdrawal.",
    "The patient developed agranulocytosis during clozapine therapy.",
    "Ototoxicity followed intravenous gentamicin.",
    "Methotrexate caused pneumonitis in an elderly woman.",
    "Amiodarone-induced thyroid dysfunction was diagnosed.",
]
NEGATIVE = [
    "Blood samples were collected at baseline.",
    "The study enrolled forty adults with asthma.",
    "Serum sodium was measured every week.",
    "Patients were followed for two years.",
    "The hospital has three intensive care units.",
    "Methods are described in the supplement.",
    "Each visit lasted about thirty minutes.",
    "The cohort was recruited from primary care.",
]
TEXTS = POSITIVE + NEGATIVE
LABELS = [1] * len(POSITIVE) + [0] * len(NEGATIVE)
SETTINGS = EncoderSettings(batch_size=4, max_length=32, max_epochs=2, patience=2, checkpoint_every_steps=2, learning_rate=1e-4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("encoder")
    state = fine_tune(TEXTS, LABELS, TEXTS, LABELS, SETTINGS, folder)
    return folder, state


def test_fine_tune_finishes(trained):
    _, state = trained
    assert state.finished


def test_fine_tune_records_each_epoch(trained):
    _, state = trained
    assert [row["epoch"] for row in state.history] == [1, 2]


def test_fine_tune_keeps_best_epoch(trained):
    _, state = trained
    assert state.best_f1 == max(row["validation_f1"] for row in state.history)


def test_finished_run_is_reused(trained):
    folder, state = trained
    again = fine_tune(TEXTS, LABELS, TEXTS, LABELS, SETTINGS, folder)
    assert again.history == state.history


def test_predict_proba_shape_and_sums(trained):
    folder, _ = trained
    probabilities = predict_proba(TEXTS, folder, max_length=32, progress=None)
    assert probabilities.shape == (len(TEXTS), 2)
    assert np.allclose(probabilities.sum(axis=1), 1.0)


def test_interrupted_run_resumes_to_same_model(trained, tmp_path):
    folder, _ = trained
    first = fine_tune(TEXTS, LABELS, TEXTS, LABELS, SETTINGS, tmp_path, max_train_seconds=0.0)
    assert not first.finished
    assert first.global_step == SETTINGS.checkpoint_every_steps

    resumed = fine_tune(TEXTS, LABELS, TEXTS, LABELS, SETTINGS, tmp_path)
    assert resumed.finished
    assert load_state(tmp_path).global_step == load_state(folder).global_step

    uninterrupted = predict_proba(TEXTS, folder, max_length=32, progress=None)
    after_resume = predict_proba(TEXTS, tmp_path, max_length=32, progress=None)
    assert np.allclose(uninterrupted, after_resume, atol=1e-5)


def test_changed_settings_are_rejected(tmp_path):
    fine_tune(TEXTS, LABELS, TEXTS, LABELS, SETTINGS, tmp_path, max_train_seconds=0.0)
    with pytest.raises(ValueError, match="Delete that folder"):
        fine_tune(TEXTS, LABELS, TEXTS, LABELS, replace(SETTINGS, learning_rate=1e-3), tmp_path)


@pytest.mark.parametrize(
    ("texts", "labels", "message"),
    [
        ([], [], "empty"),
        (["a", "b"], [1], "must match"),
        (["a", "b"], [0, 2], r"\[0, 2\)"),
    ],
)
def test_bad_training_input_is_rejected(tmp_path, texts, labels, message):
    with pytest.raises(ValueError, match=message):
        fine_tune(texts, labels, TEXTS, LABELS, SETTINGS, tmp_path)


def test_predict_without_model_names_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="fine_tune"):
        predict_proba(["a"], tmp_path)
