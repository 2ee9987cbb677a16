"""I3D dynamic depth (Peng et al. 2023): gated encoders and gate analysis.

Authors
 * sb_prune developers
"""
