"""JSON-schema constrained decoding: four libraries against unconstrained greedy decoding.

SmolLM2-135M-Instruct (the bundled student) answers short instructions that ask for JSON of
three schemas (an enum and a bounded integer; a string and an array of up to 3 strings; a
nested object). Every prompt is decoded greedily once unconstrained (the baseline) and once
per library, in this process, with the same transformers `generate()` call. Each library
plugs into the same LogitsProcessor: per row, feed it the last sampled token, let it write
the allowed-token bitmask, and apply that mask with one shared torch op, so the columns
compare the libraries' matchers and nothing else.

Columns: tokenizer preparation (paid once per tokenizer) and grammar compile time per
schema; seconds per prompt; the time spent inside the processor per generated token
(accepting the token, computing the mask, masking: the overhead, measured directly); the
same replayed afterwards on the very token sequences without the model (best of 7 passes,
warm caches: the number to trust on a busy machine), and that as a share of a baseline
decode step; the decode step measured end to end (between consecutive logits, so without the
prompt's prefill) with its difference and ratio to the baseline's (noisier: the runs
generate different tokens and lengths); how many outputs are JSON valid against the schema
(`jsonschema`), also after cutting the text to its first `{` ... last `}`; how many
checkable fields are right (the sentiment label; the person's age and city); generated
tokens; outputs cut off by max_new_tokens. A library that fails to import or to work is a
row with the reason. xgrammar, llguidance and outlines-core write the same int32 bitmask;
lm-format-enforcer's token list is packed into it. `still` is the provider's own
`still.models._constrained.json_schema_processor`. Run on a quiet machine:

    .venv/bin/python benchmarks/bench_constrained.py [--prompts 8] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Protocol

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jsonschema
import numpy as np
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LogitsProcessor,
    LogitsProcessorList,
)

from still.models import local_path

MODEL = "local:smollm2-135m-instruct"
REPLAYS = 7

# -- the task: three schemas, realistic instructions ------------------------------------------

SENTIMENT = {
    "type": "object",
    "properties": {
        "label": {"enum": ["positive", "negative", "neutral"]},
        "confidence": {"type": "integer", "minimum": 0, "maximum": 100},
    },
    "required": ["label", "confidence"],
    "additionalProperties": False,
}
KEYWORDS = {
    "type": "object",
    "properties": {
        "topic": {"type": "string", "maxLength": 40},
        "keywords": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3},
    },
    "required": ["topic", "keywords"],
    "additionalProperties": False,
}
PERSON = {
    "type": "object",
    "properties": {
        "person": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"],
            "additionalProperties": False,
        },
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
            "required": ["city", "country"],
            "additionalProperties": False,
        },
    },
    "required": ["person", "address"],
    "additionalProperties": False,
}

REVIEWS = [
    "The battery lasts two full days and the screen is gorgeous.",
    "It stopped working after a week and support never answered.",
    "The package arrived on Tuesday.",
    "Best pizza I have had in years, friendly staff too.",
    "The hotel room was dirty and smelled of smoke.",
    "The meeting has been moved to room 4B.",
    "I love how light this jacket is, and it is warm.",
    "Terrible sound quality, I returned the headphones.",
]
ARTICLES = [
    "The city council approved a new bike lane network across the downtown area.",
    "Researchers found that octopuses can recognise individual human faces.",
    "The central bank raised interest rates by a quarter point to curb inflation.",
    "A new study links daily walking to better sleep in older adults.",
    "The football club signed a young striker from Brazil for a record fee.",
    "Heavy rain caused flooding in several villages along the river.",
    "The company released an open-source library for training language models.",
    "Astronomers spotted a comet that will be visible to the naked eye in May.",
]
PEOPLE = [
    "Maria Lopez, 34, lives in Valencia, Spain.",
    "John Smith is 52 years old and lives in Leeds, England.",
    "Akira Tanaka (27) moved to Osaka, Japan last year.",
    "Fatima Benali, aged 41, is from Casablanca, Morocco.",
    "Lukas Weber, 19, studies in Munich, Germany.",
    "Priya Sharma is 30 and lives in Pune, India.",
    "Olga Ivanova, 65, lives in Kazan, Russia.",
    "Carlos Mendes, 23, is based in Porto, Portugal.",
]


SENTIMENT_GOLD = ["positive", "negative", "neutral", "positive", "negative", "neutral"] + [
    "positive",
    "negative",
]
PEOPLE_GOLD = [(34, "Valencia"), (52, "Leeds"), (27, "Osaka"), (41, "Casablanca")] + [
    (19, "Munich"),
    (30, "Pune"),
    (65, "Kazan"),
    (23, "Porto"),
]


def sentiment_right(answer: Any, k: int) -> bool:
    return bool(answer.get("label") == SENTIMENT_GOLD[k])


def person_right(answer: Any, k: int) -> bool:
    age, city = PEOPLE_GOLD[k]
    person, address = answer.get("person") or {}, answer.get("address") or {}
    return bool(person.get("age") in (age, str(age)) and address.get("city") == city)


@dataclass
class Case:
    name: str
    schema: dict[str, Any]
    instruction: Callable[[str], str]
    inputs: list[str]
    right: Callable[[Any, int], bool] | None = None
    """Whether a parsed answer to input k has the fields a reader can check (label; age+city)."""


CASES = [
    Case(
        "sentiment (enum + integer 0-100)",
        SENTIMENT,
        lambda x: (
            "Classify the sentiment of this review and give your confidence from 0 to 100. "
            'Answer with JSON only, with keys "label" (positive, negative or neutral) and '
            f'"confidence".\nReview: {x}'
        ),
        REVIEWS,
        sentiment_right,
    ),
    Case(
        "keywords (string + array of <= 3 strings)",
        KEYWORDS,
        lambda x: (
            "Give the topic of this news sentence and up to 3 keywords. Answer with JSON only, "
            f'with keys "topic" (a short string) and "keywords" (a list).\nSentence: {x}'
        ),
        ARTICLES,
    ),
    Case(
        "person (nested objects)",
        PERSON,
        lambda x: (
            "Extract the person and where they live. Answer with JSON only, in the form "
            '{"person": {"name": ..., "age": ...}, "address": {"city": ..., "country": ...}}.'
            f"\nText: {x}"
        ),
        PEOPLE,
        person_right,
    ),
]

# -- one LogitsProcessor, one small adapter per library -----------------------------------------


class RowMatcher(Protocol):
    def accept(self, token: int) -> bool: ...
    def fill(self, bitmask: torch.Tensor, row: int) -> None: ...


class Library(Protocol):
    name: str

    def load(self) -> None: ...
    def setup(self, tokenizer: Any) -> None: ...
    def compile(self, schema: dict[str, Any]) -> Any: ...
    def matcher(self, compiled: Any) -> RowMatcher: ...


def apply_bitmask(scores: torch.Tensor, bitmask: torch.Tensor, vocab: int) -> None:
    """Set to -inf every logit whose bit is 0 (bit j of word k is token 32k+j), and every
    logit past the tokenizer's vocabulary (model vocabularies are often padded)."""
    bits = (bitmask.unsqueeze(-1) >> torch.arange(32, dtype=torch.int32)) & 1
    allowed = bits.view(bitmask.shape[0], -1)[:, :vocab].to(scores.device, torch.bool)
    scores[:, :vocab].masked_fill_(~allowed, float("-inf"))
    scores[:, vocab:] = float("-inf")


class MaskProcessor(LogitsProcessor):
    """Constrains each row with its own matcher; times itself. One per generate() call."""

    def __init__(self, matchers: list[RowMatcher], vocab: int, eos: set[int]) -> None:
        self.matchers = matchers
        self.vocab = vocab
        self.eos = eos
        self.done = [False] * len(matchers)
        self.bitmask = torch.full((len(matchers), (vocab + 31) // 32), -1, dtype=torch.int32)
        self.width: int | None = None
        self.seconds = 0.0
        self.steps = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        start = time.perf_counter()
        if self.width is not None:  # not the first step: feed each live row its last token
            last = input_ids[:, -1].tolist()
            for i, m in enumerate(self.matchers):
                if self.done[i]:
                    continue
                if last[i] in self.eos:
                    self.done[i] = True
                elif not m.accept(last[i]):
                    raise RuntimeError(f"matcher rejected token {last[i]} in row {i}")
        self.width = input_ids.shape[1]
        for i, m in enumerate(self.matchers):
            if not self.done[i]:
                m.fill(self.bitmask, i)
            else:
                self.bitmask[i] = -1  # finished rows: generate() pads them anyway
        apply_bitmask(scores, self.bitmask, self.vocab)
        self.seconds += time.perf_counter() - start
        self.steps += 1
        return scores


class Stamp(LogitsProcessor):
    """Records when each decoding step reaches the logits: the gaps are whole decode steps
    (forward pass + processors + generate's bookkeeping), the prompt's prefill excluded."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.times.append(time.perf_counter())
        return scores


class XGrammar:
    name = "xgrammar"

    def load(self) -> None:
        import xgrammar as xgr

        self.xgr = xgr

    def setup(self, tokenizer: Any) -> None:
        xgr = self.xgr
        self.info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=len(tokenizer))
        self.compiler = xgr.GrammarCompiler(self.info)

    def compile(self, schema: dict[str, Any]) -> Any:
        return self.compiler.compile_json_schema(json.dumps(schema), any_whitespace=False)

    def matcher(self, compiled: Any) -> RowMatcher:
        xgr = self.xgr

        class M:
            def __init__(self) -> None:
                self.m = xgr.GrammarMatcher(compiled)

            def accept(self, token: int) -> bool:
                return bool(self.m.accept_token(token))

            def fill(self, bitmask: torch.Tensor, row: int) -> None:
                self.m.fill_next_token_bitmask(bitmask, row)

        return M()


class LLGuidance:
    name = "llguidance"

    def __init__(self, spaced: bool = False) -> None:
        # compact "," and ":" (llguidance's default) or json.dumps' ", " and ": "
        self.options: dict[str, Any] = {"whitespace_flexible": False}
        if spaced:
            self.options |= {"item_separator": ", ", "key_separator": ": "}

    def load(self) -> None:
        import llguidance
        import llguidance.hf
        import llguidance.torch

        self.llg = llguidance
        self.fill = llguidance.torch.fill_next_token_bitmask

    def setup(self, tokenizer: Any) -> None:
        self.tok = self.llg.hf.from_tokenizer(tokenizer, n_vocab=len(tokenizer))

    def compile(self, schema: dict[str, Any]) -> Any:
        grammar = self.llg.LLMatcher.grammar_from_json_schema(schema, defaults=self.options)
        err = self.llg.LLMatcher.validate_grammar(grammar, self.tok)
        if err:
            raise ValueError(err)
        return grammar

    def matcher(self, compiled: Any) -> RowMatcher:
        llg, tok, fill = self.llg, self.tok, self.fill

        class M:
            def __init__(self) -> None:
                self.m = llg.LLMatcher(tok, compiled)

            def accept(self, token: int) -> bool:
                return bool(self.m.consume_token(token))

            def fill(self, bitmask: torch.Tensor, row: int) -> None:
                fill(self.m, bitmask, row)

        return M()


class OutlinesCore:
    name = "outlines-core"

    def load(self) -> None:
        import outlines_core

        self.oc = outlines_core

    def setup(self, tokenizer: Any) -> None:
        # byte-level BPE: the vocabulary's characters stand for bytes (GPT-2's table)
        byte_of = {c: b for b, c in _bytes_to_unicode().items()}
        special = set(tokenizer.all_special_ids)
        vocab: dict[bytes, list[int]] = {}
        for token, i in tokenizer.get_vocab().items():
            if i in special:
                continue
            try:
                raw = bytes(byte_of[c] for c in token)
            except KeyError:
                raw = token.encode()
            vocab.setdefault(raw, []).append(i)
        self.vocab = self.oc.Vocabulary(tokenizer.eos_token_id, vocab)

    def compile(self, schema: dict[str, Any]) -> Any:
        regex = self.oc.json_schema.build_regex_from_schema(json.dumps(schema))
        return self.oc.Index(regex, self.vocab)

    def matcher(self, compiled: Any) -> RowMatcher:
        oc = self.oc

        class M:
            def __init__(self) -> None:
                self.g = oc.Guide(compiled)

            def accept(self, token: int) -> bool:
                self.g.advance(token, return_tokens=False)
                return True

            def fill(self, bitmask: torch.Tensor, row: int) -> None:
                v = bitmask[row]
                self.g.write_mask_into(v.data_ptr(), v.numel(), v.element_size())

        return M()


class LMFormatEnforcer:
    name = "lm-format-enforcer"

    def load(self) -> None:
        from lmformatenforcer import JsonSchemaParser, TokenEnforcer, TokenEnforcerTokenizerData

        self.parser_cls, self.enforcer_cls = JsonSchemaParser, TokenEnforcer
        self.data_cls = TokenEnforcerTokenizerData

    def setup(self, tokenizer: Any) -> None:
        # its transformers integration imports transformers.tokenization_utils, which
        # transformers 5 removed; this is that module's tokenizer preparation, inlined
        n = len(tokenizer)
        zero = tokenizer.encode("0", add_special_tokens=False)[-1]
        special = set(tokenizer.all_special_ids)
        regular = []
        for i in range(n):
            if i in special:
                continue
            after_zero = tokenizer.decode([zero, i])[1:]
            alone = tokenizer.decode([i])
            regular.append((i, after_zero, len(after_zero) > len(alone)))

        def decode(tokens: list[int]) -> str:
            return str(tokenizer.decode(tokens)).rstrip("\ufffd")

        self.data = self.data_cls(regular, decode, tokenizer.eos_token_id, False, n)
        self.n = n

    def compile(self, schema: dict[str, Any]) -> Any:
        return schema  # the parser is built lazily, per row

    def matcher(self, compiled: Any) -> RowMatcher:
        enforcer = self.enforcer_cls(self.data, self.parser_cls(compiled))
        n = self.n

        class M:
            def __init__(self) -> None:
                self.tokens: list[int] = []

            def accept(self, token: int) -> bool:
                self.tokens.append(token)
                return True

            def fill(self, bitmask: torch.Tensor, row: int) -> None:
                allowed = enforcer.get_allowed_tokens(self.tokens).allowed_tokens
                flags = np.zeros(bitmask.shape[1] * 32, dtype=bool)
                flags[[t for t in allowed if t < n]] = True
                packed = np.packbits(flags, bitorder="little").view(np.int32)
                bitmask[row] = torch.from_numpy(packed)

        return M()


class Still:
    """still's own `json_schema_processor` (llguidance behind it), as the provider uses it."""

    name = "still json_schema_processor"

    def load(self) -> None:
        from still.models import json_schema_processor

        self.make = json_schema_processor

    def setup(self, tokenizer: Any) -> None:
        self.tok = tokenizer
        self.make(tokenizer, {"type": "integer"}, 1)  # prepares (and caches) the tokenizer

    def compile(self, schema: dict[str, Any]) -> Any:
        self.make(self.tok, schema, 1)  # compiles (and caches) the schema
        return schema

    def processor(self, compiled: Any) -> Timed:
        return Timed(self.make(self.tok, compiled, 1))


class Timed(LogitsProcessor):
    """Times another processor, like MaskProcessor times itself."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.steps = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        start = time.perf_counter()
        out: torch.FloatTensor = self.inner(input_ids, scores)
        self.seconds += time.perf_counter() - start
        self.steps += 1
        return out


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (byte-level BPE vocabularies use it)."""
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


# -- running and scoring -------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    error: str = ""
    setup_ms: float = 0.0
    compile_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0
    proc_seconds: float = 0.0
    steps: int = 0
    decode_seconds: float = 0.0
    decode_steps: int = 0
    right: int = 0
    checked: int = 0
    tokens: int = 0
    valid: int = 0
    lenient: int = 0
    cut: int = 0
    prompts: int = 0
    per_case: dict[str, tuple[int, int]] = field(default_factory=dict)
    samples: dict[str, str] = field(default_factory=dict)
    invalid: list[str] = field(default_factory=list)
    runs: list[tuple[Any, torch.Tensor, int]] = field(default_factory=list)
    replay_ms: float = 0.0


def is_valid(text: str, schema: dict[str, Any], lenient: bool = False) -> bool:
    if lenient and "{" in text and "}" in text:
        text = text[text.index("{") : text.rindex("}") + 1]
    try:
        jsonschema.validate(json.loads(text), schema)
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


def generate(
    model: Any, tok: Any, prompt: str, max_new: int, proc: Any, stamp: Stamp
) -> tuple[str, int, bool, torch.Tensor, int]:
    """The answer, its token count, whether max_new_tokens cut it, and the whole sequence
    (prompt + generated tokens, EOS included) with the prompt's length, for `replay`."""
    ids = tok.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    procs = LogitsProcessorList([stamp] + ([proc] if proc is not None else []))
    with torch.inference_mode():
        out = model.generate(
            **ids,
            max_new_tokens=max_new,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
            logits_processor=procs,
        )
    plen = ids["input_ids"].shape[1]
    new = out[0, plen:].tolist()
    stop = next((i for i, t in enumerate(new) if t == tok.eos_token_id), None)
    toks = new[:stop] if stop is not None else new
    seq = out[:, : plen + (stop + 1 if stop is not None else len(new))]
    return tok.decode(toks, skip_special_tokens=True).strip(), len(toks), stop is None, seq, plen


def make_processor(lib: Any, compiled: Any, tok: Any) -> Any:
    if isinstance(lib, Still):
        return lib.processor(compiled)
    return MaskProcessor([lib.matcher(compiled)], len(tok), {tok.eos_token_id})


def replay(lib: Any, res: Result, tok: Any, vocab: int) -> float:
    """One pass of the processor alone over the token sequences it produced, without the
    model: each step gets the input_ids generate() gave it. Seconds per token."""
    total, calls = 0.0, 0
    for compiled, seq, plen in res.runs:
        proc = make_processor(lib, compiled, tok)
        scores = torch.zeros(1, vocab)
        for t in range(seq.shape[1] - plen):
            start = time.perf_counter()
            proc(seq[:, : plen + t], scores)
            total += time.perf_counter() - start
            calls += 1
    return total / calls


def run_all(
    libs: list[tuple[str, Any]], model: Any, tok: Any, n: int, max_new: int
) -> list[Result]:
    """Round-robin: each prompt is decoded by the baseline and every library back to back, so
    a burst of load from elsewhere on the machine hits all of them alike."""
    results = [Result(name) for name, _ in libs]
    for (_, lib), res in zip(libs, results, strict=True):
        if lib is None:
            continue
        try:
            lib.load()
            t = time.perf_counter()
            lib.setup(tok)
            res.setup_ms = (time.perf_counter() - t) * 1000
        except Exception as exc:  # noqa: BLE001 - a broken library is a row in the table, not a crash
            fail(res, exc)
    for case in CASES:
        compiled: list[Any] = []
        for (_, lib), res in zip(libs, results, strict=True):
            compiled.append(None)
            if lib is None or res.error:
                continue
            try:
                t = time.perf_counter()
                compiled[-1] = lib.compile(case.schema)
                res.compile_ms.append((time.perf_counter() - t) * 1000)
            except Exception as exc:  # noqa: BLE001 - as above: a failure is a row
                fail(res, exc)
        for k in range(n):
            prompt = case.instruction(case.inputs[k % len(case.inputs)])
            for (_, lib), res, comp in zip(libs, results, compiled, strict=True):
                if res.error:
                    continue
                try:
                    proc = make_processor(lib, comp, tok) if lib is not None else None
                    stamp = Stamp()
                    t = time.perf_counter()
                    text, count, cut, seq, plen = generate(model, tok, prompt, max_new, proc, stamp)
                    if lib is not None:
                        res.runs.append((comp, seq, plen))
                    res.seconds += time.perf_counter() - t
                    res.decode_seconds += stamp.times[-1] - stamp.times[0]
                    res.decode_steps += len(stamp.times) - 1
                except Exception as exc:  # noqa: BLE001 - as above: a failure is a row
                    fail(res, exc)
                    continue
                if proc is not None:
                    res.proc_seconds += proc.seconds
                    res.steps += proc.steps
                res.tokens += count
                res.cut += cut
                res.prompts += 1
                good = is_valid(text, case.schema)
                lenient = is_valid(text, case.schema, lenient=True)
                if case.right is not None:
                    res.checked += 1
                    if lenient:  # the fields of the first {...} block
                        answer = json.loads(text[text.index("{") : text.rindex("}") + 1])
                        res.right += case.right(answer, k % len(case.inputs))
                ok, total = res.per_case.get(case.name, (0, 0))
                res.per_case[case.name] = (ok + good, total + 1)
                res.valid += good
                res.lenient += lenient
                if not good:
                    res.invalid.append(f"{case.name.split(' ')[0]}: {text[:200]!r}")
                if k == 0:
                    res.samples[case.name] = text
        print(f"  done: {case.name}", flush=True)
    # replay passes round-robin too, best of REPLAYS per library: a burst of load elsewhere
    # spoils some passes of every library rather than all passes of one
    vocab = int(model.config.vocab_size)
    for _ in range(REPLAYS):
        for (_, lib), res in zip(libs, results, strict=True):
            if lib is not None and not res.error:
                try:
                    ms = replay(lib, res, tok, vocab) * 1000
                    res.replay_ms = min(res.replay_ms or ms, ms)
                except Exception as exc:  # noqa: BLE001 - as above: a failure is a row
                    fail(res, exc)
    return results


def fail(res: Result, exc: Exception) -> None:
    res.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
    traceback.print_exc()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=8, help="prompts per schema")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--only", nargs="*", help="library names to run (default: all)")
    args = ap.parse_args()

    path = local_path(MODEL)
    tok = AutoTokenizer.from_pretrained(path)
    auto: Any = AutoModelForCausalLM
    model = auto.from_pretrained(path, dtype=torch.float32).eval()
    print(
        f"{MODEL}: {args.prompts} prompts x {len(CASES)} schemas, greedy, batch 1, "
        f"max_new_tokens={args.max_new_tokens}, torch {torch.__version__}, "
        f"threads={torch.get_num_threads()}",
        flush=True,
    )
    generate(model, tok, CASES[0].instruction(REVIEWS[0]), 8, None, Stamp())  # warm-up

    libs: list[tuple[str, Any]] = [
        ("unconstrained", None),
        ("xgrammar", XGrammar()),
        ("llguidance", LLGuidance()),
        ("llguidance", LLGuidance(spaced=True)),
        ("outlines-core", OutlinesCore()),
        ("lm-format-enforcer", LMFormatEnforcer()),
        ("still", Still()),
    ]
    libs = [(n, lib) for n, lib in libs if not args.only or n == "unconstrained" or n in args.only]
    for i, (name, lib) in enumerate(libs):
        if lib is not None:
            try:
                label = f"{name} {version(name)}"
            except PackageNotFoundError:
                label = f"{name} (not installed)"
            if isinstance(lib, LLGuidance) and "item_separator" in lib.options:
                label += ', separators ", " ": "'
            if isinstance(lib, Still):
                label = f"still json_schema_processor (llguidance {version('llguidance')})"
            libs[i] = (label, lib)
    print("running: " + ", ".join(n for n, _ in libs), flush=True)
    results = run_all(libs, model, tok, args.prompts, args.max_new_tokens)

    base = results[0]
    base_ms = base.decode_seconds / max(base.decode_steps, 1) * 1000
    print()
    print(
        "| library | tokenizer setup ms | compile ms per schema | s/prompt | "
        f"processor ms/token | same, replayed without the model (best of {REPLAYS}) | "
        "share of a baseline decode step | decode ms/token | "
        "overhead ms/token | ratio | valid JSON | valid if extracted | fields right | tokens | "
        "cut at max |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if r.error:
            print(f"| {r.name} | failed: {r.error} | | | | | | | | | | | | | |")
            continue
        ms = r.decode_seconds / max(r.decode_steps, 1) * 1000
        comp = " / ".join(f"{c:.1f}" for c in r.compile_ms) or "-"
        proc = f"{r.proc_seconds / r.steps * 1000:.2f}" if r.steps else "-"
        again = f"{r.replay_ms:.2f}" if r.steps else "-"
        share = f"{r.replay_ms / base_ms:.1%}" if r.steps else "-"
        setup = f"{r.setup_ms:.0f}" if r.compile_ms else "-"
        print(
            f"| {r.name} | {setup} | {comp} | {r.seconds / r.prompts:.2f} | {proc} | {again} | "
            f"{share} | "
            f"{ms:.1f} | {ms - base_ms:+.2f} | {ms / base_ms:.3f}x | "
            f"{r.valid}/{r.prompts} | {r.lenient}/{r.prompts} | {r.right}/{r.checked} | "
            f"{r.tokens} | {r.cut} |"
        )
    print()
    print("valid per schema: " + ", ".join(c.name for c in CASES))
    for r in results:
        if not r.error:
            print(f"  {r.name}: " + ", ".join(f"{a}/{b}" for a, b in r.per_case.values()))
    print()
    print("invalid answers of the constrained runs:")
    for r in results[1:]:
        for text in r.invalid:
            print(f"  {r.name} | {text}")
    print()
    print("first answer per schema:")
    for r in results:
        for case, text in r.samples.items():
            print(f"  {r.name} | {case.split(' ')[0]} | {text[:150]!r}")


if __name__ == "__main__":
    main()
