"""Attention whose heads and units can be pruned, and its converter.

Authors
 * sb_prune developers
"""
