"""In-process LLM classification with transformers, by scoring the allowed answers.

Instead of generating text, :class:`LocalBackend` runs the chat prompt once and
reads the next-token logits of each allowed answer (``"0"`` and ``"1"`` for
ADE). The label is the answer with the highest logit and the softmax over the
answers' logits gives label probabilities. Greedy generation of one token
would pick the same answer whenever an allowed answer is the top token
overall; scoring also decides the cases where the model would have started
its reply with something else.

Speed: the system text and few-shot turns are the same for every input, so
their key/value cache is computed once and reused; inputs are then sorted by
token length and scored in right-padded batches of similar length. With right
padding and a causal mask, the logits at each row's last real token do not
depend on the padding after it. Only the answers' rows of the output layer are
applied, at one position per row, rather than the whole 151,936-token
vocabulary at every position.

NOTE: this is true in exact arithmetic only. In bfloat16 the kernels round
differently for different batch shapes, so the same sentence scored in a
different batch can get a probability a few hundredths apart, and a label
near 0.5 can flip. Labels are repeatable for the same order of calls; the
response cache keeps the first result, so a rerun reads rather than rescores.

The packaged model is a GGUF file (see :mod:`l2d_utils.models`). Loading it
through transformers de-quantizes every tensor, which takes about a minute on
two cores, so the first load saves the converted bfloat16 weights into the
model cache and later loads read those.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from l2d_utils.config import model_cache_dir
from l2d_utils.llm.base import LLMBackend
from l2d_utils.llm.cache import CachedResponse
from l2d_utils.llm.prompts import PromptTemplate
from l2d_utils.models import GGUF_SHA256, is_packaged_llm, packaged_gguf_path

logger = logging.getLogger(__name__)

CONVERTED_DIR = "qwen2.5-coder-1.5b-instruct-bf16"
CONVERSION_MARKER = "converted_from.json"


def converted_packaged_llm() -> Path:
    """Return a folder with the packaged LLM's weights in bfloat16, converting once.

    The conversion is written to a temporary folder and renamed when complete,
    with a marker naming the source file's sha256.
    """
    target = model_cache_dir() / CONVERTED_DIR
    marker = target / CONVERSION_MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("gguf_sha256") == GGUF_SHA256:
        return target

    gguf = packaged_gguf_path()
    logger.info("Converting %s to bfloat16 weights in %s (once; about a minute)", gguf.name, target)
    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    # The tensors are de-quantized in memory; drop the GGUF quantizer so that
    # save_pretrained writes them as plain bfloat16 safetensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    (partial / CONVERSION_MARKER).write_text(json.dumps({"gguf_sha256": GGUF_SHA256, "seconds": time.monotonic() - started}))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    return target


def load_causal_lm(model: str, dtype: torch.dtype = torch.bfloat16):
    """Load a tokenizer and causal LM from the packaged GGUF, a folder or a Hub id.

    Returns:
        ``(tokenizer, model)`` with the model in eval mode.
    """
    source = str(converted_packaged_llm()) if is_packaged_llm(model) else model
    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(source)
    network = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    if torch.cuda.is_available():
        network = network.to("cuda")
    network.eval()
    logger.info("Loaded %s in %.1f s", model, time.monotonic() - started)
    return tokenizer, network


class LocalBackend(LLMBackend):
    """Classify sentences with a causal LM in this process.

    Args:
        model: :data:`~l2d_utils.config.PACKAGED_QWEN`, a model folder, or a Hub id.
        cache: Response cache, or ``None``.
        batch_size: Inputs per forward pass after the shared prefix.
        use_prefix_cache: Reuse the key/value cache of the system text and examples.
        dtype: Weight and activation type.
    """

    def __init__(
        self,
        model: str,
        cache=None,
        batch_size: int = 8,
        use_prefix_cache: bool = True,
        dtype: torch.dtype = torch.bfloat16,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1.")
        super().__init__("local", model, cache)
        self.batch_size = batch_size
        self.use_prefix_cache = use_prefix_cache
        self.dtype = dtype
        self._tokenizer = None
        self._network = None

    @property
    def parameters(self) -> Mapping[str, Any]:
        # Batching and prefix caching change speed, not the label: they stay out of the key.
        return {"method": "answer-logits", "dtype": str(self.dtype).removeprefix("torch.")}

    def _load(self) -> None:
        if self._network is None:
            self._tokenizer, self._network = load_causal_lm(self.model, self.dtype)

    def answer_token_ids(self, template: PromptTemplate) -> list[int]:
        """Return the token id of each allowed answer.

        Raises:
            ValueError: When an answer is not a single token for this tokenizer.
        """
        self._load()
        ids = []
        for answer in template.answers:
            tokens = self._tokenizer.encode(answer, add_special_tokens=False)
            if len(tokens) != 1:
                raise ValueError(
                    f"Answer {answer!r} of template {template.name!r} is {len(tokens)} tokens for {self.model}; "
                    "answer scoring needs single-token answers. Use an API backend or shorter answers."
                )
            ids.append(tokens[0])
        return ids

    def render(self, template: PromptTemplate, text: str) -> tuple[list[int], list[int]]:
        """Tokenize one input as the shared prefix and the input's own suffix.

        Returns:
            ``(prefix_ids, suffix_ids)``; their concatenation equals the
            tokenization of the whole chat with the generation prompt.
        """
        self._load()
        full = self._tokenizer.apply_chat_template(template.messages(text), tokenize=False, add_generation_prompt=True)
        prefix = self._tokenizer.apply_chat_template(template.prefix_messages(), tokenize=False, add_generation_prompt=False)
        if not full.startswith(prefix):
            raise ValueError(f"The chat template of {self.model} does not render the few-shot turns as a shared prefix.")
        prefix_ids = self._tokenizer.encode(prefix, add_special_tokens=False)
        suffix_ids = self._tokenizer.encode(full[len(prefix) :], add_special_tokens=False)
        return prefix_ids, suffix_ids

    def _encode(self, template: PromptTemplate, text: str) -> list[int]:
        """Return the token ids of the whole chat for one input, prefix and suffix joined."""
        prefix_ids, suffix_ids = self.render(template, text)
        return prefix_ids + suffix_ids

    def _head_rows(self, answer_ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """Return the output layer's rows for the answers, or ``None`` when logits need the full head.

        The rows are used when the output layer is a plain linear map with no
        logit scaling or soft-capping in the config, as for Qwen2 and Llama.
        """
        head = self._network.get_output_embeddings()
        config = self._network.config
        if not isinstance(head, torch.nn.Linear) or any(
            getattr(config, name, None) not in (None, 1.0) for name in ("final_logit_softcapping", "logit_scale")
        ):
            return None
        index = torch.tensor(list(answer_ids), device=head.weight.device)
        bias = head.bias[index] if head.bias is not None else None
        return head.weight[index], bias

    def _answer_logits(
        self, input_ids: torch.Tensor, lengths: Sequence[int], answer_ids: Sequence[int], cache: Any = None
    ) -> np.ndarray:
        """Run one right-padded batch and return each row's answer logits at its last real token.

        Only the answers' rows of the output layer are applied, to one position
        per row, instead of the whole vocabulary at every position.

        Args:
            input_ids: Shape ``(B, T)``, each row right-padded.
            lengths: Real tokens per row, length B.
            answer_ids: Token ids of the answers, length A.
            cache: Key/value cache of a shared prefix, already repeated to B rows, or ``None``.

        Returns:
            Float array of shape ``(B, A)``.
        """
        rows = torch.arange(len(lengths), device=input_ids.device)
        last = torch.tensor(list(lengths), device=input_ids.device) - 1
        head = self._head_rows(answer_ids)
        if head is None:
            output = self._network(input_ids, cache=cache, use_cache=cache is not None)
            return output.logits[rows, last][:, list(answer_ids)].float().cpu().numpy()
        hidden = self._network.base_model(input_ids, cache=cache, use_cache=cache is not None).last_hidden_state
        weight, bias = head
        logits = hidden[rows, last] @ weight.T
        if bias is not None:
            logits = logits + bias
        return logits.float().cpu().numpy()

    def _pad(self, sequences: Sequence[list[int]]) -> tuple[torch.Tensor, list[int]]:
        """Right-pad token id lists into a ``(B, T)`` tensor; returns it with the real lengths."""
        pad_id = self._tokenizer.pad_token_id if self._tokenizer.pad_token_id is not None else 0
        lengths = [len(sequence) for sequence in sequences]
        width = max(lengths)
        padded = [list(sequence) + [pad_id] * (width - len(sequence)) for sequence in sequences]
        return torch.tensor(padded, device=self._network.device), lengths

    @torch.no_grad()
    def score_plain(self, texts: Sequence[str], template: PromptTemplate) -> np.ndarray:
        """Score each input with one full forward pass and no reuse: the reference path.

        This is what a first implementation does: the whole prompt through the
        whole model, logits over the vocabulary at every position.

        Returns:
            Answer logits, shape ``(len(texts), len(template.answers))``.
        """
        self._load()
        answer_ids = self.answer_token_ids(template)
        logits = np.zeros((len(texts), len(answer_ids)))
        for row, text in enumerate(texts):
            output = self._network(torch.tensor([self._encode(template, text)], device=self._network.device))
            logits[row] = output.logits[0, -1, answer_ids].float().cpu().numpy()
        return logits

    def _cached_batches(
        self, texts: Sequence[str], template: PromptTemplate, batch_size: int, sort_by_length: bool
    ) -> Iterator[tuple[list[int], np.ndarray]]:
        """Yield ``(positions, answer logits)`` per batch, after computing the prefix's key/value cache once."""
        answer_ids = self.answer_token_ids(template)
        prefix_ids, _ = self.render(template, "x")
        with torch.no_grad():
            prefix_cache = self._network(torch.tensor([prefix_ids], device=self._network.device), use_cache=True).cache
        suffixes = [self.render(template, text)[1] for text in texts]
        for positions in _batches([len(suffix) for suffix in suffixes], batch_size, sort_by_length):
            input_ids, lengths = self._pad([suffixes[i] for i in positions])
            cache = copy.deepcopy(prefix_cache)
            if len(positions) > 1:
                cache.batch_repeat_interleave(len(positions))
            with torch.no_grad():
                yield positions, self._answer_logits(input_ids, lengths, answer_ids, cache)

    def _full_batches(
        self, texts: Sequence[str], templates: Sequence[PromptTemplate], batch_size: int, sort_by_length: bool
    ) -> Iterator[tuple[list[int], np.ndarray]]:
        """Yield ``(positions, answer logits)`` per batch of whole prompts."""
        if len({template.answers for template in templates}) > 1:
            raise ValueError("score_full needs templates with the same answers; group inputs by answer set first.")
        answer_ids = self.answer_token_ids(templates[0])
        prompts = [self._encode(template, text) for text, template in zip(texts, templates)]
        for positions in _batches([len(prompt) for prompt in prompts], batch_size, sort_by_length):
            input_ids, lengths = self._pad([prompts[i] for i in positions])
            with torch.no_grad():
                yield positions, self._answer_logits(input_ids, lengths, answer_ids)

    def score_cached(
        self, texts: Sequence[str], template: PromptTemplate, batch_size: int | None = None, sort_by_length: bool = True
    ) -> np.ndarray:
        """Score inputs in batches after a prefix whose key/value cache is computed once.

        Args:
            texts: Inputs, length N.
            template: The shared prompt.
            batch_size: Inputs per forward pass; default the backend's.
            sort_by_length: Batch inputs of similar token length together, so
                that batches carry little padding. Results keep input order.

        Returns:
            Answer logits, shape ``(N, len(template.answers))``.
        """
        self._load()
        logits = np.zeros((len(texts), len(template.answers)))
        for positions, rows in self._cached_batches(texts, template, batch_size or self.batch_size, sort_by_length):
            logits[positions] = rows
        return logits

    def score_full(
        self,
        texts: Sequence[str],
        templates: Sequence[PromptTemplate],
        batch_size: int | None = None,
        sort_by_length: bool = True,
    ) -> np.ndarray:
        """Score inputs that each have their own template, in right-padded batches of whole prompts.

        Used when templates differ per input (retrieved few-shot examples), so
        no key/value prefix can be shared.

        Args:
            texts: Inputs, length N.
            templates: One template per input, length N, all with the same answers.
            batch_size: Inputs per forward pass; default the backend's.
            sort_by_length: As in :meth:`score_cached`.

        Returns:
            Answer logits, shape ``(N, number of answers)``.

        Raises:
            ValueError: When the templates do not share the same answers.
        """
        self._load()
        logits = np.zeros((len(texts), len(templates[0].answers) if templates else 0))
        for positions, rows in self._full_batches(texts, templates, batch_size or self.batch_size, sort_by_length):
            logits[positions] = rows
        return logits

    def _classify_uncached(self, texts: Sequence[str], template: PromptTemplate, on_result) -> None:
        self._classify_uncached_each(texts, [template] * len(texts), on_result)

    def _classify_uncached_each(self, texts: Sequence[str], templates: Sequence[PromptTemplate], on_result) -> None:
        """Score uncached inputs in batches of similar length; one shared template uses the prefix cache.

        Each batch's results go to ``on_result`` (and so to the cache) before
        the next batch runs, so an interrupted run keeps every finished batch.
        ``latency_ms`` is the batch's wall time divided by its size; the first
        batch of a shared template also carries the prefix's computation.
        """
        self._load()
        texts, templates = list(texts), list(templates)
        shared = len({template.fingerprint() for template in templates}) == 1
        if shared and self.use_prefix_cache:
            batches = self._cached_batches(texts, templates[0], self.batch_size, sort_by_length=True)
        elif shared:
            batches = (
                (positions, self.score_plain([texts[i] for i in positions], templates[0]))
                for positions in _batches([len(text) for text in texts], self.batch_size, sort_by_length=False)
            )
        else:
            batches = self._full_batches(texts, templates, self.batch_size, sort_by_length=True)
        bar = tqdm(total=len(texts), desc=f"{self.model.split(':')[-1]} scoring", leave=False)
        started = time.monotonic()
        for positions, logits in batches:
            elapsed_ms = 1000.0 * (time.monotonic() - started) / len(positions)
            probabilities = softmax(logits)
            for offset, position in enumerate(positions):
                label = int(np.argmax(logits[offset]))
                on_result(
                    position,
                    CachedResponse(
                        raw_reply=templates[position].answers[label],
                        label=label,
                        probabilities=tuple(float(p) for p in probabilities[offset]),
                        prompt_tokens=len(self._encode(templates[position], texts[position])),
                        completion_tokens=0,
                        latency_ms=elapsed_ms,
                        request_id=None,
                        created_at=time.time(),
                    ),
                )
            bar.update(len(positions))
            started = time.monotonic()
        bar.close()


def _batches(lengths: Sequence[int], batch_size: int, sort_by_length: bool) -> list[list[int]]:
    """Split positions ``0 .. len(lengths) - 1`` into batches of at most ``batch_size``.

    With ``sort_by_length`` the positions are ordered by length (longest
    first, ties in input order) before they are cut, so each batch holds
    inputs of similar length and pads little.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i]) if sort_by_length else list(range(len(lengths)))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of an ``(N, K)`` array, in float64."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=1, keepdims=True)
