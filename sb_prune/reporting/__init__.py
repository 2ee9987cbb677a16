"""Reporting: run summaries, the report renderer, MACs and latency.

Authors
 * sb_prune developers
"""
