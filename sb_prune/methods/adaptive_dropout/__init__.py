"""Adaptive dropout pruning (Kubo et al. 2024): layer, converter, plan, hook.

Authors
 * sb_prune developers
"""
