"""Whisper folders that SpeechBrain's ``WhisperASR`` loads, dense or pruned.

A folder holds a Hugging Face Whisper model (``config.json``,
``model.safetensors``, tokenizer and feature-extractor files) and a
``hyperparams.yaml`` for ``speechbrain.inference.ASR.WhisperASR``
(:func:`whisper_asr_hparams`), which decodes as Whisper does (checked
token for token against :mod:`sb_prune.families.whisper.reference`): the
model's suppressed tokens, at most 224 tokens, and each utterance's
features computed alone, in a batch too (sb_prune's lobe).
:func:`export_whisper` writes a compressed model's folder: each pruned
part (encoder, decoder) has its weights in ``<part>.ckpt`` at their pruned
shapes and its structure record in ``<part>_structure.json``;
``model.safetensors`` holds the rest, with the parts that kept their
shapes (fine-tuned or not). The ``hyperparams.yaml``
builds the Whisper lobe, reshapes its pruned parts to their records
(:func:`rebuild_encoder`, :func:`rebuild_decoder`) and lets the pretrainer
load their checkpoints::

    from speechbrain.inference.ASR import WhisperASR
    asr = WhisperASR.from_hparams(source="exported/", savedir="exported/")
    asr.transcribe_file("utterance.flac")

Authors
 * sb_prune developers
"""

import copy
import json
import shutil
import textwrap
from pathlib import Path

import torch

from sb_prune.core.atomic import complete_or_absent
from sb_prune.core.structure import describe, read_record, restore
from sb_prune.core.validation import check_int, check_number
from sb_prune.families.whisper import whisper_stack
from sb_prune.methods.adaptive_dropout.strip import strip_adaptive_dropout

#: The parts of a Whisper model exported on their own when pruned.
PARTS = ("encoder", "decoder")


def part_files(part):
    """The weights and structure files of a pruned part of a folder.

    Arguments
    ---------
    part : str
        ``encoder`` or ``decoder``.

    Returns
    -------
    tuple of str
        ``(<part>.ckpt, <part>_structure.json)``.

    Example
    -------
    >>> part_files("decoder")
    ('decoder.ckpt', 'decoder_structure.json')
    """
    return f"{part}.ckpt", f"{part}_structure.json"


#: The files of a structured encoder in an exported folder.
ENCODER_WEIGHTS, ENCODER_STRUCTURE = part_files("encoder")

_GREEDY = """\
decoder: !new:speechbrain.decoders.seq2seq.S2SWhisperGreedySearcher
    model: !ref <whisper>
    min_decode_ratio: 0.0
    max_decode_ratio: !ref <max_decode_ratio>
    suppress_tokens: !ref <suppress_tokens>"""
_BEAM = """\
decoder: !new:speechbrain.decoders.seq2seq.S2SWhisperBeamSearcher
    module: [!ref <whisper>]
    min_decode_ratio: 0.0
    max_decode_ratio: !ref <max_decode_ratio>
    suppress_tokens: !ref <suppress_tokens>
    beam_size: {beam_size}"""
_PRETRAINER = """\
# The weights are in model.safetensors, which the Whisper lobe loads; a
# pruned part is reshaped to its <part>_structure.json (sb_prune), then
# loaded from its <part>.ckpt.
{rebuilds}pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables: {loadables}"""
_REBUILD = """\
sb_prune_{part}: !apply:sb_prune.families.whisper.folders.rebuild_{part}
    whisper: !ref <whisper>
    structure: !ref <whisper_folder>/{structure}

"""
_HPARAMS = """\
# Whisper for speechbrain.inference.ASR.WhisperASR.from_hparams(source=<this
# folder>), written by sb_prune; if the folder moves, pass
# overrides={{"whisper_folder": <new path>}}.
whisper_folder: {folder}
language: english
sample_rate: 16000
max_decode_ratio: {max_decode_ratio}  # of the 1500 encoder frames
normalized_transcripts: {normalized}  # transcribe_batch: normalised words
# Never decoded (the model's config.json; -1: SpeechBrain's list).
{suppress_tokens}

# sb_prune's lobe: SpeechBrain's, each utterance's features alone.
whisper: !new:{lobe}
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


#: The lobe of the folders: SpeechBrain's, with each utterance's features
#: computed alone and a low-rank token table scored through its factors
#: (:class:`sb_prune.families.whisper.lobe.WhisperLobe`).
FOLDER_LOBE = "sb_prune.nn.WhisperLobe"
#: The lobes a Whisper recipe's hparams may build its ``whisper`` with:
#: SpeechBrain's (1.x, then the 1.0 name that 1.1 redirects) and ours.
WHISPER_LOBES = (
    "speechbrain.integrations.huggingface.whisper.Whisper",
    "speechbrain.lobes.models.huggingface_transformers.whisper.Whisper",
    FOLDER_LOBE,
)
#: Whisper samples at most 224 tokens (half its 448 text positions).
MAX_TOKENS = 224
#: The searcher's fraction of the 1500 encoder frames that allows as many
#: (SpeechBrain decodes ``int(1500 * ratio)`` steps).
MAX_DECODE_RATIO = MAX_TOKENS / 1500


def suppressed_tokens(folder):
    """The tokens a Hugging Face Whisper folder's model never decodes.

    Arguments
    ---------
    folder : str or pathlib.Path
        It holds ``config.json``.

    Returns
    -------
    list of int or None
        Its ``suppress_tokens`` (Whisper's non-speech tokens and the
        special tokens that are not text); None if it names none.

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "config.json").write_text('{"suppress_tokens": [1]}')
    >>> suppressed_tokens(folder)
    [1]
    >>> shutil.rmtree(folder)
    """
    config = json.loads((Path(folder) / "config.json").read_text())
    return config.get("suppress_tokens") or None


def whisper_asr_hparams(
    folder,
    beam_size=None,
    pruned=(),
    max_decode_ratio=MAX_DECODE_RATIO,
    normalized_transcripts=False,
    suppress_tokens=None,
):
    """The ``hyperparams.yaml`` of a Whisper folder, for ``WhisperASR``.

    Arguments
    ---------
    folder : str or pathlib.Path
        The folder's absolute path.
    beam_size : int, optional
        Beam search of that width (``S2SWhisperBeamSearcher``); default
        greedy (``S2SWhisperGreedySearcher``).
    pruned : tuple of str
        The parts rebuilt from ``<part>_structure.json`` and loaded from
        ``<part>.ckpt`` (see :func:`export_whisper`).
    max_decode_ratio : float
        The searcher's longest hypothesis, as a fraction of the encoder's
        frames.
    normalized_transcripts : bool
        ``WhisperASR.transcribe_batch`` returns the words of Whisper's
        English normaliser (as SpeechBrain's Whisper recipes score them)
        rather than the decoded text.
    suppress_tokens : list of int, optional
        The tokens never decoded (:func:`suppressed_tokens` of the
        folder); default SpeechBrain's list of non-speech tokens, which
        lacks ``<|nocaptions|>``.

    Returns
    -------
    str
        The file's text.

    Example
    -------
    >>> text = whisper_asr_hparams("/models/tiny", beam_size=4)
    >>> "beam_size: 4" in text, "rebuild_encoder" in text
    (True, False)
    >>> "rebuild_decoder" in whisper_asr_hparams("/m", pruned=["decoder"])
    True
    >>> text = whisper_asr_hparams("/m", max_decode_ratio=0.1)
    >>> "max_decode_ratio: 0.1 " in text, "transcripts: False" in text
    (True, True)
    >>> "suppress_tokens: [1, 2]" in whisper_asr_hparams("/m", None, (), 0.1,
    ...     suppress_tokens=[1, 2])
    True
    """
    check_number("max_decode_ratio", max_decode_ratio, low=0, open_low=True)
    decoder = _GREEDY
    if beam_size is not None:
        check_int("beam_size", beam_size, minimum=1)
        decoder = _BEAM.format(beam_size=beam_size)
    rebuilds = "".join(
        _REBUILD.format(part=part, structure=part_files(part)[1])
        for part in pruned
    )
    loadables = "{}"
    if pruned:
        loadables = "".join(
            f"\n        {part}: !ref <sb_prune_{part}>" for part in pruned
        )
    return _HPARAMS.format(
        folder=folder,
        lobe=FOLDER_LOBE,
        decoder=decoder,
        pretrainer=_PRETRAINER.format(rebuilds=rebuilds, loadables=loadables),
        max_decode_ratio=max_decode_ratio,
        normalized=bool(normalized_transcripts),
        suppress_tokens=textwrap.fill(
            str(list(suppress_tokens or [-1])),
            width=76,
            initial_indent="suppress_tokens: ",
            subsequent_indent="    ",
        ),
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


def _rebuild(whisper, structure, part):
    if not isinstance(structure, dict):
        structure = read_record(structure)
    stack = whisper_stack(whisper, part)
    restore(stack, structure)
    return stack


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
    return _rebuild(whisper, structure, "encoder")


def rebuild_decoder(whisper, structure):
    """Reshape a Whisper model's decoder to a structure record.

    Used by the ``hyperparams.yaml`` of exported folders.

    Arguments
    ---------
    whisper : torch.nn.Module
        See :func:`whisper_encoder`.
    structure : str or dict
        The record (paths relative to the decoder), or its JSON file.

    Returns
    -------
    torch.nn.Module
        The decoder, reshaped in place (placeholder weights).
    """
    return _rebuild(whisper, structure, "decoder")


def whisper_parts(whisper):
    """The encoder and decoder a Whisper model has (a lobe may lack one).

    Arguments
    ---------
    whisper : torch.nn.Module
        See :func:`whisper_encoder`.

    Returns
    -------
    dict
        ``{part: stack}``, ``part`` in :data:`PARTS`.
    """
    found = {}
    for part in PARTS:
        try:
            found[part] = whisper_stack(whisper, part)
        except ValueError:
            continue
    return found


def export_whisper(
    whisper,
    dense_folder,
    out_folder,
    beam_size=None,
    max_decode_ratio=MAX_DECODE_RATIO,
    normalized_transcripts=False,
):
    """Write a (pruned) Whisper as a folder ``WhisperASR`` loads offline.

    Arguments
    ---------
    whisper : torch.nn.Module
        The model exported (SpeechBrain's Whisper lobe, with a decoder or
        encoder-only, or a Hugging Face Whisper): its encoder and decoder,
        where it has them (adaptive-dropout layers are left out, after
        removing the units they drop); the other weights are those of
        ``dense_folder``.
    dense_folder : str or pathlib.Path
        The Hugging Face Whisper folder it was built from (e.g. written by
        :func:`sb_prune.importers.ctranslate2.convert_whisper`).
    out_folder : str or pathlib.Path
        The folder to write, whole or not at all (an existing one is
        replaced: see :func:`sb_prune.core.atomic.complete_or_absent`).
    beam_size, max_decode_ratio, normalized_transcripts
        The decoding: see :func:`whisper_asr_hparams`.

    Returns
    -------
    dict
        ``encoder_params``, ``decoder_params`` (when exported), the pruned
        parts and the folder.
    """
    out = Path(out_folder)
    with complete_or_absent(out) as scratch:
        summary = write_whisper_folder(
            whisper,
            dense_folder,
            scratch,
            out.resolve(),
            beam_size=beam_size,
            max_decode_ratio=max_decode_ratio,
            normalized_transcripts=normalized_transcripts,
        )
    summary["folder"] = str(out)
    return summary


def write_whisper_folder(
    whisper,
    dense_folder,
    out,
    location,
    beam_size=None,
    max_decode_ratio=MAX_DECODE_RATIO,
    normalized_transcripts=False,
):
    """Write :func:`export_whisper`'s files into an existing folder.

    Arguments
    ---------
    whisper, dense_folder, beam_size, max_decode_ratio, normalized_transcripts
        As for :func:`export_whisper`.
    out : pathlib.Path
        The folder written (a scratch folder of
        :func:`sb_prune.core.atomic.complete_or_absent`).
    location : pathlib.Path
        Where the folder will be read from (``hyperparams.yaml`` names it).

    Returns
    -------
    dict
        As for :func:`export_whisper`.
    """
    from safetensors.torch import load_file, save_file

    dense = Path(dense_folder)
    if not (dense / "config.json").is_file():
        raise FileNotFoundError(
            f"{dense} is not a Hugging Face Whisper folder (no config.json)"
        )
    for path in dense.iterdir():
        if path.is_file() and path.suffix in (".json", ".txt"):
            shutil.copy(path, out / path.name)
    weights = load_file(dense / "model.safetensors")
    summary, pruned = {}, []
    for part, stack in whisper_parts(whisper).items():
        # Adaptive-dropout layers are for training: removed from a copy.
        stack = strip_adaptive_dropout(copy.deepcopy(stack))
        state = {k: v.detach().cpu() for k, v in stack.state_dict().items()}
        prefix = _prefix(weights, part)
        same_shapes = {
            f"{prefix}{key}": value.shape for key, value in state.items()
        } == {
            key: value.shape
            for key, value in weights.items()
            if key.startswith(prefix)
        }
        if same_shapes:  # as the dense part: into model.safetensors
            weights.update({f"{prefix}{k}": v for k, v in state.items()})
        else:
            weights = {
                k: v for k, v in weights.items() if not k.startswith(prefix)
            }
            weights_file, structure_file = part_files(part)
            torch.save(state, out / weights_file)
            (out / structure_file).write_text(json.dumps(describe(stack)))
            pruned.append(part)
        summary[f"{part}_params"] = sum(p.numel() for p in stack.parameters())
    weights = {key: value.contiguous() for key, value in weights.items()}
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    (out / "hyperparams.yaml").write_text(
        whisper_asr_hparams(
            location,
            beam_size=beam_size,
            pruned=pruned,
            max_decode_ratio=max_decode_ratio,
            normalized_transcripts=normalized_transcripts,
            suppress_tokens=suppressed_tokens(dense),
        )
    )
    summary["pruned"] = pruned
    return summary


def _prefix(weights, part):
    """The key prefix of a part in a Hugging Face Whisper state dict."""
    for prefix in (f"model.{part}.", f"{part}."):
        if any(key.startswith(prefix) for key in weights):
            return prefix
    raise ValueError(f"model.safetensors holds no Whisper {part}")


def load_exported_whisper(folder):
    """The Whisper model of a folder written by :func:`export_whisper`.

    Arguments
    ---------
    folder : str or pathlib.Path
        The exported folder (or a dense Hugging Face Whisper folder).

    Returns
    -------
    torch.nn.Module
        ``transformers``' ``WhisperForConditionalGeneration``, its pruned
        parts rebuilt and loaded, in eval mode.
    """
    from transformers import WhisperForConditionalGeneration
    from transformers.utils import logging as hf_logging

    folder = Path(folder)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the pruned parts are not in it
    try:
        model = WhisperForConditionalGeneration.from_pretrained(folder)
    finally:
        hf_logging.set_verbosity(verbosity)
    for part in PARTS:
        weights, structure = part_files(part)
        if (folder / structure).is_file():
            stack = _rebuild(model, folder / structure, part)
            stack.load_state_dict(
                torch.load(folder / weights, weights_only=True)
            )
    return model.eval()


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
    return load_exported_whisper(folder).model.encoder
