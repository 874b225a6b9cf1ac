"""The local provider: any transformers causal LM directory, bundled models included.

Two ways to answer:

- **generate**: batched decoding with left padding, greedy or sampled. Requests that carry a
  seed share a batch whatever their seeds, temperatures and top_p: each row samples from
  its own generator (`_seeded`), so its answer depends on its request alone;
- **score** (the request carries `labels`): rank each label by the log-likelihood of the
  label tokens after the prompt. It is always a valid label and costs one forward pass.

Timing: a batch's wall time divided by its size is each completion's `latency_s` (seconds
per example: what the batch costs, shared). `ttft_s` is per request, what a client of that
batch waits for its first token: from the start of the batch's pass until that token
exists. Every row's first token comes out of the same prefill, so each row gets the whole
prefill time, not a share of it; a scored answer exists whole only once the batch's scoring
passes end, so its ttft_s is that wall time.

Scoring reuses the KV cache of the prompt prefix shared by a batch (a few-shot teacher
prompt is mostly the same 300+ tokens for every question), and computes the output layer
only at the label positions: Gemma's 262k-token vocabulary makes full logits the slowest
part of a forward pass otherwise.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from still.errors import ModelError
from still.models._chat import answer_token_ids, prompt_token_ids, render_prompt
from still.models._provider import isolate_failures, model_folder, register_provider
from still.models._seeded import SeededSampler, is_greedy, is_seeded_sampling, model_top_k
from still.types import Completion, Message, Request, SamplingParams, Usage

if TYPE_CHECKING:
    pass

MIN_PREFIX = 16
"""A shared prefix shorter than this is not worth caching."""

PASS_TOKENS = 16384
"""The most tokens a forward pass over a batch may hold, padding included (rows x its
longest row), unless one row is longer alone. A batch is padded to its longest row, so one
outlier costs the whole batch its length: in SMS spam, a CSV record the file's stray quotes
merged is an 8,996-token "message" that made seven 100-token ones cost as much as it. Typical
batches (8 rows of a few hundred tokens) stay whole; such a row gets a pass of its own."""


class LocalProvider:
    """A transformers model on CPU (or CUDA when present), loaded once."""

    def __init__(self, name: str, path: Path, device: str | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = name
        self.path = Path(path)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer: Any = AutoTokenizer.from_pretrained(self.path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # typed Any: transformers' generated stubs don't model generate()'s return shapes
        auto: Any = AutoModelForCausalLM  # its stubs mistype from_pretrained's first argument
        self.model: Any = auto.from_pretrained(self.path, dtype=torch.float32)
        self.model.to(self.device).eval()
        self._prefix: tuple[list[int], Any] | None = None
        self.pass_tokens = PASS_TOKENS  # padded tokens a forward pass may hold (`_passes`)

    # -- prompts -------------------------------------------------------------------------
    def render(self, messages: Sequence[Message]) -> str:
        """The prompt text: the chat template when the model has one, else plain text."""
        return render_prompt(self.tokenizer, messages)

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        """Token ids of the rendered prompt."""
        return prompt_token_ids(self.tokenizer, self.render(messages))

    def label_ids(self, prompt: str, label: str) -> list[int]:
        """Tokens of a label as the continuation of `prompt`."""
        return answer_token_ids(self.tokenizer, prompt, label)

    # -- the Provider method -------------------------------------------------------------
    def complete(self, requests: Sequence[Request]) -> list[Completion]:
        """Answer a batch: scored requests together, generated ones grouped by parameters
        and output schema (one constrained-decoding grammar per forward pass)."""
        results: dict[int, Completion] = {}
        scored = [i for i, r in enumerate(requests) if r.labels]
        for idx in self._passes(requests, scored):
            _answer(requests, idx, self._score, results)
        groups: dict[tuple[tuple[str, SamplingParams], str], list[int]] = {}
        for i, r in enumerate(requests):
            if not r.labels:
                schema = json.dumps(r.json_schema, sort_keys=True) if r.json_schema else ""
                groups.setdefault((_batch_key(r.params), schema), []).append(i)
        for group in groups.values():
            for idx in self._passes(requests, group):
                _answer(requests, idx, self._generate, results)
        return [results[i] for i in range(len(requests))]

    def _passes(self, requests: Sequence[Request], idx: list[int]) -> list[list[int]]:
        """`idx` in forward passes of at most `pass_tokens` padded tokens (`padded_passes`):
        a request's length is its prompt's tokens, plus `max_tokens` when generated."""
        if len(idx) < 2:
            return [idx] if idx else []
        lengths = [
            len(self.prompt_ids(requests[i].messages))
            + (0 if requests[i].labels else requests[i].params.max_tokens)
            for i in idx
        ]
        return [[idx[k] for k in p] for p in padded_passes(lengths, self.pass_tokens)]

    # -- scoring -------------------------------------------------------------------------
    def _score(self, batch: list[Request]) -> list[Completion]:
        """Score every label of every request in two passes over a shared prefix cache.

        Pass 1 runs each prompt's suffix (after the cached shared prefix) once and gives the
        first label token's log-probability. Pass 2 repeats each prompt's cache once per
        label and runs the remaining label tokens. A 6-label question costs its prompt once
        plus a few label tokens, instead of six full prompts.
        """
        import torch

        start = time.perf_counter()
        prompts = [self.render(r.messages) for r in batch]
        ids = [self.prompt_ids(r.messages) for r in batch]
        labels: list[tuple[str, ...]] = []
        label_ids: list[list[list[int]]] = []
        for r, p in zip(batch, prompts, strict=True):
            assert r.labels is not None
            labels.append(r.labels)
            toks = [self.label_ids(p, lab) for lab in r.labels]
            for lab, t in zip(r.labels, toks, strict=True):
                if not t:
                    raise ValueError(f"label {lab!r} tokenizes to nothing")
            label_ids.append(toks)
        prefix_len, prefix = self._prefix_cache(ids)
        pad = self.tokenizer.pad_token_id
        dev = self.device

        # pass 1: the prompt suffixes, left-padded so every row ends at the same column
        suffixes = [x[prefix_len:] for x in ids]
        width = max(len(x) for x in suffixes)
        inp = torch.tensor([[pad] * (width - len(x)) + x for x in suffixes])
        smask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in suffixes])
        positions = (prefix_len + smask.cumsum(-1) - 1).clamp(min=prefix_len)
        mask = torch.cat([torch.ones(len(batch), prefix_len, dtype=smask.dtype), smask], dim=1)
        kv = None
        if prefix is not None:
            kv = copy.deepcopy(prefix)
            kv.batch_repeat_interleave(len(batch))
        with torch.inference_mode():
            out = self.model(
                input_ids=inp.to(dev),
                attention_mask=mask.to(dev),
                position_ids=positions.to(dev),
                past_key_values=kv,
                use_cache=True,
                logits_to_keep=1,
            )
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1).cpu()
        scores = [
            {lab: float(first[b, t[0]]) for lab, t in zip(labels[b], label_ids[b], strict=True)}
            for b in range(len(batch))
        ]

        # pass 2: the rest of each label, one row per (request, label), on a copy of its cache
        rows = [(b, k) for b in range(len(batch)) for k in range(len(labels[b]))]
        rest = max(len(label_ids[b][k]) for b, k in rows) - 1
        if rest > 0:
            cache = out.past_key_values
            cache.batch_select_indices(torch.tensor([b for b, _ in rows], device=dev))
            tails = [label_ids[b][k][:-1] for b, k in rows]
            inp2 = torch.tensor([t + [pad] * (rest - len(t)) for t in tails])
            tmask = torch.tensor([[1] * len(t) + [0] * (rest - len(t)) for t in tails])
            mask2 = torch.cat([mask[[b for b, _ in rows]], tmask], dim=1)
            pos2 = positions[[b for b, _ in rows], -1:] + 1 + torch.arange(rest)
            with torch.inference_mode():
                out2 = self.model(
                    input_ids=inp2.to(dev),
                    attention_mask=mask2.to(dev),
                    position_ids=pos2.to(dev),
                    past_key_values=cache,
                    use_cache=True,
                )
            logp = torch.log_softmax(out2.logits.float(), dim=-1).cpu()
            for row, (b, k) in enumerate(rows):
                tok_ids = label_ids[b][k]
                # the logits at tail position j predict label token j + 1
                extra = sum(float(logp[row, j, tok_ids[j + 1]]) for j in range(len(tok_ids) - 1))
                scores[b][labels[b][k]] += extra
        wall = time.perf_counter() - start
        outs = []
        for b, r in enumerate(batch):
            best = max(scores[b], key=lambda lab: scores[b][lab])
            outs.append(
                Completion(
                    request=r,
                    request_hash=r.key(),
                    text=best,
                    finish_reason="stop",
                    usage=Usage(
                        prompt_tokens=len(ids[b]),
                        completion_tokens=len(label_ids[b][labels[b].index(best)]),
                    ),
                    latency_s=wall / len(batch),
                    # the answer, first token included, exists when the batch's passes end
                    ttft_s=wall,
                    label_logprobs=scores[b],
                )
            )
        return outs

    def _prefix_cache(self, ids: list[list[int]]) -> tuple[int, Any]:
        """KV cache of the prefix every prompt of the batch shares (kept across batches)."""
        import torch

        limit = min(len(x) for x in ids) - 1  # every row keeps at least one token
        if self._prefix is not None:
            pre, cache = self._prefix
            if len(pre) <= limit and all(x[: len(pre)] == pre for x in ids):
                return len(pre), cache
        n = 0
        while n < limit and all(x[n] == ids[0][n] for x in ids):
            n += 1
        if n < MIN_PREFIX:
            return 0, None
        pre = ids[0][:n]
        with torch.inference_mode():
            out = self.model(
                input_ids=torch.tensor([pre], device=self.device), use_cache=True, logits_to_keep=1
            )
        self._prefix = (pre, out.past_key_values)
        return n, out.past_key_values

    # -- generation ----------------------------------------------------------------------
    def stream(
        self, req: Request, usage: list[Usage] | None = None, finish: list[str] | None = None
    ) -> Iterator[str]:
        """Yield one request's answer as it is generated (for streaming servers).

        Decoding runs in a worker thread; text arrives as the tokenizer can decode it. A stop
        sequence ends the stream at its first occurrence, and decoding with it (so a stopped
        or abandoned stream frees the model at once). When the stream ends, its token
        counts are appended to `usage` and its finish reason ("stop", or "length" when
        max_tokens cut the answer) to `finish`, if given.

        Raises:
            Exception: whatever decoding raised, once the text before it is yielded; the
                stream always ends (the worker thread ends the streamer however it stops).
        """
        import threading

        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        params = req.params
        prompt = self.prompt_ids(req.messages)
        ids = torch.tensor([prompt], device=self.device)
        generated = [0]
        last: list[int] = []  # the last generated token id

        class Counting(TextIteratorStreamer):
            def put(self, value: Any) -> None:
                if not self.next_tokens_are_prompt:
                    generated[0] += int(value.numel())
                    last[:] = value.reshape(-1)[-1:].tolist()
                super().put(value)  # type: ignore[no-untyped-call]

        done = threading.Event()

        class Abandoned(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kw: Any) -> bool:
                return done.is_set()

        streamer = Counting(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs: dict[str, Any] = {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "max_new_tokens": params.max_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([Abandoned()]),
        }
        kwargs.update(self._decoding([req])[0])
        failed: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(**kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
                failed.append(exc)
                # generate() ends the streamer only when it returns
                streamer.end()  # type: ignore[no-untyped-call]

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        text = ""
        ended = False  # the streamer delivered its end signal
        cut = -1
        try:
            for piece in streamer:
                text += piece
                cut = min((text.find(s) for s in params.stop if s and s in text), default=-1)
                if cut >= 0:
                    yield piece[: len(piece) - (len(text) - cut)]
                    break
                if piece:
                    yield piece
            else:
                ended = True
        finally:
            done.set()
            if not ended:  # stopped early: let decoding wind down, dropping its text
                for _ in streamer:
                    pass
            worker.join()
            if usage is not None:
                usage.append(Usage(prompt_tokens=len(prompt), completion_tokens=generated[0]))
            if finish is not None:
                cut_short = cut < 0 and generated[0] >= params.max_tokens
                finish.append("length" if cut_short and last[0] not in self._eos() else "stop")
        if failed and cut < 0:
            raise failed[0]

    def _eos(self) -> set[int]:
        """Token ids that end an answer."""
        eos = set(_as_list(self.model.generation_config.eos_token_id))
        return eos | {self.tokenizer.eos_token_id}

    def _decoding(
        self, batch: list[Request], record: bool = False
    ) -> tuple[dict[str, Any], SeededSampler | None]:
        """generate() arguments that decode `batch` (one schema, and one set of parameters
        unless every request samples from its own seed), and the seeded sampler among them,
        if any (with `record`, it keeps the warped scores each token was sampled from)."""
        from transformers import LogitsProcessorList

        from still.models._constrained import json_schema_processor

        processors: list[Any] = []
        schema = batch[0].json_schema
        if schema is not None:
            processors.append(json_schema_processor(self.tokenizer, schema, len(batch)))
        sampler = None
        if is_seeded_sampling(batch[0].params):
            # greedy over warped scores plus each row's own Gumbel noise (after the schema's
            # mask, where generate() puts its warpers): a sample that depends on its row alone
            top_k = model_top_k(self.model.generation_config)
            sampler = SeededSampler([r.params for r in batch], top_k, self.device, record)
            processors.append(sampler)
            kwargs: dict[str, Any] = {"do_sample": False}
        else:
            kwargs = _sampling(batch[0].params)
        if processors:
            kwargs["logits_processor"] = LogitsProcessorList(processors)
        return kwargs, sampler

    def _generate(self, batch: list[Request]) -> list[Completion]:
        """Decode a batch that shares its output schema and its parameters (all but seed,
        temperature and top_p when every request samples from its own seed) in one
        generate() call; each completion's ttft_s is the batch's prefill wall time (module
        docstring)."""
        import torch
        from transformers import StoppingCriteriaList

        params = batch[0].params
        start = time.perf_counter()
        ids = [self.prompt_ids(r.messages) for r in batch]
        width = max(len(x) for x in ids)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids], device=self.device)
        mask = torch.tensor(
            [[0] * (width - len(x)) + [1] * len(x) for x in ids], device=self.device
        )
        logprobs = any(r.logprobs for r in batch)
        gen_kwargs, sampler = self._decoding(batch, record=logprobs)
        if params.stop:
            # decoding stops at a stop string (each row on its own), instead of running to
            # max_tokens and cutting the text afterwards
            gen_kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        first_token = _FirstToken()
        with torch.inference_mode():
            out = self.model.generate(
                stopping_criteria=StoppingCriteriaList([first_token]),
                input_ids=input_ids,
                attention_mask=mask,
                max_new_tokens=params.max_tokens,
                pad_token_id=pad,
                return_dict_in_generate=True,
                # a seeded sampler's scores carry its noise: its own record has them without
                output_scores=logprobs and sampler is None,
                output_logits=any(r.logprobs and r.top_logprobs for r in batch),
                **gen_kwargs,
            )
        new = out.sequences[:, width:].cpu()
        token_lp = None
        scores = tuple(sampler.warped) if sampler is not None and logprobs else out.scores
        if scores:
            token_lp = self.model.compute_transition_scores(
                out.sequences, scores, normalize_logits=True
            ).cpu()
        elapsed = (time.perf_counter() - start) / len(batch)
        # the batch's prefill gives every row its first token at once: each row waited for
        # all of it (a per-request time, not a share like latency_s)
        ttft = (first_token.at or time.perf_counter()) - start
        eos = self._eos()
        outs = []
        for b, r in enumerate(batch):
            toks = new[b].tolist()
            n = next((i for i, t in enumerate(toks) if t in eos), None)
            finish = "stop" if n is not None else "length"
            toks = toks[:n] if n is not None else [t for t in toks if t != pad]
            text = self.tokenizer.decode(toks, skip_special_tokens=True)
            for s in params.stop:
                if s and s in text:
                    text, finish = text[: text.index(s)], "stop"
            lps = tokens = top = None
            if r.logprobs and token_lp is not None:
                lps = tuple(float(x) for x in token_lp[b, : len(toks)])
                tokens = tuple(self.tokenizer.decode([t]) for t in toks)
                if r.top_logprobs and out.logits is not None:
                    top = self._top_k(out.logits, b, len(toks), r.top_logprobs)
            outs.append(
                Completion(
                    request=r,
                    request_hash=r.key(),
                    text=text.strip(),
                    finish_reason=finish,
                    usage=Usage(prompt_tokens=len(ids[b]), completion_tokens=len(toks)),
                    latency_s=elapsed,
                    ttft_s=ttft,
                    token_logprobs=lps,
                    tokens=tokens,
                    top_logprobs=top,
                )
            )
        return outs

    def _top_k(self, logits: Any, row: int, n: int, k: int) -> tuple[dict[str, float], ...]:
        """The k most likely next tokens and their log-probabilities at each of the first
        n steps of one row, from the model's raw logits (its own distribution, before any
        sampling transform), as {decoded token: logprob}. Compact: k entries a step, never
        a vocabulary-sized array."""
        import torch

        steps = []
        for step in logits[:n]:
            lp = torch.log_softmax(step[row].float(), dim=-1)
            values, ids = lp.topk(k)
            entry: dict[str, float] = {}
            for v, i in zip(values.tolist(), ids.tolist(), strict=True):
                entry.setdefault(self.tokenizer.decode([i]), float(v))
            steps.append(entry)
        return tuple(steps)


def padded_passes(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Positions of `lengths` grouped into passes, shortest first, so that each pass's rows
    times its longest row stay within `budget` tokens (a row longer than that alone gets a
    pass to itself). Shortest first makes each new row its pass's longest, so the padding
    is checked once per row."""
    passes: list[list[int]] = []
    current: list[int] = []
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        if current and (len(current) + 1) * lengths[i] > budget:
            passes.append(current)
            current = []
        current.append(i)
    if current:
        passes.append(current)
    return passes


def _answer(
    requests: Sequence[Request],
    idx: list[int],
    fn: Callable[[list[Request]], list[Completion]],
    results: dict[int, Completion],
) -> None:
    """Answer `requests[idx]` with `fn` into `results`, one bad request failing alone."""
    outs = isolate_failures([requests[i] for i in idx], fn)
    results.update(zip(idx, outs, strict=True))


class _FirstToken:
    """A stopping criterion that never stops: it notes when generate() produced its first
    token (criteria are checked after every step), to measure time to first token."""

    def __init__(self) -> None:
        self.at: float | None = None

    def __call__(self, input_ids: Any, scores: Any, **kw: Any) -> Any:
        import torch

        if self.at is None:
            self.at = time.perf_counter()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def _batch_key(params: SamplingParams) -> tuple[str, SamplingParams]:
    """What requests must share to be decoded in one batch: greedy ones ignore their seed,
    seeded sampled ones their seed, temperature and top_p (each row samples with its own);
    unseeded sampled ones share all their parameters (generate() samples with one set)."""
    if is_greedy(params):
        return "greedy", params.model_copy(update={"seed": None, "temperature": 0.0, "top_p": 1.0})
    if is_seeded_sampling(params):
        return "seeded", params.model_copy(update={"seed": None, "temperature": 1.0, "top_p": 1.0})
    return "sampled", params


def _sampling(params: SamplingParams) -> dict[str, Any]:
    """generate() arguments for greedy or unseeded sampled decoding (seeded sampling is
    `SeededSampler`'s). top_p 0 is greedy too, as OpenAI has it: its nucleus is the most
    likely token alone."""
    if is_greedy(params):
        return {"do_sample": False}
    return {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p}


def _as_list(x: int | list[int] | None) -> list[int]:
    if x is None:
        return []
    return list(x) if isinstance(x, list) else [x]


_LOADED: dict[str, LocalProvider] = {}


def local_path(ref: str) -> Path:
    """The model directory behind `local:<bundled name or path>` (or a bare path).

    `vllm:<bundled name or path>` names the same folder: a student answered by vLLM is
    still trained from its weights with transformers. Converts a bundled model on first
    use. Raises ModelError naming the known models.
    """
    from still.models._bundled import BUNDLED, bundled_path

    target = ref.removeprefix("local:").removeprefix("vllm:")
    if target in BUNDLED:
        return bundled_path(target)
    if (folder := model_folder(ref)) is not None:
        return folder
    known = ", ".join(f"local:{n}" for n in sorted(BUNDLED))
    raise ModelError(
        f"unknown local model {target!r}: not a bundled name ({known}) "
        "nor a directory with a config.json"
    )


@register_provider("local", "a bundled model by name, or a Hugging Face model directory")
def local_factory(ref: str) -> LocalProvider:
    """Build (once per process) the provider for `local:<name or path>`."""
    if ref not in _LOADED:
        _LOADED[ref] = LocalProvider(ref, local_path(ref))
    return _LOADED[ref]
