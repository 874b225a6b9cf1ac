"""Where a python grader's child process runs: in a bubblewrap sandbox, or not at all.

A task's grader source is untrusted code. A hand-made guard (patching `socket`, or
`unshare` alone) failed silently where namespaces were blocked and left the parent's
`/proc/<pid>/environ`, the store and the run folder in reach, so the child now runs in
bubblewrap (`bwrap`, a Debian package), a small, widely used sandbox tool:

- new user, network, PID, IPC and UTS namespaces (required: if bwrap cannot create them,
  nothing runs), all capabilities dropped, killed when its parent dies;
- a root filesystem holding only read-only binds of the system (`/usr`, `/etc`, the
  `/bin`-style links) and of the interpreter's prefixes (the venv and the Python it was
  made from): the home folder, the project, the store, the run folders and any sockets
  under `/run` or `/tmp` are not there at all, and nothing visible can be written;
- a fresh `/proc` (only the sandbox's own processes), a minimal `/dev`, and a private
  size-limited tmpfs at `/tmp` as the working directory and HOME;
- an empty environment apart from PATH, LANG and HOME. bwrap itself is started with
  that environment too, since its PID-1 reaper inside the sandbox keeps bwrap's own.

Where bwrap is missing or cannot create the namespaces (not Linux, unprivileged user
namespaces disabled), python graders refuse to run, with one line naming the fix and
the explicit opt-out `STILL_UNSAFE_PYTHON_GRADERS=1`. Opting out runs the child directly
with the weaker guards of `_python.py` (empty environment, temporary working directory,
patched sockets, resource limits) and logs a warning once per process: code that means
harm can then reach the network, write files and read other processes' environments.

Whatever the mode, `scrub` removes the values of secret-looking environment variables
from grader error text before it is stored or shown.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from functools import cache
from typing import Literal

from still.errors import StillError
from still.settings import scrub

UNSAFE_ENV = "STILL_UNSAFE_PYTHON_GRADERS"
"""Set to 1 to run python graders without bubblewrap (see the module docstring)."""

SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "nix")
"""Top-level folders bound read-only into the sandbox (or linked, where they are links)."""

PROBE_TIMEOUT_S = 10.0
"""How long the one-off check that bwrap works may take."""

log = logging.getLogger(__name__)

__all__ = ["UNSAFE_ENV", "SandboxUnavailable", "mode", "problem", "scrub"]

Mode = Literal["bwrap", "unsafe"]


class SandboxUnavailable(StillError, RuntimeError):
    """Python graders cannot be sandboxed here and the user did not opt out."""


def child_env(home: str) -> dict[str, str]:
    """The whole environment a grader's child gets (and bwrap itself, which runs it)."""
    bin_dir = os.path.join(sys.prefix, "bin")
    return {"PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": home}


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _root_args() -> list[str]:
    """Binds for the system folders and the interpreter's prefixes, read-only."""
    args: list[str] = []
    bound: list[str] = []
    for name in SYSTEM_DIRS:
        path = "/" + name
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
            bound.append(path)
    prefixes = (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix)
    for prefix in prefixes:
        for path in dict.fromkeys((os.path.abspath(prefix), os.path.realpath(prefix))):
            if path != "/" and os.path.isdir(path) and not _under(path, bound):
                args += ["--ro-bind", path, path]
                bound.append(path)
    return args


def bwrap_command(argv: Sequence[str], tmp_bytes: int | None) -> list[str]:
    """`argv` wrapped in bwrap (see the module docstring).

    Args:
        argv: the child's command; its programs must live in a bound folder.
        tmp_bytes: size of the private /tmp (None: tmpfs's default, where bwrap is too old
            for `--size`).
    """
    bwrap = shutil.which("bwrap") or "bwrap"
    size = ["--size", str(tmp_bytes)] if tmp_bytes is not None else []
    env: list[str] = []
    for name, value in child_env("/tmp").items():
        env += ["--setenv", name, value]
    return [
        bwrap,
        "--unshare-user", "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent", "--cap-drop", "ALL",
        *_root_args(),
        "--proc", "/proc", "--dev", "/dev", *size, "--tmpfs", "/tmp", "--chdir", "/tmp",
        "--clearenv", *env,
        "--", *argv,
    ]  # fmt: skip


def _try(tmp_bytes: int | None) -> str | None:
    """None if a trivial child runs under bwrap, else why not (bwrap's last line)."""
    try:
        done = subprocess.run(
            bwrap_command([sys.executable, "-I", "-c", "pass"], tmp_bytes),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=child_env("/"),
            cwd="/",
            timeout=PROBE_TIMEOUT_S,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bwrap failed to start ({type(exc).__name__})"
    if done.returncode == 0:
        return None
    lines = done.stderr.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else f"bwrap exited with code {done.returncode}"


@cache
def _probe() -> tuple[str | None, bool]:
    """(why bwrap cannot run graders here or None, whether it takes `--size`); checked
    once per process."""
    if sys.platform != "linux":
        return "bubblewrap needs Linux", False
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed", False
    if _try(64 << 20) is None:
        return None, True
    # bwrap before 0.7 (and setuid installs) refuse --size: the tmpfs is then unbounded.
    problem = _try(None)
    return (None, False) if problem is None else (f"bwrap cannot sandbox here: {problem}", False)


def problem() -> str | None:
    """Why python graders cannot be sandboxed on this host, or None if they can."""
    return _probe()[0]


def tmp_size_supported() -> bool:
    """Whether this bwrap can bound the sandbox's /tmp (`--size`)."""
    return _probe()[1]


def unsafe_opt_in() -> bool:
    """Whether the user explicitly allowed unsandboxed python graders."""
    return os.environ.get(UNSAFE_ENV, "").strip() == "1"


@cache
def _warn_unsafe(why: str) -> None:
    log.warning(
        "python graders run WITHOUT a sandbox (%s=1; %s): grader code can reach the network, "
        "write files and read other processes' environments",
        UNSAFE_ENV,
        why,
    )


def mode() -> Mode:
    """How python graders run here: "bwrap", or "unsafe" where the user opted out.

    Raises:
        SandboxUnavailable: bwrap cannot run them and `STILL_UNSAFE_PYTHON_GRADERS` is not 1.
    """
    why = problem()
    if why is None:
        return "bwrap"
    if unsafe_opt_in():
        _warn_unsafe(why)
        return "unsafe"
    raise SandboxUnavailable(
        f"python graders run only inside a bubblewrap sandbox and {why}: install it "
        f"(apt-get install bubblewrap) on a host that allows unprivileged user namespaces, "
        f"or set {UNSAFE_ENV}=1 to run them unsandboxed (no filesystem, /proc or network "
        f"isolation)"
    )


