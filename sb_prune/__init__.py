"""sb_prune: make SpeechBrain Transformer and Conformer models smaller.

The public names: ``PruningBrain`` (the Brain that prunes between
epochs), ``convert`` (insert sb_prune modules into a model) and
``compress`` (prune a trained dense ASR model and export it, what
``sb-prune compress`` runs). They are imported lazily, so that light
commands (such as ``sb-prune synth``) do not pay for importing torch and
SpeechBrain.

Authors
 * sb_prune developers
"""

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "PruningBrain": "sb_prune.training.brain",
    "compress": "sb_prune.asr.compress",
    "convert": "sb_prune.methods.convert",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'sb_prune' has no attribute {name!r}")
