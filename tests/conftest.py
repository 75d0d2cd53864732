"""Test-session setup: JAX's persistent compilation cache in .jax_cache at the repository root,
single-threaded Eigen on XLA:CPU, and a hang watchdog.

Compiling the market step is most of the suite's run time; the cache makes a second
run (and the second xdist worker compiling the same program) cheap.

XLA:CPU's multi-threaded Eigen pool can wedge with jax 0.10: a computation never finishes
and the process sits idle (seen in a fresh-clone run, in the PPO training loop's
device_get). ``--xla_cpu_multi_thread_eigen=false`` avoids it (the same workaround as
PyAutoLabs/PyAutoFit#1528). Set before JAX initialises its backend; notebooks (nbmake
kernels) and the subprocess tests inherit it from the environment.
"""

from __future__ import annotations

import faulthandler
import os
import pathlib
from collections.abc import Iterator
from typing import IO

import pytest

from hangs import WATCHDOG_S  # tests/hangs.py

NO_EIGEN_THREADS = "--xla_cpu_multi_thread_eigen=false"
if NO_EIGEN_THREADS not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + NO_EIGEN_THREADS).strip()

import jax  # noqa: E402

_CACHE = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(pathlib.Path(__file__).resolve().parent.parent / ".jax_cache")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


# Hang watchdog. A CI run once sat for over an hour on one test, with no output, until the
# job was killed. A test (setup and teardown included) still running after WATCHDOG_S
# (tests/hangs.py) has the Python stacks of all its threads written out and its process
# exits. Under xdist that is a crashed worker: xdist replaces it, pytest-rerunfailures runs
# the test again (up to twice), and the controller prints the stacks in the terminal
# summary. Without xdist the run ends there (pytest's fd capture holds stderr, so the dump
# cannot go to the terminal): the stacks are in .pytest_hangs/main-<pid>.txt.
HANG_DIR = pathlib.Path(__file__).resolve().parent.parent / ".pytest_hangs"
_hang_file: IO[str] | None = None


def _worker(config: pytest.Config) -> str | None:
    """This xdist worker's id, or None in the controller or a run without xdist."""
    return getattr(config, "workerinput", {}).get("workerid")


def pytest_sessionstart(session: pytest.Session) -> None:
    if _worker(session.config) is None and HANG_DIR.is_dir():
        for old in HANG_DIR.glob("*.txt"):
            old.unlink()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    global _hang_file
    if WATCHDOG_S <= 0:
        yield
        return
    if _hang_file is None:
        HANG_DIR.mkdir(exist_ok=True)
        name = _worker(item.config) or "main"
        _hang_file = open(HANG_DIR / f"{name}-{os.getpid()}.txt", "w")  # noqa: SIM115 (open for the session)
    _hang_file.seek(0)
    _hang_file.truncate()
    _hang_file.write(f"{item.nodeid}\n")
    _hang_file.flush()
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True, file=_hang_file)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if _worker(config) is not None or not HANG_DIR.is_dir():
        return
    for dump in sorted(HANG_DIR.glob("*.txt")):
        text = dump.read_text()
        if text.count("\n") > 1:  # more than the test's name: the watchdog fired
            terminalreporter.section(f"hang watchdog: a test ran past {WATCHDOG_S:.0f} s ({dump.stem})")
            terminalreporter.write(text)
