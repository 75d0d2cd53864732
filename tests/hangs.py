"""Time limits for hung tests, shared by the watchdog (conftest.py) and the tests that start
a Python subprocess.

XLA:CPU can wedge a computation for good (conftest.py). A hang gets two more tries, a failure
never (pyproject.toml: pytest-rerunfailures with `reruns = 2` and `only_rerun` matching
`TimeoutExpired` only; a worker the watchdog ends is rerun as a crashed xdist worker).
"""

from __future__ import annotations

import os

# A test (setup and teardown included) still running after this long has its stacks
# printed and its worker ends. The longest test takes ~100 s on 2 cores. 0 turns it off.
WATCHDOG_S = float(os.environ.get("CRASHGYM_TEST_HANG_SECONDS", "600"))

# Below WATCHDOG_S, so a hung subprocess is killed by subprocess.run (TimeoutExpired, rerun
# up to twice) before the watchdog ends the worker that waits on it and leaves the child behind.
SUBPROCESS_TIMEOUT_S = 540
