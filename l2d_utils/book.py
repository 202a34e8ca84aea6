"""Execute the chapters with papermill and build the HTML book with Jupyter Book.

Usage::

    python -m l2d_utils.book --profile laptop            # execute every chapter, then build
    python -m l2d_utils.book --profile smoke --strict    # what the tests run
    python -m l2d_utils.book --profile laptop --only 03_llm_prompting --no-build

Each chapter in ``_toc.yml`` is a Jupytext MyST-markdown file. It is read in
memory with :func:`jupytext.read`, executed by papermill with ``profile`` set
in its ``parameters`` cell, and written to ``_build/executed/<profile>/``.
Jupyter Book then renders a staging copy of the book sources in which every
chapter is its executed notebook (``execute_notebooks: off``), so the HTML
shows the outputs of this run. Per-chapter wall times go to
``timings.json`` beside the executed notebooks; the status chapter reads them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jupytext
import nbformat
import papermill
import yaml

from l2d_utils.config import (
    LLM_CACHE_FILE,
    ARTIFACTS_DIR_ENV,
    DATA_DIR_ENV,
    PACKAGED_MINILM,
    PROFILES,
    REPLAY_ONLY_ENV,
    RESULTS_DIR_ENV,
    data_dir,
    get_profile,
)
from l2d_utils.data import ReleaseFileError, load_ade_corpus
from l2d_utils.llm.cache import USAGE_RUN_ENV, ResponseCache
from l2d_utils.models import MissingModelError, check_packaged_llm, is_packaged_llm, packaged_minilm_path
from l2d_utils.outcomes import psytar_path

logger = logging.getLogger(__name__)

BOOK_FILES = ("_config.yml", "_toc.yml", "intro.md", "references.bib")
STATUS_CHAPTER = "chapters/99_status"


def project_root() -> Path:
    """Return the folder holding ``_toc.yml`` (the repository root)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "_toc.yml").is_file():
        raise FileNotFoundError(f"No _toc.yml in {root}; run the book from a checkout of the repository.")
    return root


def chapter_files(root: Path) -> list[str]:
    """Return the notebook chapters of ``_toc.yml`` in order, as paths without suffix.

    Only the top level and ``parts`` are read: the book has no nested sections.
    """
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    entries = [toc] + [chapter for part in toc.get("parts", []) for chapter in part.get("chapters", [])]
    entries += toc.get("chapters", [])
    return [
        entry["file"]
        for entry in entries
        if str(entry.get("file", "")).startswith("chapters/") and (root / f"{entry['file']}.md").is_file()
    ]


def execute_chapter(root: Path, chapter: str, output: Path, profile: str, kernel: str = "python3") -> float:
    """Execute one chapter and return its wall time in seconds.

    Raises:
        papermill.PapermillExecutionError: When a cell fails; the partly
            executed notebook is still written to ``output``.
    """
    notebook = jupytext.read(root / f"{chapter}.md")
    output.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    papermill.execute_notebook(
        notebook,
        str(output),
        parameters={"profile": profile},
        kernel_name=kernel,
        cwd=str(root),
        progress_bar=False,
        log_output=True,
    )
    return time.monotonic() - started


def stage_book(root: Path, executed: Path, staging: Path, chapters: list[str]) -> None:
    """Copy the book's configuration and the executed notebooks into ``staging``."""
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in BOOK_FILES:
        if (root / name).is_file():
            shutil.copy2(root / name, staging / name)
    for chapter in chapters:
        source = executed / f"{chapter}.ipynb"
        target = staging / f"{chapter}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        notebook = nbformat.read(source, as_version=4)
        # Papermill's injected-parameters cell would show as code on the page; keep it hidden.
        for cell in notebook.cells:
            tags = cell.get("metadata", {}).get("tags", [])
            if "injected-parameters" in tags or "parameters" in tags:
                cell["metadata"]["tags"] = sorted(set(tags) | {"remove-cell"})
        nbformat.write(notebook, target)


def build_html(staging: Path, output_root: Path, strict: bool) -> None:
    """Run ``jupyter-book build`` on the staging folder; HTML goes to ``<output_root>/_build/html``."""
    executable = Path(sys.executable).parent / "jupyter-book"
    command = [str(executable), "build", str(staging), "--path-output", str(output_root)]
    if strict:
        command += ["-W", "-n", "--keep-going"]
    logger.info("Running %s", " ".join(command))
    subprocess.run(command, check=True)


def environment_summary() -> dict[str, object]:
    """Describe the machine and package versions, for the status chapter."""
    import importlib.metadata as metadata

    packages = ["torch", "transformers", "scikit-learn", "pandas", "numpy", "papermill", "jupyter-book", "openai"]
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "packages": versions,
    }


def select_chapters(chapters: list[str], only: list[str] | None) -> list[str]:
    """Return the chapters named in ``only`` (all when ``None``), in book order.

    Names may be given as ``05_deferral_training``, ``chapters/05_deferral_training``
    or ``chapters/05_deferral_training.md``.

    Raises:
        SystemExit: When a name matches no chapter, listing the valid names.
    """
    if only is None:
        return chapters
    requested = {Path(name).with_suffix("").name if name.endswith(".md") else Path(name).name for name in only}
    unknown = sorted(requested - {Path(chapter).name for chapter in chapters})
    if unknown:
        raise SystemExit(f"No chapter named {unknown}; chapters are {[Path(chapter).name for chapter in chapters]}.")
    return [chapter for chapter in chapters if Path(chapter).name in requested]


def reads_psytar(root: Path, chapter: str) -> bool:
    """Return True when the chapter's source loads the treatment-outcome data."""
    return "outcome_splits(" in (root / f"{chapter}.md").read_text()


def check_inputs(profile: str, root: Path | None = None, chapters: list[str] | None = None) -> None:
    """Fail before any long work when the data or a packaged model is missing or damaged.

    PsyTAR is required only when one of ``chapters`` (all when ``None``) loads
    the treatment-outcome data.

    Raises:
        FileNotFoundError, ReleaseFileError, MissingModelError: With the path and the fix.
    """
    settings = get_profile(profile)
    load_ade_corpus(data_dir())  # checks line counts and parses every line: under a second
    root = project_root() if root is None else root
    selected = chapter_files(root) if chapters is None else chapters
    if any(reads_psytar(root, chapter) for chapter in selected):
        psytar_path(data_dir())  # existence only, because reading the workbook takes seconds
    if settings.encoder.model == PACKAGED_MINILM:
        packaged_minilm_path()
    if settings.llm.backend == "local" and is_packaged_llm(settings.llm.model):
        check_packaged_llm()


def forget_llm_usage(run: str) -> None:
    """Drop the response cache's usage notes of ``run``, so that they describe the coming execution."""
    cache_path = Path(os.environ[ARTIFACTS_DIR_ENV]) / LLM_CACHE_FILE
    if cache_path.is_file():
        cache = ResponseCache(cache_path, run="")
        try:
            cache.forget_usage(run)
        finally:
            cache.close()


def run(profile: str, only: list[str] | None, build: bool, strict: bool, output_root: Path) -> int:
    """Execute chapters and build the book; return a process exit code."""
    root = project_root()
    check_inputs(profile, root, select_chapters(chapter_files(root), only))
    for variable, default in ((ARTIFACTS_DIR_ENV, root / "artifacts"), (RESULTS_DIR_ENV, root / "results")):
        os.environ[variable] = str(Path(os.environ.get(variable, default)).resolve())
    os.environ[DATA_DIR_ENV] = str(data_dir())
    # Progress bars help in a terminal but clutter executed pages; the kernels inherit these.
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # Silence transformers' model-loading reports (such as the newly initialized classifier head) below error level.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    chapters = chapter_files(root)
    selected = select_chapters(chapters, only)
    executed = output_root / "_build" / "executed" / profile
    timings_path = executed / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    timings["environment"] = environment_summary()
    timings["profile"] = profile

    for chapter in selected:
        if chapter == STATUS_CHAPTER:
            continue
        logger.info("Executing %s with profile %s", chapter, profile)
        forget_llm_usage(f"{profile}/{chapter}")
        os.environ[USAGE_RUN_ENV] = f"{profile}/{chapter}"
        try:
            seconds = execute_chapter(root, chapter, executed / f"{chapter}.ipynb", profile)
        except papermill.PapermillExecutionError as error:
            logger.error(
                "Chapter %s failed with %s: %s. The partly executed notebook is %s",
                chapter,
                error.ename,
                error.evalue,
                executed / f"{chapter}.ipynb",
            )
            return 1
        timings.setdefault("chapters", {})[chapter] = {
            "seconds": round(seconds, 1),
            "finished_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        }
        timings_path.parent.mkdir(parents=True, exist_ok=True)
        timings_path.write_text(json.dumps(timings, indent=1))
        logger.info("%s done in %.1f s", chapter, seconds)

    os.environ.pop(USAGE_RUN_ENV, None)
    if STATUS_CHAPTER in selected:
        os.environ["L2D_TIMINGS_FILE"] = str(timings_path)
        execute_chapter(root, STATUS_CHAPTER, executed / f"{STATUS_CHAPTER}.ipynb", profile)
    if build:
        missing = [chapter for chapter in chapters if not (executed / f"{chapter}.ipynb").is_file()]
        if missing:
            logger.error("Cannot build the book: chapters %s were never executed with profile %s", missing, profile)
            return 1
        stage_book(root, executed, output_root / "_build" / "book_source", chapters)
        try:
            build_html(output_root / "_build" / "book_source", output_root, strict)
        except subprocess.CalledProcessError as error:
            logger.error("jupyter-book build failed with exit code %d; its messages are above", error.returncode)
            return 1
        logger.info("Book written to %s", output_root / "_build" / "html" / "index.html")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description="Execute the L2D-Clinical chapters and build the HTML book.")
    parser.add_argument("--profile", default="laptop", choices=sorted(PROFILES), help="models and data sizes (default: laptop)")
    parser.add_argument("--only", nargs="+", help="execute only these chapters, e.g. 03_llm_prompting")
    parser.add_argument("--no-build", action="store_true", help="execute chapters but do not build the HTML")
    parser.add_argument("--strict", action="store_true", help="turn Sphinx warnings into errors (-W -n --keep-going)")
    parser.add_argument(
        "--replay-only", action="store_true", help="make no new LLM call; fail on a response missing from the cache"
    )
    parser.add_argument("--output", type=Path, default=None, help="folder that receives _build/ (default: the repository root)")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    output_root = (arguments.output or project_root()).resolve()
    if arguments.replay_only:
        os.environ[REPLAY_ONLY_ENV] = "1"
    try:
        return run(arguments.profile, arguments.only, not arguments.no_build, arguments.strict, output_root)
    except (FileNotFoundError, ReleaseFileError, MissingModelError) as error:
        logger.error("%s", error)
        return 2


if __name__ == "__main__":
    sys.exit(main())
