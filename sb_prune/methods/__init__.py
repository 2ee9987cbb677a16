"""One package per method: its modules, converter and hook together.

attention (prunable heads), adaptive_dropout, criteria, low_rank,
layer_cut, i3d (dynamic depth) and conv_norm (group norm); convert is the
one entry point hparams files use (``sb_prune.convert``).

Authors
 * sb_prune developers
"""
