"""The Trainer the ``trainer`` config group builds: Lightning's, minus gptlab's own keys.

``gptlab/conf/trainer/*.yaml`` passes every key to ``lightning.Trainer``, so a gptlab setting
kept there (``skip_nonfinite``, read by ``train()`` for ``TrainingGuard``) would make
Lightning refuse the call wherever the group is instantiated. This builder takes those
keys off first; everything else is Lightning's own argument.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import lightning as L


# Keys under `trainer:` that gptlab reads itself (train() and validate.py use the same list).
GPTLAB_TRAINER_KEYS = ("skip_nonfinite", "compile")


def lightning_trainer(**kwargs: Any) -> L.Trainer:
    """``lightning.Trainer(**kwargs)`` without the keys in ``GPTLAB_TRAINER_KEYS``."""
    import lightning as L  # here, so reading GPTLAB_TRAINER_KEYS does not import Lightning

    for key in GPTLAB_TRAINER_KEYS:
        kwargs.pop(key, None)
    return L.Trainer(**kwargs)
