"""Layer cuts: the rules that choose layers, and the hook.

Authors
 * sb_prune developers
"""
