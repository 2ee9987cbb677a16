"""Offline synthetic speech data in the LibriSpeech layout.

``synthesize_corpus`` writes a small LibriSpeech-format corpus with the
espeak-ng engine shipped in ``espeakng-loader``, with per-utterance
labels (keyword, template, voice...) that ``read_labels`` reads back.
Command line: ``sb-prune synth --out DIR``. Real corpora (LibriSpeech-layout
trees anywhere under a folder, the Free Spoken Digit Dataset) are prepared
by :mod:`sb_prune.data.real_speech`.

Authors
 * sb_prune developers
"""

from sb_prune.data.espeak import Espeak
from sb_prune.data.grammar import KEYWORDS, TEMPLATES, VOCABULARY
from sb_prune.data.synthesize import (
    LABEL_COLUMNS,
    SPLITS,
    corpus_config,
    is_complete,
    read_labels,
    summarize_labels,
    synthesize_corpus,
)

__all__ = [
    "Espeak",
    "KEYWORDS",
    "LABEL_COLUMNS",
    "SPLITS",
    "TEMPLATES",
    "VOCABULARY",
    "corpus_config",
    "is_complete",
    "read_labels",
    "summarize_labels",
    "synthesize_corpus",
]
