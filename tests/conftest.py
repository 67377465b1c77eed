"""Suite-wide settings: the Hypothesis profile CI runs with."""

from __future__ import annotations

import os

from hypothesis import settings
from hypothesis.errors import InvalidArgument

try:  # Hypothesis >= 6.131 ships a "ci" profile (no deadline, no database) and loads it on CI by itself
    _parent = settings.get_profile("ci")
except InvalidArgument:
    _parent = settings.get_profile("default")
settings.register_profile("ci", parent=_parent, derandomize=True, print_blob=True, deadline=None, database=None)
"""CI: the same examples on every run (a red build is reproducible, never a lucky draw) and, for a
failure, the blob that replays it with ``@reproduce_failure``."""

if os.environ.get("CI") == "true":
    settings.load_profile("ci")
