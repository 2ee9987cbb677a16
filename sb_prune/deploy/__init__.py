"""Deployment: pretrained-model folders, standalone checkpoints, TorchScript.

Also the stripping of training-only layers before inference (strip).

Authors
 * sb_prune developers
"""
