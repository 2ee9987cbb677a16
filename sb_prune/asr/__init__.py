"""The CTC Conformer ASR task, packaged: what the ASR recipe runs.

``brain`` holds its Brain (:class:`~sb_prune.asr.brain.ASR`, a
:class:`sb_prune.PruningBrain`), ``data`` its data preparation and
datasets, ``recipe`` a whole run (train, then test every split) and
``compress`` the compression of a trained model (``sb-prune compress``,
also :func:`sb_prune.compress`). ``recipes/LibriSpeech/ASR/train.py`` is a
thin user of ``recipe``, and the recipe's hparams files ship with the
wheel, so an installed sb_prune compresses without a checkout.

Authors
 * sb_prune developers
"""
