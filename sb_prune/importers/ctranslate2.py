"""Whisper from CTranslate2 to a Hugging Face folder (public names).

The implementation is the Whisper family's
(:mod:`sb_prune.families.whisper.ctranslate2`); hparams files use
``!apply:sb_prune.importers.ctranslate2.hugging_face_whisper``.

Authors
 * sb_prune developers
"""

from sb_prune.families.whisper.ctranslate2 import (
    BINARY_VERSIONS,
    convert_whisper,
    hugging_face_whisper,
    read_model_bin,
    whisper_config,
    whisper_state_dict,
)

__all__ = [
    "BINARY_VERSIONS",
    "convert_whisper",
    "hugging_face_whisper",
    "read_model_bin",
    "whisper_config",
    "whisper_state_dict",
]
