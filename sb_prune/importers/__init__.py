"""Bring models from other formats into SpeechBrain (CTranslate2 Whisper).

Authors
 * sb_prune developers
"""
