"""Training with pruning: PruningBrain, the hook base, schedules.

Also the auxiliary losses that reach the gradient without touching a
recipe, and the one adapter to SpeechBrain's private API.

Authors
 * sb_prune developers
"""
