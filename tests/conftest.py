"""Test-session setup: JAX's persistent compilation cache in .jax_cache at the repository root,
and single-threaded Eigen on XLA:CPU.

Compiling the market step is most of the suite's run time; the cache makes a second
run (and the second xdist worker compiling the same program) cheap.

XLA:CPU's multi-threaded Eigen pool can wedge with jax 0.10: a computation never finishes
and the process sits idle (seen in a fresh-clone run, in the PPO training loop's
device_get). ``--xla_cpu_multi_thread_eigen=false`` avoids it (the same workaround as
PyAutoLabs/PyAutoFit#1528). Set before JAX initialises its backend; notebooks (nbmake
kernels) and the subprocess tests inherit it from the environment.
"""

from __future__ import annotations

import os
import pathlib

NO_EIGEN_THREADS = "--xla_cpu_multi_thread_eigen=false"
if NO_EIGEN_THREADS not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + NO_EIGEN_THREADS).strip()

import jax  # noqa: E402

_CACHE = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(pathlib.Path(__file__).resolve().parent.parent / ".jax_cache")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
