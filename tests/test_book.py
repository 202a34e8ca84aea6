"""Execute every chapter with the smoke profile and build the book strictly.

This is the end-to-end check of the README's main command on a small sample:
the real ADE release files (from ``L2D_DATA_DIR``), the packaged encoder and
the packaged LLM. Artifacts and results go to temporary folders, so the test
trains, labels and builds from nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from l2d_utils.book import chapter_files, project_root
from l2d_utils.outcomes import find_restricted_text, load_psytar

ROOT = project_root()
TABLE1_METHODS = ["bert_only", "llm_only", "random", "fixed_0.6", "fixed_0.7", "fixed_0.8", "fixed_0.9", "fixed_0.95", "l2d", "oracle"]

needs_data = pytest.mark.skipif(not os.environ.get("L2D_DATA_DIR"), reason="set L2D_DATA_DIR to the folder holding ade_corpus_v2/")


@pytest.fixture(scope="module")
def smoke_build(tmp_path_factory):
    output = tmp_path_factory.mktemp("book")
    environment = {
        **os.environ,
        "L2D_ARTIFACTS_DIR": str(output / "artifacts"),
        "L2D_RESULTS_DIR": str(output / "results"),
    }
    completed = subprocess.run(
        [sys.executable, "-m", "l2d_utils.book", "--profile", "smoke", "--strict", "--output", str(output)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    return output, completed


@pytest.mark.slow
@needs_data
def test_smoke_build_succeeds(smoke_build):
    _, completed = smoke_build
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-5000:]


@pytest.mark.slow
@needs_data
def test_every_chapter_has_a_page(smoke_build):
    output, _ = smoke_build
    html = output / "_build" / "html"
    assert (html / "index.html").is_file()
    for chapter in chapter_files(ROOT):
        assert (html / f"{chapter}.html").is_file(), chapter


@pytest.mark.slow
@needs_data
def test_executed_chapters_have_no_errors(smoke_build):
    output, _ = smoke_build
    for chapter in chapter_files(ROOT):
        notebook = nbformat.read(output / "_build" / "executed" / "smoke" / f"{chapter}.ipynb", as_version=4)
        errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        assert errors == [], chapter


@pytest.mark.slow
@needs_data
def test_pages_show_no_unformatted_numbers(smoke_build):
    output, _ = smoke_build
    for page in (output / "_build" / "html" / "chapters").glob("*.html"):
        assert "np.float64" not in page.read_text(), page.name


@pytest.mark.slow
@needs_data
def test_table1_csv_has_stable_methods(smoke_build):
    output, _ = smoke_build
    table = pd.read_csv(output / "results" / "smoke" / "ade_table1.csv")
    assert list(table.columns) == ["method", "f1", "f1_low", "f1_high", "accuracy", "accuracy_low", "accuracy_high", "llm_rate"]
    assert (table["f1_low"] <= table["f1"] + 1e-9).all()
    assert (table["f1"] <= table["f1_high"] + 1e-9).all()
    assert table["method"].tolist() == TABLE1_METHODS
    assert table["llm_rate"].between(0, 1).all()
    assert table.set_index("method").loc["llm_only", "llm_rate"] == 1.0


@pytest.mark.slow
@needs_data
def test_analysis_chapters_write_their_tables(smoke_build):
    output, _ = smoke_build
    results = output / "results" / "smoke"
    protocols = pd.read_csv(results / "ade_protocols.csv")
    assert set(protocols["split"]) == {"paper split", "grouped split"}
    assert "L2D, tuned on validation" in set(protocols["protocol"])
    sensitivity = pd.read_csv(results / "ade_sensitivity.csv")
    assert len(sensitivity) >= 15  # 20 seeds; a draw with under 2 encoder errors is skipped
    variants = pd.read_csv(results / "ade_deferral_variants.csv")
    assert set(variants["model"]) == {"logistic", "random_forest", "gradient_boosting"}
    assert set(variants["target"]) == {"bert_error", "complementarity"}
    table3 = pd.read_csv(results / "table3.csv").set_index("task")
    assert table3.index.tolist() == ["ADE", "treatment outcomes"]
    assert table3["f1"].notna().all()
    assert table3["llm_rate"].between(0, 1).all()
    cost = pd.read_csv(results / "ade_cost.csv")
    assert {"bert_only", "llm_only", "l2d_held_out"} <= set(cost["system"])


@pytest.mark.slow
@needs_data
def test_status_page_lists_chapter_times(smoke_build):
    output, _ = smoke_build
    status = (output / "_build" / "html" / "chapters" / "99_status.html").read_text()
    assert "05_deferral_training" in status


@pytest.mark.slow
@needs_data
def test_outcome_chapters_write_table2_and_consensus(smoke_build):
    output, _ = smoke_build
    results = output / "results" / "smoke"
    table = pd.read_csv(results / "outcome_table2.csv")
    ade = pd.read_csv(results / "ade_table1.csv")
    assert list(table.columns) == list(ade.columns)
    assert table["method"].tolist() == ade["method"].tolist() == TABLE1_METHODS
    indexed = table.set_index("method")
    # The oracle is right wherever either model is, so no routing beats its accuracy.
    assert indexed.loc["oracle", "accuracy"] >= indexed["accuracy"].max() - 1e-9
    quality = pd.read_csv(results / "outcome_consensus.csv")
    assert quality["labeler"].iloc[-1] == "consensus"
    assert quality["accuracy_low"].le(quality["accuracy"]).all()


@pytest.mark.slow
@needs_data
def test_expert_chapters_write_their_tables(smoke_build):
    output, _ = smoke_build
    results = output / "results" / "smoke"
    experts = pd.read_csv(results / "ade_experts.csv").set_index("expert")
    assert list(experts.index) == ["llm", "llm-threshold", "knn-llm", "balanced-llm", "knn-llm-leaky", "nearest-label", "nearest-label-leaky"]
    assert experts.loc["nearest-label", "agrees_with_nearest_label"] == 1.0
    # The nearest label needs no LLM call: its time is the retrieval's alone, far below the LLM's.
    assert experts.loc["nearest-label", "ms_per_sentence"] < experts.loc["llm", "ms_per_sentence"]
    deferral = pd.read_csv(results / "ade_expert_deferral.csv").set_index("expert")
    assert "knn-llm-leaky" not in deferral.index
    # No routing beats deferring exactly the rescuable sentences.
    assert (deferral["oracle f1"] >= deferral["l2d f1"] - 1e-9).all()
    assert (deferral["rescues"] == experts.loc[deferral.index, "rescues"]).all()


@pytest.mark.slow
@needs_data
def test_usage_table_names_each_llm_chapter(smoke_build):
    output, _ = smoke_build
    usage = pd.read_csv(output / "results" / "smoke" / "llm_usage_by_chapter.csv")
    chapters = set(usage["chapter"])
    assert {"03_llm_prompting", "07_outcome_models", "09_consensus_check"} <= chapters
    assert "01_data_and_splits" not in chapters
    assert usage["calls"].gt(0).all()
    assert usage["total_usd"].isna().all()


@pytest.fixture(scope="module")
def psytar_sentences() -> list[str]:
    return load_psytar()["text"].tolist()


@pytest.mark.slow
@needs_data
def test_no_restricted_sentence_in_notebooks_or_pages(smoke_build, psytar_sentences):
    """Every PsyTAR sentence of 15 or more characters, whole or by its first 40, is absent from the outputs.

    Shorter sentences (166 of 5,828, such as a two-word reply) also occur in
    ordinary text, so a hit on them would not show a leak.
    """
    output, _ = smoke_build
    published = [output / "_build" / "executed", output / "_build" / "html"]
    assert find_restricted_text(psytar_sentences, published, min_chars=15) == []
    assert find_restricted_text(psytar_sentences, published, min_chars=15, prefix_chars=40) == []


@pytest.mark.slow
@needs_data
def test_restricted_scan_finds_a_planted_sentence(smoke_build, psytar_sentences, tmp_path):
    """The scan above can fail: a sentence placed in an executed outcome chapter is found."""
    output, _ = smoke_build
    notebook = nbformat.read(output / "_build" / "executed" / "smoke" / "chapters" / "07_outcome_models.ipynb", as_version=4)
    index = next(k for k, text in enumerate(psytar_sentences) if len(text) > 60)
    code = next(cell for cell in notebook.cells if cell.cell_type == "code")
    code.outputs.append(nbformat.v4.new_output("display_data", data={"text/html": f"<td>{psytar_sentences[index][:55]}</td>"}))
    planted = tmp_path / "planted.ipynb"
    nbformat.write(notebook, planted)
    assert find_restricted_text(psytar_sentences, [planted]) == []  # truncated: the whole sentence is not there
    assert index in {hit for _, hit in find_restricted_text(psytar_sentences, [planted], prefix_chars=40)}


def run_book(output: Path, environment: dict[str, str]) -> subprocess.CompletedProcess:
    """Run the book command with the smoke profile, without the strict flag."""
    return subprocess.run(
        [sys.executable, "-m", "l2d_utils.book", "--profile", "smoke", "--output", str(output)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_missing_data_folder_fails_before_work(tmp_path):
    environment = {key: value for key, value in os.environ.items() if key != "L2D_DATA_DIR"}
    completed = run_book(tmp_path, environment)
    assert completed.returncode == 2
    assert "L2D_DATA_DIR" in completed.stderr
    assert not (tmp_path / "_build" / "executed").exists()


def test_wrong_data_folder_names_path(tmp_path):
    completed = run_book(tmp_path, {**os.environ, "L2D_DATA_DIR": str(tmp_path / "nowhere")})
    assert completed.returncode == 2
    assert str(tmp_path / "nowhere") in completed.stderr


def test_truncated_release_file_fails_before_work(tmp_path):
    folder = tmp_path / "data" / "ade_corpus_v2"
    folder.mkdir(parents=True)
    (folder / "DRUG-AE.rel").write_text("10030778|Intravenous azithromycin-induced ototoxicity.|ototoxicity|43|54|azithromycin|22|34\n")
    (folder / "ADE-NEG.txt").write_text("6460590 NEG Blood samples were taken.\n")
    completed = run_book(tmp_path, {**os.environ, "L2D_DATA_DIR": str(tmp_path / "data")})
    assert completed.returncode == 2
    assert "DRUG-AE.rel has 1 lines" in completed.stderr
    assert not (tmp_path / "_build" / "executed").exists()


@needs_data
def test_psytar_required_only_for_outcome_chapters(tmp_path, monkeypatch):
    from l2d_utils.book import check_inputs

    data = tmp_path / "data"
    data.mkdir()
    (data / "ade_corpus_v2").symlink_to(Path(os.environ["L2D_DATA_DIR"]) / "ade_corpus_v2")
    monkeypatch.setenv("L2D_DATA_DIR", str(data))

    check_inputs("smoke", ROOT, ["chapters/01_data_and_splits"])
    with pytest.raises(FileNotFoundError, match="PsyTAR"):
        check_inputs("smoke", ROOT, ["chapters/01_data_and_splits", "chapters/07_outcome_models"])
