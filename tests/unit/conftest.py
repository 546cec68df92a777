"""Unit-test setup: make the `corpus` helper module importable as `from corpus import ...`."""

import sys
from pathlib import Path

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
