"""Every hook :class:`sb_prune.PruningBrain` runs, under one public name.

Hparams files list them under ``prune_hooks``, for example
``!new:sb_prune.hooks.CriterionPruning``. Each hook lives with its method
(``sb_prune.methods.<method>.hook``) or analysis; the method table
(:mod:`sb_prune.methods.table`) names them, and this module exports them
(imported on first use).

Authors
 * sb_prune developers
"""

from sb_prune.core.names import lazy_namespace
from sb_prune.methods.table import public_classes

#: The methods' hooks, and the bases hooks extend.
_HOOKS = {
    **public_classes("hooks"),
    "PruningHook": "sb_prune.training.hooks.PruningHook",
    "OnceHook": "sb_prune.training.hooks.OnceHook",
    "prune_by_plan": "sb_prune.training.hooks.prune_by_plan",
}
__all__ = sorted(_HOOKS)
__getattr__ = lazy_namespace(__name__, _HOOKS)
