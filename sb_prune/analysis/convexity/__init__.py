"""Graph and Euclidean convexity of class regions, per layer, and its hook.

Authors
 * sb_prune developers
"""
