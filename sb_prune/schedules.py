"""Schedules under their public name (``sb_prune.schedules``).

Hparams files write ``!new:sb_prune.schedules.Incremental``; the
schedules live in :mod:`sb_prune.training.schedules`.

Authors
 * sb_prune developers
"""

from sb_prune.training.schedules import (
    AtStart,
    BaseSchedule,
    Gradual,
    Incremental,
    OneShot,
    Ramp,
    Schedule,
    make_schedule,
)

__all__ = [
    "AtStart",
    "BaseSchedule",
    "Gradual",
    "Incremental",
    "OneShot",
    "Ramp",
    "Schedule",
    "make_schedule",
]
