"""sb_prune: make SpeechBrain Transformer and Conformer models smaller.

Authors
 * sb_prune developers
"""

__version__ = "0.1.0"
