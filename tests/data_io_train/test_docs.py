"""Every ```python block of README.md and docs/*.md runs as pasted.

Each block runs alone in a fresh interpreter (a subprocess, cwd a new temporary directory, the
repository's fnn and compat first on the path), so a block that relies on names from an earlier
one, on files of the repository or on the current directory fails here. A block that is not
meant to run (a summary of signatures) is marked by the line right above its fence:
``<!-- not-run: the reason -->``; the reason is the skip message. A block that goes on from the
one before it in the same file (a worked example in steps) is marked
``<!-- continues: what it uses -->``: it runs after that block, in the same interpreter.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_RUN = re.compile(r"<!--\s*not-run:\s*(.+?)\s*-->")
CONTINUES = re.compile(r"<!--\s*continues:\s*(.+?)\s*-->")


def python_blocks(path: Path) -> list[tuple[int, str, str | None]]:
    """(line of the opening fence, code, the not-run reason or None) per ```python block."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start = i
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
            if end is None:
                raise AssertionError(f"{path.name}:{start + 1}: a ```python block is not closed")
            above = lines[start - 1] if start > 0 else ""
            marked = NOT_RUN.search(above)
            code = "\n".join(lines[start + 1:end]) + "\n"
            if CONTINUES.search(above):
                if not blocks:
                    raise AssertionError(f"{path.name}:{start + 1}: a 'continues' block with "
                                         f"no block before it")
                code = blocks[-1][1] + "\n" + code
            blocks.append((start + 1, code, marked.group(1) if marked else None))
            i = end
        i += 1
    return blocks


BLOCKS = [pytest.param(code, reason, id=f"{path.relative_to(ROOT)}:{line}")
          for path in DOCS for line, code, reason in python_blocks(path)]


def test_the_docs_have_python_blocks():
    assert len(BLOCKS) >= 3  # the README's two examples and the contract's training step


def test_not_run_markers_sit_on_python_blocks():
    """A not-run or continues marker must be right above a ```python fence (else it marks
    nothing)."""
    for path in DOCS:
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if NOT_RUN.search(line) or CONTINUES.search(line):
                assert i + 1 < len(lines) and lines[i + 1].strip() == "```python", \
                    f"{path.name}:{i + 1}: a not-run marker that is not above a ```python block"


@pytest.mark.parametrize("code, reason", BLOCKS)
def test_python_block_runs(code: str, reason: str | None, tmp_path: Path) -> None:
    if reason is not None:
        pytest.skip(f"marked not-run: {reason}")
    if "load_digits" in code:
        pytest.importorskip("sklearn")  # the digits come with scikit-learn (the demo extra)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]), MPLBACKEND="Agg")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, text=True,
                         capture_output=True, timeout=300)
    assert run.returncode == 0, f"the block failed:\n{code}\n--- stderr ---\n{run.stderr}"
