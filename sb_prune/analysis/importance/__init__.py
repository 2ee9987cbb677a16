"""Layer importance: ambient and critical layers, weight change, stability.

Authors
 * sb_prune developers
"""
