"""Whisper folders that SpeechBrain's ``WhisperASR`` loads (public names).

The implementation is the Whisper family's
(:mod:`sb_prune.families.whisper.folders`); this module is the deploy
namespace users and older exported folders (whose ``hyperparams.yaml``
names ``sb_prune.deploy.whisper.rebuild_encoder``) import from.

Authors
 * sb_prune developers
"""

from sb_prune.families.whisper.folders import (
    ENCODER_STRUCTURE,
    ENCODER_WEIGHTS,
    export_whisper,
    load_exported_encoder,
    load_exported_whisper,
    rebuild_decoder,
    rebuild_encoder,
    whisper_asr_hparams,
    whisper_encoder,
)

__all__ = [
    "ENCODER_STRUCTURE",
    "ENCODER_WEIGHTS",
    "export_whisper",
    "load_exported_encoder",
    "load_exported_whisper",
    "rebuild_decoder",
    "rebuild_encoder",
    "whisper_asr_hparams",
    "whisper_encoder",
]
