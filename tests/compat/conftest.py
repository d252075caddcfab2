"""Make ``import compat`` find the package, not this test directory.

pytest puts ``tests/`` on sys.path (for tests/conftest.py), where ``compat/`` — this directory,
which has no ``__init__.py`` — looks like a namespace package. Under ``python -m pytest`` the
repository root is on sys.path too and the real package wins; under a bare ``pytest`` only the
editable install's finder knows it, and it is asked after the namespace package was found. With
the root on sys.path, the regular package is found in either case.
"""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
