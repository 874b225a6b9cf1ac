"""Several training processes from one call: `still train --processes N`.

A trainer wrapped by `launched` first has its setup and the memory its processes will
need checked (still.train._parallel, _memory), before any model is loaded: the memory
with rows of max_length and, should that not fit, with the rows the recipe's own
tokenization makes of its data (its `lengths`, with the student's tokenizer alone). This
is the one place that knows both the call (model, data, processes) and the recipe, and a
refusal here comes before any process starts. One process asked for, the trainer then
runs as it is. Asked for several (`train.processes`, by default one per GPU), the call
starts that many fresh Python processes (multiprocessing, spawn), each running the same
trainer as one rank of an accelerate process group (rendezvous on a free local port; gloo
between CPU processes). Each loads the model and data itself and trains on its share of every batch
(still.train._common); only the first writes. The calling process waits: it shows the
first process's progress through `on_step`, relays its log lines, and returns the
TrainResult it saved.

A process that fails or is killed ends the run: the others are stopped (they would wait
for it forever in the next gradient exchange) and the error is one line. A recipe's own
error (no usable rows, a tokenizer mismatch) is raised as itself; a process that died
says which, how, and that a rerun resumes from the last checkpoint. The processes end
with the calling one too, should it be killed.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import pickle
import queue
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec

from still.errors import StillError, TrainError
from still.tasks import TrainSpec
from still.train._common import TrainResult
from still.train._memory import check_fits
from still.train._parallel import check_setup, launched_world, processes

log = logging.getLogger("still.train")

P = ParamSpec("P")

GRACE_S = 3.0
"""How long a process gets to stop on SIGTERM before it is killed."""

RowLengths = Callable[[Any, Path, TrainSpec], list[int] | None]
"""A recipe's `lengths(tokenizer, data, spec)`: the tokens of each row of `data` it will
train on (the longest sequence a row puts through the forward pass), tokenized as the
recipe does with the student's `tokenizer`; None when it cannot tell."""


class TrainingProcessFailed(TrainError):
    """One of several training processes died or failed: the run stopped."""


def launched(
    lengths: RowLengths | None = None,
) -> Callable[[Callable[P, TrainResult]], Callable[P, TrainResult]]:
    """A trainer, checked and run in as many processes as its `spec` asks for (see the
    module); `lengths`: its rows' tokens (None: reckoned at max_length)."""

    def wrap(trainer: Callable[P, TrainResult]) -> Callable[P, TrainResult]:
        signature = inspect.signature(trainer)

        @functools.wraps(trainer)
        def run(*args: P.args, **kwargs: P.kwargs) -> TrainResult:
            call = signature.bind(*args, **kwargs)
            if launched_world() > 1:  # already one of several: checked by its launcher
                return trainer(*args, **kwargs)
            spec, n = call.arguments["spec"], processes(call.arguments["spec"])
            check_setup(spec)
            base, data = call.arguments["base_model"], call.arguments["data"]
            rows = None if lengths is None else _lengths_reader(lengths, base, data, spec)
            check_fits(base, spec, n, call.arguments.get("teacher_model"), lengths=rows)
            if n == 1:
                return trainer(*args, **kwargs)
            return _launch(run, dict(call.arguments), n)

        return run

    return wrap


def _lengths_reader(
    lengths: RowLengths, base_model: Path, data: Path, spec: TrainSpec
) -> Callable[[], list[int] | None]:
    """`lengths` of `data` with the student's tokenizer, when called (check_fits calls it
    only for a training that does not fit at max_length)."""

    def read() -> list[int] | None:
        from transformers import AutoTokenizer

        return lengths(AutoTokenizer.from_pretrained(base_model), Path(data), spec)

    return read


def _launch(trainer: Callable[..., TrainResult], arguments: dict[str, Any], n: int) -> TrainResult:
    """Run `trainer(**arguments)` in `n` processes; the first one's saved result."""
    import multiprocessing
    from multiprocessing.connection import wait

    on_step = arguments.pop("on_step", None)
    spawn = multiprocessing.get_context("spawn")  # fresh interpreters: no forked threads
    events = spawn.Queue()
    log.info("training in %d processes (%s)", n, arguments["spec"].sharding)
    port = _free_port()
    workers = [
        spawn.Process(target=_worker, args=(rank, trainer, arguments, n, port, os.getpid(), events))
        for rank in range(n)
    ]
    errors: list[tuple[int, BaseException]] = []
    try:
        for w in workers:
            w.start()
        while any(w.exitcode is None for w in workers):
            _relay(events, on_step, errors)
            codes = [w.exitcode for w in workers]  # who failed first, before any is stopped
            if any(code not in (None, 0) for code in codes):
                _stop(workers)
                time.sleep(0.2)  # the failed processes' last events
                _relay(events, on_step, errors)
                raise _failure(codes, errors, n)
            wait([w.sentinel for w in workers if w.exitcode is None], timeout=0.2)
        _relay(events, on_step, errors)
        if any(w.exitcode for w in workers):
            raise _failure([w.exitcode for w in workers], errors, n)
    finally:
        _stop(workers)
    info = json.loads((Path(arguments["out_dir"]) / "train.json").read_text())
    return TrainResult(**info)


def _stop(workers: list[Any]) -> None:
    """End the processes still running: SIGTERM, then SIGKILL after GRACE_S."""
    for w in workers:
        if w.is_alive():
            w.terminate()
    deadline = time.monotonic() + GRACE_S
    for w in workers:
        if w.pid is not None:
            w.join(max(0.0, deadline - time.monotonic()))
            if w.is_alive():
                w.kill()
                w.join()


def _failure(
    codes: list[int | None], errors: list[tuple[int, BaseException]], n: int
) -> BaseException:
    """The error to raise for a failed run: the recipe's own (a user error, said as is);
    else a process killed by a signal (dead before the others could notice); else the
    first error a process reported."""
    for _, error in errors:
        if isinstance(error, StillError):
            return error
    rank, what = 0, "failed"
    killed = [r for r, code in enumerate(codes) if code is not None and code < 0]
    if killed:
        rank = killed[0]
        what = f"was killed ({_signal_name(-(codes[rank] or 0))})"
    elif errors:
        rank, first = errors[0]
        what = (
            f"failed ({type(first).__name__}: {str(first).splitlines()[0] if str(first) else ''})"
        )
    else:
        rank = next((r for r, code in enumerate(codes) if code), 0)
        what = f"exited with code {codes[rank]}"
    return TrainingProcessFailed(
        f"training process {rank + 1} of {n} {what}, so the run stopped; run it again to "
        "resume from the last checkpoint (train.save_every), or with --processes 1"
    )


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _relay(
    events: Any,
    on_step: Callable[[int, int, float], None] | None,
    errors: list[tuple[int, BaseException]],
) -> None:
    """Hand on what the processes reported: progress, log lines, errors."""
    while True:
        try:
            kind, rank, payload = events.get_nowait()
        except queue.Empty:
            return
        except Exception as exc:  # noqa: BLE001 - a report this process cannot unpickle
            kind, rank, payload = "error", -1, RuntimeError(f"an unreadable report ({exc})")
        if kind == "step" and on_step is not None:
            on_step(*payload)
        elif kind == "log":
            name, level, message = payload
            logging.getLogger(name).log(level, "%s", message)
        elif kind == "error":
            errors.append((rank, payload))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _LogRelay(logging.Handler):
    """Sends a worker's log records to the calling process."""

    def __init__(self, events: Any, rank: int) -> None:
        super().__init__(logging.INFO)
        self.events, self.rank = events, rank

    def emit(self, record: logging.LogRecord) -> None:
        self.events.put(("log", self.rank, (record.name, record.levelno, record.getMessage())))


def _worker(
    rank: int,
    trainer: Callable[..., TrainResult],
    arguments: dict[str, Any],
    n: int,
    port: int,
    parent: int,
    events: Any,
) -> None:
    """One training process: rank `rank` of `n`, in a fresh interpreter."""
    import torch

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(n), RANK=str(rank),
        LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(n), TRANSFORMERS_VERBOSITY="error",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
    )  # fmt: skip
    if not torch.cuda.is_available():  # the cores shared out, not every process on all
        threads = max(1, (os.cpu_count() or 1) // n)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()
    root = logging.getLogger("still")
    root.setLevel(logging.INFO)
    root.propagate = False
    root.addHandler(_LogRelay(events, rank) if rank == 0 else logging.NullHandler())
    if rank == 0:  # the others log the same lines and make the same steps
        arguments["on_step"] = lambda *step: events.put(("step", rank, step))
    try:
        trainer(**arguments)
    except BaseException as exc:  # noqa: BLE001 - every failure is reported, then exit 1
        events.put(("error", rank, _picklable(exc)))
        if not isinstance(exc, StillError):  # a bug: keep its traceback
            traceback.print_exc()
        events.close()
        events.join_thread()  # the report is sent before the process ends
        sys.exit(1)


def _picklable(exc: BaseException) -> BaseException:
    """`exc` if it survives the trip to the calling process, else its text."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - any failure to pickle: send the text instead
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def _exit_with(parent: int) -> None:
    """End this process when the calling one is gone (killed, say)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)
