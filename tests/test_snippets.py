"""The README's usage snippets (Gymnasium, Stable-Baselines3, JAX, the core), run as written.

Each snippet is the ```python block that follows a `<!-- snippet: NAME -->` marker in
README.md, so the README cannot drift from what is tested.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
_BLOCK = re.compile(r"<!-- snippet: (\w+) -->\s*```python\n(.*?)```", re.S)


def readme_snippets() -> dict[str, str]:
    return {name: code for name, code in _BLOCK.findall(README.read_text())}


def test_readme_has_the_snippets():
    assert {"gymnasium", "sb3", "jax", "core"} <= set(readme_snippets())


@pytest.mark.parametrize("name", ["gymnasium", "sb3", "jax", "core"])
def test_readme_snippet(name):
    if name == "sb3":
        pytest.importorskip("stable_baselines3")
    code = readme_snippets()[name]
    exec(compile(code, f"<README {name} snippet>", "exec"), {"__name__": "__readme__"})
