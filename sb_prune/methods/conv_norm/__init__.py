"""Group normalisation for the Conformer convolution module.

Authors
 * sb_prune developers
"""
