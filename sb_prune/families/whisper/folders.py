"""Whisper folders that SpeechBrain's ``WhisperASR`` loads, dense or pruned.

A folder holds a Hugging Face Whisper model (``config.json``,
``model.safetensors``, tokenizer and feature-extractor files) and a
``hyperparams.yaml`` for ``speechbrain.inference.ASR.WhisperASR``
(:func:`whisper_asr_hparams`). :func:`export_whisper` writes a compressed
encoder's folder: ``model.safetensors`` holds only the weights outside the
encoder, the encoder's weights are in ``encoder.ckpt`` at their pruned
shapes and ``encoder_structure.json`` is their structure record; the
``hyperparams.yaml`` builds the Whisper lobe, reshapes its encoder to the
record (:func:`rebuild_encoder`) and lets the pretrainer load
``encoder.ckpt``::

    from speechbrain.inference.ASR import WhisperASR
    asr = WhisperASR.from_hparams(source="exported/", savedir="exported/")
    asr.transcribe_file("utterance.flac")

Authors
 * sb_prune developers
"""

import copy
import json
import shutil
from pathlib import Path

import torch

from sb_prune.core.structure import describe, restore
from sb_prune.core.validation import check_int
from sb_prune.families.whisper import whisper_stack
from sb_prune.methods.adaptive_dropout.strip import strip_adaptive_dropout

#: The files of a structured encoder in an exported folder.
ENCODER_WEIGHTS = "encoder.ckpt"
ENCODER_STRUCTURE = "encoder_structure.json"

_GREEDY = """\
decoder: !new:speechbrain.decoders.seq2seq.S2SWhisperGreedySearcher
    model: !ref <whisper>
    min_decode_ratio: 0.0
    max_decode_ratio: !ref <max_decode_ratio>"""
_BEAM = """\
decoder: !new:speechbrain.decoders.seq2seq.S2SWhisperBeamSearcher
    module: [!ref <whisper>]
    min_decode_ratio: 0.0
    max_decode_ratio: !ref <max_decode_ratio>
    beam_size: {beam_size}"""
_DENSE_PRETRAINER = """\
# The weights are in model.safetensors, which the Whisper lobe loads.
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables: {}"""
_PRUNED_PRETRAINER = f"""\
# The encoder is pruned: reshaped to {ENCODER_STRUCTURE} (sb_prune), then
# loaded from {ENCODER_WEIGHTS}; model.safetensors holds the rest.
sb_prune_encoder: !apply:sb_prune.families.whisper.folders.rebuild_encoder
    whisper: !ref <whisper>
    structure: !ref <whisper_folder>/{ENCODER_STRUCTURE}

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        encoder: !ref <sb_prune_encoder>"""
_HPARAMS = """\
# Whisper for speechbrain.inference.ASR.WhisperASR.from_hparams(source=<this
# folder>), written by sb_prune; if the folder moves, pass
# overrides={{"whisper_folder": <new path>}}.
whisper_folder: {folder}
language: english
sample_rate: 16000
max_decode_ratio: 0.15  # 225 tokens: Whisper's own limit is 224

whisper: !new:speechbrain.integrations.huggingface.whisper.Whisper
    source: !ref <whisper_folder>
    save_path: !ref <whisper_folder>
    freeze: True
    language: !ref <language>
    task: transcribe

{decoder}

modules:
    whisper: !ref <whisper>
    decoder: !ref <decoder>

{pretrainer}
"""


def whisper_asr_hparams(folder, beam_size=None, pruned=False):
    """The ``hyperparams.yaml`` of a Whisper folder, for ``WhisperASR``.

    Arguments
    ---------
    folder : str or pathlib.Path
        The folder's absolute path.
    beam_size : int, optional
        Beam search of that width (``S2SWhisperBeamSearcher``); default
        greedy (``S2SWhisperGreedySearcher``).
    pruned : bool
        The encoder is rebuilt from ``encoder_structure.json`` and loaded
        from ``encoder.ckpt`` (see :func:`export_whisper`).

    Returns
    -------
    str
        The file's text.

    Example
    -------
    >>> text = whisper_asr_hparams("/models/tiny", beam_size=4)
    >>> "beam_size: 4" in text, "rebuild_encoder" in text
    (True, False)
    """
    decoder = _GREEDY
    if beam_size is not None:
        check_int("beam_size", beam_size, minimum=1)
        decoder = _BEAM.format(beam_size=beam_size)
    return _HPARAMS.format(
        folder=folder,
        decoder=decoder,
        pretrainer=_PRUNED_PRETRAINER if pruned else _DENSE_PRETRAINER,
    )


def whisper_encoder(whisper):
    """The Hugging Face ``WhisperEncoder`` inside a model.

    Arguments
    ---------
    whisper : torch.nn.Module
        SpeechBrain's Whisper lobe, a Hugging Face ``WhisperModel`` or
        ``WhisperForConditionalGeneration``, or the encoder itself.

    Returns
    -------
    torch.nn.Module
        The encoder.
    """
    return whisper_stack(whisper, "encoder")


def rebuild_encoder(whisper, structure):
    """Reshape a Whisper model's encoder to a structure record.

    Used by the ``hyperparams.yaml`` of exported folders.

    Arguments
    ---------
    whisper : torch.nn.Module
        See :func:`whisper_encoder`.
    structure : str or dict
        The record (paths relative to the encoder), or its JSON file.

    Returns
    -------
    torch.nn.Module
        The encoder, reshaped in place (placeholder weights).
    """
    if not isinstance(structure, dict):
        structure = json.loads(Path(structure).read_text())
    encoder = whisper_encoder(whisper)
    restore(encoder, structure)
    return encoder


def export_whisper(whisper, dense_folder, out_folder, beam_size=None):
    """Write a (pruned) Whisper as a folder ``WhisperASR`` loads offline.

    Arguments
    ---------
    whisper : torch.nn.Module
        The model whose encoder is exported (see :func:`whisper_encoder`;
        adaptive-dropout layers are left out, after removing the units
        they drop); the other weights are those of ``dense_folder``.
    dense_folder : str or pathlib.Path
        The Hugging Face Whisper folder it was built from (e.g. written by
        :func:`sb_prune.importers.ctranslate2.convert_whisper`).
    out_folder : str or pathlib.Path
        The folder to write (created if missing).
    beam_size : int, optional
        The decoder: see :func:`whisper_asr_hparams`.

    Returns
    -------
    dict
        ``encoder_params`` and the folder.
    """
    from safetensors.torch import load_file, save_file

    dense, out = Path(dense_folder), Path(out_folder)
    if not (dense / "config.json").is_file():
        raise FileNotFoundError(
            f"{dense} is not a Hugging Face Whisper folder (no config.json)"
        )
    out.mkdir(parents=True, exist_ok=True)
    for path in dense.iterdir():
        if path.is_file() and path.suffix in (".json", ".txt"):
            shutil.copy(path, out / path.name)
    rest = {
        key: value
        for key, value in load_file(dense / "model.safetensors").items()
        if not key.startswith(("model.encoder.", "encoder."))
    }
    save_file(rest, out / "model.safetensors", metadata={"format": "pt"})
    # Adaptive-dropout layers are for training: removed from a copy.
    encoder = strip_adaptive_dropout(copy.deepcopy(whisper_encoder(whisper)))
    state = {k: v.detach().cpu() for k, v in encoder.state_dict().items()}
    torch.save(state, out / ENCODER_WEIGHTS)
    (out / ENCODER_STRUCTURE).write_text(json.dumps(describe(encoder)))
    (out / "hyperparams.yaml").write_text(
        whisper_asr_hparams(out.resolve(), beam_size=beam_size, pruned=True)
    )
    return {
        "encoder_params": sum(p.numel() for p in encoder.parameters()),
        "folder": str(out),
    }


def load_exported_encoder(folder):
    """The encoder of a folder written by :func:`export_whisper`.

    Arguments
    ---------
    folder : str or pathlib.Path
        The exported folder.

    Returns
    -------
    torch.nn.Module
        The Hugging Face ``WhisperEncoder``, pruned, in eval mode.
    """
    from transformers import WhisperModel
    from transformers.utils import logging as hf_logging

    folder = Path(folder)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the encoder weights are not in it
    try:
        model = WhisperModel.from_pretrained(folder)
    finally:
        hf_logging.set_verbosity(verbosity)
    encoder = rebuild_encoder(model, folder / ENCODER_STRUCTURE)
    encoder.load_state_dict(torch.load(folder / ENCODER_WEIGHTS))
    return encoder.eval()
