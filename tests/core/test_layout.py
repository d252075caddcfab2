"""The layout of tests/ (see tests/README.md): test modules live in the subject directories,
module basenames are unique (pytest's "prepend" import mode imports each test module and its
directory's helpers by basename), and the hypothesis profile of tests/conftest.py reaches every
directory."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from hypothesis import settings

TESTS = Path(__file__).resolve().parents[1]


def test_module_basenames_are_unique():
    names = Counter(p.stem for p in TESTS.rglob("*.py")
                    if p.name not in ("conftest.py", "__init__.py"))
    assert [name for name, n in names.items() if n > 1] == []


def test_test_modules_live_in_subject_directories():
    assert sorted(p.name for p in TESTS.glob("test_*.py")) == []
    assert all(len(p.relative_to(TESTS).parts) == 2 for p in TESTS.rglob("test_*.py"))


def test_the_hypothesis_profile_of_tests_conftest_applies_here():
    profile = os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev")
    assert settings().max_examples == {"dev": 25, "ci": 100}[profile]
    assert settings().deadline is None
