"""Model families: one module per family, everything the methods ask of it.

Each module registers the module types of one model family with a
:class:`~sb_prune.core.registry.Family` (their specs: groups, removal,
structure records, members for criteria) and gives the family's answers
to the methods (where adaptive-dropout masks go, how its attention becomes
prunable, the residual branches an I3D gate wraps, how a layer cut keeps
the model consistent) or its reasons for refusing them:

* :mod:`~sb_prune.families.speechbrain_transformer` (and the attention
  and feed-forward blocks the SpeechBrain families share),
  :mod:`~sb_prune.families.conformer`,
  :mod:`~sb_prune.families.branchformer`;
* :mod:`~sb_prune.families.whisper` (Hugging Face, encoder and decoder),
  :mod:`~sb_prune.families.ssl` (Hugging Face wav2vec2, HuBERT, WavLM);
* :mod:`~sb_prune.families.torch_transformer`
  (``torch.nn.TransformerEncoderLayer``);
* :mod:`~sb_prune.families.sb_prune_modules` (the modules the methods
  build).

The registry loads them on its first look-up through the
``sb_prune.model_families`` entry points of ``setup.py``; a package of your
own adds a family the same way (see CONTRIBUTING.md). No other part of
sb_prune names a family's classes.

Authors
 * sb_prune developers
"""
