"""The CTC Conformer ASR task, packaged: what the ASR recipe runs.

``brain`` holds its Brain (:class:`~sb_prune.asr.brain.ASR`, a
:class:`sb_prune.PruningBrain`), ``data`` its data preparation and
datasets, and ``recipe`` a whole run (train, then test every split).
``recipes/LibriSpeech/ASR/train.py`` is a thin user of ``recipe``.

Authors
 * sb_prune developers
"""
