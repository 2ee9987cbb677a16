"""Drop-in modules of sb_prune, each usable from hyperpyyaml.

For example ``!new:sb_prune.nn.LowRankLinear``. Each module lives with its
method (``sb_prune.methods.<method>``); the method table
(:mod:`sb_prune.methods.table`) names them, and this package exports them
(imported on first use).

Authors
 * sb_prune developers
"""

from sb_prune.core.names import lazy_namespace
from sb_prune.methods.table import public_classes

_MODULES = public_classes("modules")
__all__ = list(_MODULES)
__getattr__ = lazy_namespace(__name__, _MODULES)
