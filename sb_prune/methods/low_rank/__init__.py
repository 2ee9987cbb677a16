"""Low rank (Emili et al. 2023): the layer, its converter and hook.

Authors
 * sb_prune developers
"""
