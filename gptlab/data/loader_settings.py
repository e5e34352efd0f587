"""The check of ``data.num_workers``, kept free of Lightning so config validation can
run it before Lightning is imported (``gptlab/training/preflight.py``) and the DataModule can run
the same check when it is built directly."""

from __future__ import annotations

from gptlab.data.sources import DataError


def check_num_workers(value: object, error: type[Exception] = DataError) -> None:
    """Raise ``error`` unless ``value`` is null or a whole number >= 0."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise error(
            f"data.num_workers={value!r} must be a whole number >= 0 (0 loads in the training process), "
            "or null to choose automatically (0 on a CPU, up to 4 per GPU)"
        )
