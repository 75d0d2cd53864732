"""Test-session setup: JAX's persistent compilation cache in .jax_cache at the repository root.

Compiling the market step is most of the suite's run time; the cache makes a second
run (and the second xdist worker compiling the same program) cheap.
"""

from __future__ import annotations

import os
import pathlib

import jax

_CACHE = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(pathlib.Path(__file__).resolve().parent.parent / ".jax_cache")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
