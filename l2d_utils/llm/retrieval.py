"""Few-shot examples retrieved per input, the nearest-neighbour expert, and a probability threshold.

The fixed five-example prompt shows every input the same examples. Here each
input gets its own examples: the training sentences whose all-MiniLM-L6-v2
embeddings are nearest to it by cosine similarity (:func:`nearest_neighbours`),
or the nearest ones of each label in equal numbers (:func:`balanced_neighbours`).
:func:`retrieved_templates` turns them into one
:class:`~l2d_utils.llm.prompts.PromptTemplate` per input for
:meth:`~l2d_utils.llm.base.LLMBackend.classify_each`.

ADE Corpus V2 has one row per drug-effect relation, so 2,620 rows repeat the
text of another row, and a random row split puts many test sentences into the
training split as well. Without precautions the nearest training sentence is
then often the input itself, and the prompt shows the model its label. The
retrieval functions therefore skip pool sentences identical to the input
unless ``exclude_identical=False``, which is there to measure that leak.

Two experts need no LLM at all: :func:`nearest_label` is the label of the
nearest training sentence, and :func:`agreement_rate` measures how often
another expert returns the same label. :func:`tune_probability_threshold`
moves the LLM's decision threshold on the probability of the positive class.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm
from transformers import AutoModel, AutoTokenizer

from l2d_utils.llm.prompts import PromptTemplate
from l2d_utils.metrics import class_f1
from l2d_utils.models import packaged_minilm_path

logger = logging.getLogger(__name__)

#: Version suffix of retrieved templates. Raise it when :func:`retrieved_templates`
#: changes how it builds a prompt, so that the change shows in each template's version.
RETRIEVAL_TEMPLATE_VERSION = "1"

#: Query rows whose similarities to the whole pool are held in memory at once.
#: A block of 1,024 queries against the 16,461 rows of a 70% training split takes 67 MB in float32.
_QUERY_BLOCK = 1024


# Embeddings


@torch.no_grad()
def embed_texts(
    texts: Sequence[str], model_dir: str | Path | None = None, batch_size: int = 64, max_length: int = 128
) -> np.ndarray:
    """Embed sentences as mean-pooled, L2-normalized vectors of a sentence encoder.

    The pooling is that of the sentence-transformers model all-MiniLM-L6-v2:
    the mean of the last hidden states over real tokens (attention mask 1),
    then division by the L2 norm. Sentences are batched longest first, so
    that each batch pads little, and returned in input order.

    NOTE: sentence-transformers truncates this model's inputs at 256 tokens.
    The default ``max_length`` of 128 gives different vectors for longer
    sentences.

    Args:
        texts: Sentences, length N.
        model_dir: Folder with the encoder's weights and tokenizer; default
            the packaged all-MiniLM-L6-v2 (:func:`~l2d_utils.models.packaged_minilm_path`).
        batch_size: Sentences per forward pass.
        max_length: Tokens kept per sentence, including ``[CLS]`` and ``[SEP]``.

    Returns:
        Float32 array of shape ``(N, hidden size)``; ``(N, 384)`` for the packaged model.
        Every row has unit L2 norm.

    Raises:
        ValueError: When ``texts`` is empty or contains a non-string, or a size is below 1.
    """
    texts = list(texts)
    if not texts:
        raise ValueError("No texts to embed; pass at least one sentence.")
    not_strings = [i for i, text in enumerate(texts) if not isinstance(text, str)]
    if not_strings:
        raise ValueError(f"texts must be strings; positions {not_strings[:10]} are not.")
    if batch_size < 1 or max_length < 2:
        raise ValueError(f"batch_size={batch_size} must be at least 1 and max_length={max_length} at least 2.")

    source = Path(model_dir) if model_dir is not None else packaged_minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModel.from_pretrained(source)
    if torch.cuda.is_available():
        model = model.to("cuda")
    model.eval()

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
    embeddings = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    for start in tqdm(range(0, len(texts), batch_size), desc="embedding", unit="batch", leave=False):
        batch_positions = order[start : start + batch_size]
        encoded = tokenizer(
            [texts[i] for i in batch_positions], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        ).to(model.device)
        hidden = model(**encoded).last_hidden_state
        mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        normalized = torch.nn.functional.normalize(pooled, p=2, dim=1)
        embeddings[batch_positions] = normalized.float().cpu().numpy()
    return embeddings


# Retrieval


def _unit_rows(embeddings, name: str) -> np.ndarray:
    """Return ``embeddings`` as a float32 2-D array with rows scaled to unit norm, after checking it."""
    values = np.asarray(embeddings, dtype=np.float32)
    if values.ndim != 2 or values.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (rows, dimensions); got shape {values.shape}.")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} contains NaN or infinite values.")
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    zero_rows = np.flatnonzero(norms[:, 0] == 0)
    if len(zero_rows):
        raise ValueError(f"{name} has all-zero rows {zero_rows[:10].tolist()}, which have no cosine similarity.")
    return values / norms


def _text_list(texts, expected: int, name: str) -> list[str]:
    if texts is None:
        raise ValueError(f"{name} is required when exclude_identical=True; pass the texts or set exclude_identical=False.")
    texts = list(texts)
    if len(texts) != expected:
        raise ValueError(f"{name} has {len(texts)} texts but its embeddings have {expected} rows.")
    not_strings = [i for i, text in enumerate(texts) if not isinstance(text, str)]
    if not_strings:
        raise ValueError(f"{name} must be strings; positions {not_strings[:10]} are not.")
    return texts


def _identical_pool_rows(query_texts: list[str], pool_texts: list[str]) -> list[np.ndarray]:
    """Return, per query, the pool rows whose text equals the query's after stripping surrounding whitespace."""
    rows_by_text: dict[str, list[int]] = {}
    for row, text in enumerate(pool_texts):
        rows_by_text.setdefault(text.strip(), []).append(row)
    empty = np.zeros(0, dtype=np.int64)
    return [np.asarray(rows_by_text[text.strip()]) if text.strip() in rows_by_text else empty for text in query_texts]


def _check_k(k, pool_size: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be an integer; got {k!r}.")
    if not 1 <= k <= pool_size:
        raise ValueError(f"k={k} must be between 1 and the pool size {pool_size}.")


def _top_k(similarities: np.ndarray, k: int) -> np.ndarray:
    """Return the positions of the ``k`` largest values of a 1-D array, largest first, ties to the lower position."""
    kth_largest = np.partition(similarities, len(similarities) - k)[len(similarities) - k]
    candidates = np.flatnonzero(similarities >= kth_largest)
    # lexsort sorts by its last key first: similarity descending, then position ascending.
    ranked = candidates[np.lexsort((candidates, -similarities[candidates]))]
    return ranked[:k]


def _ranked_neighbours(
    queries: np.ndarray, pool: np.ndarray, k: int, excluded: list[np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Return the indices and cosine similarities of each query's ``k`` nearest pool rows, most similar first.

    Both arrays must have unit-norm rows. ``excluded[q]`` lists pool rows that query ``q`` may not return.
    """
    if excluded is not None:
        for query, rows in enumerate(excluded):
            if len(pool) - len(rows) < k:
                raise ValueError(
                    f"Query {query} has only {len(pool) - len(rows)} pool rows left after excluding "
                    f"{len(rows)} identical texts, fewer than k={k}. Lower k or enlarge the pool."
                )
    indices = np.zeros((len(queries), k), dtype=np.int64)
    similarities = np.zeros((len(queries), k), dtype=np.float32)
    for start in range(0, len(queries), _QUERY_BLOCK):
        block = queries[start : start + _QUERY_BLOCK] @ pool.T
        for offset, row in enumerate(block):
            query = start + offset
            if excluded is not None and len(excluded[query]):
                row[excluded[query]] = -np.inf
            indices[query] = _top_k(row, k)
            similarities[query] = row[indices[query]]
    return indices, similarities


def _unit_query_and_pool(query_embeddings, pool_embeddings) -> tuple[np.ndarray, np.ndarray]:
    """Scale both embedding matrices to unit rows after checking that their widths match."""
    queries = _unit_rows(query_embeddings, "query_embeddings")
    pool = _unit_rows(pool_embeddings, "pool_embeddings")
    if queries.shape[1] != pool.shape[1]:
        raise ValueError(f"query_embeddings have {queries.shape[1]} dimensions but pool_embeddings have {pool.shape[1]}.")
    return queries, pool


def nearest_neighbours(
    query_embeddings,
    pool_embeddings,
    k: int,
    query_texts: Sequence[str] | None = None,
    pool_texts: Sequence[str] | None = None,
    exclude_identical: bool = True,
) -> np.ndarray:
    """Find each query's ``k`` most similar pool rows by cosine similarity.

    Rows are compared after scaling to unit norm, so unnormalized embeddings
    work too. Equal similarities go to the lower pool index.

    A pool that repeats a sentence can return it several times for one query.
    Pass a pool without repeated texts (for example
    ``train.drop_duplicates("text")``) when each example should be a distinct sentence.

    Args:
        query_embeddings: Shape ``(Q, D)``.
        pool_embeddings: Shape ``(P, D)``, for example the training split.
        k: Neighbours per query, 1 to P.
        query_texts: Q sentences; required when ``exclude_identical``.
        pool_texts: P sentences; required when ``exclude_identical``.
        exclude_identical: Skip pool rows whose text equals the query's text
            after stripping leading and trailing whitespace. Set it to False
            only to measure how much returning the input itself inflates scores.

    Returns:
        Pool indices, int64 array of shape ``(Q, k)``, most similar first.

    Raises:
        ValueError: On mismatched shapes or text counts, k outside 1 to P, or a
            query with fewer than k pool rows left after exclusion.
    """
    queries, pool = _unit_query_and_pool(query_embeddings, pool_embeddings)
    _check_k(k, len(pool))
    excluded = None
    if exclude_identical:
        excluded = _identical_pool_rows(
            _text_list(query_texts, len(queries), "query_texts"), _text_list(pool_texts, len(pool), "pool_texts")
        )
    indices, _ = _ranked_neighbours(queries, pool, k, excluded)
    return indices


def balanced_neighbours(
    query_embeddings,
    pool_embeddings,
    pool_labels,
    k: int,
    query_texts: Sequence[str] | None = None,
    pool_texts: Sequence[str] | None = None,
    exclude_identical: bool = True,
) -> np.ndarray:
    """Find each query's nearest pool rows of every label, the same number per label.

    With two labels this returns the ``k/2`` nearest rows of label 0 and the
    ``k/2`` nearest of label 1. The labels are those present in
    ``pool_labels``, so with C labels each contributes ``k/C`` rows.

    The rows of one query are ordered by similarity, most similar first, as in
    :func:`nearest_neighbours`, and not alternated by label. After the reversal
    in :func:`retrieved_templates` the label next to the input is then that of
    the most similar example, rather than the same label for every input.

    Args:
        query_embeddings: Shape ``(Q, D)``.
        pool_embeddings: Shape ``(P, D)``.
        pool_labels: Integer labels of the pool rows, shape ``(P,)``.
        k: Neighbours per query, a multiple of the number of labels (even for two labels).
        query_texts: Q sentences; required when ``exclude_identical``.
        pool_texts: P sentences; required when ``exclude_identical``.
        exclude_identical: As in :func:`nearest_neighbours`.

    Returns:
        Pool indices, int64 array of shape ``(Q, k)``.

    Raises:
        ValueError: As :func:`nearest_neighbours` does, when the label count
            differs from P, when the pool has a single label, or when k is not
            a positive multiple of the number of labels or exceeds a label's
            row count.
    """
    queries, pool = _unit_query_and_pool(query_embeddings, pool_embeddings)
    labels = np.asarray(pool_labels)
    if labels.shape != (len(pool),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"pool_labels must be {len(pool)} integers, one per pool row; got shape {labels.shape}, dtype {labels.dtype}."
        )
    classes = np.unique(labels)
    if len(classes) < 2:
        raise ValueError(f"pool_labels has only the label(s) {classes.tolist()}; a balanced set needs at least two labels.")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < len(classes) or k % len(classes):
        raise ValueError(
            f"k={k!r} must be a positive multiple of the {len(classes)} labels {classes.tolist()} (even for two labels)."
        )
    per_label = k // len(classes)

    if exclude_identical:
        query_texts = _text_list(query_texts, len(queries), "query_texts")
        pool_texts = _text_list(pool_texts, len(pool), "pool_texts")

    indices_per_label = []
    similarities_per_label = []
    for label in classes:
        rows = np.flatnonzero(labels == label)
        if per_label > len(rows):
            raise ValueError(f"k={k} needs {per_label} pool rows of label {label} but the pool has {len(rows)}.")
        excluded = None
        if exclude_identical:
            excluded = _identical_pool_rows(query_texts, [pool_texts[row] for row in rows])
        local_indices, similarities = _ranked_neighbours(queries, pool[rows], per_label, excluded)
        indices_per_label.append(rows[local_indices])
        similarities_per_label.append(similarities)

    indices = np.concatenate(indices_per_label, axis=1)
    similarities = np.concatenate(similarities_per_label, axis=1)
    # Merge the labels' lists: similarity descending, then pool index ascending, as in _top_k.
    order = np.lexsort((indices, -similarities), axis=1)
    return np.take_along_axis(indices, order, axis=1)


# Prompts


def retrieved_templates(
    base: PromptTemplate,
    query_texts: Sequence[str],
    neighbour_indices,
    pool_texts: Sequence[str],
    pool_labels,
    name_suffix: str,
) -> list[PromptTemplate]:
    """Build one prompt template per input whose few-shot examples are its retrieved neighbours.

    Each template keeps ``base``'s system text, answers and class names and
    replaces its examples with the input's neighbours, the pool label ``c``
    shown as ``base.answers[c]``. The examples run from least to most similar,
    so the most similar example is the last turn before the input. Few-shot
    prompts tend to weigh their last examples most (recency bias), and this
    order gives that weight to the example most like the input.
    NOTE: the effect of this order on the packaged model is not measured.
    Each template is named ``f"{base.name}-{name_suffix}"`` with
    version ``f"{base.version}.r{RETRIEVAL_TEMPLATE_VERSION}"``. Its fingerprint
    covers the examples, so inputs with different neighbours get different
    response-cache keys.

    Args:
        base: Template whose system text and answers are kept, e.g. ``ADE_PAPER_PROMPT``.
        query_texts: Q input sentences, in the order of ``neighbour_indices``' rows.
        neighbour_indices: Pool indices, shape ``(Q, k)``, most similar first, from
            :func:`nearest_neighbours` or :func:`balanced_neighbours`.
        pool_texts: P pool sentences.
        pool_labels: P integer labels, each an index into ``base.answers``.
        name_suffix: Retrieval scheme for the name, e.g. ``knn-8`` or ``balanced-8``.

    Returns:
        Q templates, for :meth:`~l2d_utils.llm.base.LLMBackend.classify_each`.

    Raises:
        ValueError: On mismatched lengths, an index outside the pool, a label
            with no answer in ``base``, an empty example text or an empty suffix.
    """
    if not isinstance(name_suffix, str) or not name_suffix.strip():
        raise ValueError(f"name_suffix must be a non-empty string such as 'knn-8'; got {name_suffix!r}.")
    query_texts = list(query_texts)
    pool_texts = list(pool_texts)
    indices = np.asarray(neighbour_indices)
    labels = np.asarray(pool_labels)
    if indices.ndim != 2 or indices.shape[0] != len(query_texts) or indices.shape[1] == 0:
        raise ValueError(
            f"neighbour_indices must have shape (Q, k) with Q = {len(query_texts)} query texts and k >= 1; got {indices.shape}."
        )
    if not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"neighbour_indices must be integers; got dtype {indices.dtype}.")
    if labels.shape != (len(pool_texts),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"pool_labels must be {len(pool_texts)} integers, one per pool text; got shape {labels.shape}, dtype {labels.dtype}."
        )
    if indices.min() < 0 or indices.max() >= len(pool_texts):
        raise ValueError(f"neighbour_indices must lie in 0..{len(pool_texts) - 1}; got {indices.min()}..{indices.max()}.")
    used_labels = np.unique(labels[indices])
    if used_labels.min() < 0 or used_labels.max() >= len(base.answers):
        raise ValueError(f"Retrieved labels {used_labels.tolist()} must index base.answers {base.answers}.")

    name = f"{base.name}-{name_suffix}"
    version = f"{base.version}.r{RETRIEVAL_TEMPLATE_VERSION}"
    templates = []
    inputs_shown_as_examples = 0
    for query_text, row in zip(query_texts, indices):
        examples = []
        for index in row[::-1]:
            text = pool_texts[index]
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"Pool text {index} is empty or not a string: {text!r}.")
            examples.append((text, base.answers[labels[index]]))
        if any(text.strip() == str(query_text).strip() for text, _ in examples):
            inputs_shown_as_examples += 1
        templates.append(
            PromptTemplate(
                name=name,
                version=version,
                system=base.system,
                examples=tuple(examples),
                answers=base.answers,
                class_names=base.class_names,
            )
        )
    logger.info(
        "%s: %d templates built, %d of them show the input's own text as an example",
        name,
        len(templates),
        inputs_shown_as_examples,
    )
    return templates


# Experts without an LLM, and the LLM's threshold


def nearest_label(neighbour_indices, pool_labels) -> np.ndarray:
    """Return the label of each query's nearest pool row, the expert that needs no LLM.

    Args:
        neighbour_indices: Pool indices, shape ``(Q, k)``, most similar first (column 0 is used).
        pool_labels: Integer labels of the pool, shape ``(P,)``.

    Returns:
        Integer labels, shape ``(Q,)``.
    """
    indices = np.asarray(neighbour_indices)
    labels = np.asarray(pool_labels)
    if indices.ndim != 2 or indices.shape[0] == 0 or indices.shape[1] == 0:
        raise ValueError(f"neighbour_indices must have shape (Q, k) with Q, k >= 1; got {indices.shape}.")
    if not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"neighbour_indices must be integers; got dtype {indices.dtype}.")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"pool_labels must be a 1-D integer array; got shape {labels.shape}, dtype {labels.dtype}.")
    nearest = indices[:, 0]
    if nearest.min() < 0 or nearest.max() >= len(labels):
        raise ValueError(f"neighbour_indices must lie in 0..{len(labels) - 1}; got {nearest.min()}..{nearest.max()}.")
    return labels[nearest].astype(np.int64)


def agreement_rate(labels_a, labels_b) -> float:
    """Return the share of positions where two experts give the same label.

    An unparseable LLM label (-1) never equals a class, so it counts as a disagreement.
    """
    first = np.asarray(labels_a)
    second = np.asarray(labels_b)
    if first.ndim != 1 or first.shape != second.shape or len(first) == 0:
        raise ValueError(
            f"labels_a and labels_b must be non-empty 1-D arrays of equal length; got shapes {first.shape} and {second.shape}."
        )
    return float(np.mean(first == second))


def tune_probability_threshold(probabilities, y_true) -> tuple[float, float]:
    """Choose the threshold on P(positive class) that maximizes positive-class F1.

    The label is 1 where ``probability >= threshold``. The candidates are the
    distinct probabilities, so the lowest candidate labels every input 1.
    Thresholds with equal F1 go to the higher one, which labels fewer inputs positive.

    Args:
        probabilities: The LLM's probability of class 1, shape ``(N,)``, each in [0, 1]
            (the ``llm_probability`` column of :func:`~l2d_utils.llm.base.results_frame`).
        y_true: Labels 0 or 1, shape ``(N,)``, with at least one 1.

    Returns:
        ``(threshold, f1)``: the chosen threshold and the F1 it gives on these inputs.

    Raises:
        ValueError: On mismatched shapes, an empty input, a probability that is
            NaN or outside [0, 1], a label other than 0 or 1, or no positive label.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    y_true = np.asarray(y_true)
    if probabilities.ndim != 1 or probabilities.shape != y_true.shape or len(probabilities) == 0:
        raise ValueError(
            "probabilities and y_true must be non-empty 1-D arrays of equal length; "
            f"got shapes {probabilities.shape} and {y_true.shape}."
        )
    if np.any(np.isnan(probabilities)) or probabilities.min() < 0.0 or probabilities.max() > 1.0:
        raise ValueError(
            "probabilities must lie in [0, 1] with no NaN; NaN means the backend gave no probabilities "
            "(only the local backend does)."
        )
    if not np.all(np.isin(y_true, (0, 1))):
        raise ValueError(f"y_true must contain only 0 and 1; got values {np.unique(y_true).tolist()}.")
    y_true = y_true.astype(np.int64)
    if y_true.sum() == 0:
        raise ValueError("y_true has no positive label, so positive-class F1 is 0 at every threshold.")

    candidates = np.unique(probabilities)[::-1]
    scores = np.array([class_f1(y_true, (probabilities >= threshold).astype(np.int64)) for threshold in candidates])
    # argmax returns the first maximum, which is the highest threshold among equal F1 values.
    best = int(np.argmax(scores))
    return float(candidates[best]), float(scores[best])
