"""The progress bar long loops show on stderr, or nothing when it is switched off."""

from __future__ import annotations

import sys
from typing import Any


def progress_bar(total: int, desc: str, unit: str, enabled: bool = True) -> Any:
    """A tqdm bar over ``total`` units (on stderr, redrawn at most twice a second), or None."""
    if not enabled or not total:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, mininterval=0.5)
