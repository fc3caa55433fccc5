"""The hash of what the operator rendered into an object it keeps in shape.

Written into the object's ``aidc.io/spec-hash`` annotation: a pass compares the hash it renders
now with the one the watch saw, and rewrites the object only when they differ (the API server's
defaulting never counts as drift). Compute and network both keep objects in shape, so it lives below them.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def spec_hash(obj: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]
