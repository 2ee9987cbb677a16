"""Compressed Whisper as a CTranslate2 model, for faster-whisper.

:func:`export_ctranslate2` writes a (pruned) Whisper as a CTranslate2
folder (``model.bin``, ``config.json``, ``vocabulary.json``,
``tokenizer.json``, ``preprocessor_config.json``) that
``faster_whisper.WhisperModel`` loads and transcribes with::

    from faster_whisper import WhisperModel
    model = WhisperModel("whisper_ct2/", device="cpu", compute_type="int8")
    segments, info = model.transcribe("utterance.flac", beam_size=1)

The conversion is CTranslate2's own (``TransformersConverter`` and its
Whisper loader) run on the pruned model in memory. CTranslate2 reads each
layer's feed-forward width and the number of layers from the weights, so
pruned units and cut layers export as they are. It gives all attention
blocks of the encoder one head count, and those of the decoder (self- and
cross-attention) one: a model whose heads were pruned to the same count
in every block of a stack exports (each block declares its head width,
which CTranslate2 would otherwise take as the model width over the head
count); different counts are refused (:func:`ctranslate2_heads`), as are
low-rank factors (``LowRankLinear``, ``LowRankEmbedding``) and any layer
CTranslate2's Whisper does not have (:data:`DENSE_WHISPER_MODULES`).

Authors
 * sb_prune developers
"""

import copy
import json
from pathlib import Path

from sb_prune.families.whisper.folders import (
    PARTS,
    load_exported_whisper,
    whisper_parts,
)
from sb_prune.methods.adaptive_dropout.strip import strip_adaptive_dropout

#: The module types of a Whisper encoder and decoder that CTranslate2's
#: Whisper holds (``transformers`` classes by their class names).
DENSE_WHISPER_MODULES = (
    "WhisperEncoder",
    "WhisperDecoder",
    "WhisperEncoderLayer",
    "WhisperDecoderLayer",
    "WhisperAttention",
    "WhisperPositionalEmbedding",
    "GELUActivation",
    "ModuleList",
    "Linear",
    "Conv1d",
    "LayerNorm",
    "Embedding",
    "Dropout",
)
#: What to do about the layers CTranslate2's Whisper cannot hold.
_INSTEAD = {
    "LowRankLinear": "CTranslate2's Whisper layers hold dense matrices: "
    "compress this model without low rank (multiplying the factors back "
    "would give up what they save)",
    "LowRankEmbedding": "CTranslate2's Whisper embeds and scores tokens "
    "with one dense table: compress this model without "
    "low_rank_embedding",
}
#: Files of the source folder copied to the CTranslate2 folder, for
#: faster-whisper's tokenizer and feature extractor.
COPIED_FILES = ("tokenizer.json", "preprocessor_config.json")


def ctranslate2_heads(part, stack):
    """The head count and width a stack's attention blocks all share.

    Arguments
    ---------
    part : str
        ``encoder`` or ``decoder``, for the messages.
    stack : torch.nn.Module
        A Hugging Face ``WhisperEncoder`` or ``WhisperDecoder``.

    Returns
    -------
    tuple of int
        ``(heads, head_dim)``.

    Raises
    ------
    ValueError
        A layer CTranslate2's Whisper does not hold, or attention blocks
        with different head counts, named by path.

    Example
    -------
    >>> import torch
    >>> from transformers import WhisperConfig
    >>> from transformers.models.whisper.modeling_whisper import (
    ...     WhisperEncoder,
    ... )
    >>> config = WhisperConfig(
    ...     d_model=8, encoder_layers=2, encoder_attention_heads=2,
    ...     encoder_ffn_dim=16, num_mel_bins=4, max_source_positions=4,
    ... )
    >>> encoder = WhisperEncoder(config)
    >>> ctranslate2_heads("encoder", encoder)
    (2, 4)
    >>> encoder.layers[1].self_attn.num_heads = 1
    >>> ctranslate2_heads("encoder", encoder)
    Traceback (most recent call last):
    ...
    ValueError: encoder: CTranslate2 gives all attention blocks of a \
Whisper encoder one head count; these keep layers.0.self_attn: 2, \
layers.1.self_attn: 1 (prune heads with the same count in every block)
    >>> encoder.layers[0].fc1 = torch.nn.Sequential()
    >>> ctranslate2_heads("encoder", encoder)
    Traceback (most recent call last):
    ...
    ValueError: encoder layers.0.fc1: a Sequential, which CTranslate2's \
Whisper does not have
    """
    heads = {}
    for path, module in stack.named_modules():
        name = type(module).__name__
        if name not in DENSE_WHISPER_MODULES:
            instead = _INSTEAD.get(name, "")
            raise ValueError(
                f"{part} {path}: a {name}, which CTranslate2's Whisper does "
                f"not have{'; ' if instead else ''}{instead}"
            )
        if name == "WhisperAttention":
            heads[path] = (module.num_heads, module.head_dim)
    if len(set(heads.values())) != 1:
        kept = ", ".join(f"{path}: {n}" for path, (n, _) in heads.items())
        raise ValueError(
            f"{part}: CTranslate2 gives all attention blocks of a Whisper "
            f"{part} one head count; these keep {kept} (prune heads with "
            "the same count in every block)"
        )
    return next(iter(heads.values()))


def _declare_head_dims(spec, head_dims):
    """Give each attention spec of a Whisper spec its stack's head width."""
    from ctranslate2.specs.attention_spec import MultiHeadAttentionSpec

    for part in PARTS:
        for layer in getattr(spec, part).layer:
            for name in ("self_attention", "attention"):
                filled = getattr(layer, name, None)
                if filled is None:
                    continue
                declared = MultiHeadAttentionSpec(
                    self_attention=name == "self_attention",
                    head_dim=head_dims[part],
                )
                for key, value in vars(filled).items():
                    if not key.startswith("_") and key != "head_dim":
                        setattr(declared, key, value)
                setattr(layer, name, declared)


def _converter(folder, model, head_dims):
    """CTranslate2's Transformers converter, given ``model`` in memory."""
    from ctranslate2.converters import TransformersConverter

    class PrunedWhisperConverter(TransformersConverter):
        def load_model(self, model_class, model_name_or_path, **kwargs):
            return model

        def _load(self):
            spec = super()._load()
            _declare_head_dims(spec, head_dims)
            return spec

    copied = [name for name in COPIED_FILES if (folder / name).is_file()]
    return PrunedWhisperConverter(str(folder), copy_files=copied)


def export_ctranslate2(folder, out_folder, whisper=None, quantization=None):
    """Write a (pruned) Whisper as a CTranslate2 folder for faster-whisper.

    Arguments
    ---------
    folder : str or pathlib.Path
        A Hugging Face Whisper folder with its tokenizer: one written by
        :func:`~sb_prune.families.whisper.folders.export_whisper` (``sb-prune
        export`` of a Whisper run), whose pruned parts are rebuilt, or a
        dense one (e.g. from
        :func:`~sb_prune.families.whisper.ctranslate2.convert_whisper`).
    out_folder : str or pathlib.Path
        The folder to write; it must not exist yet.
    whisper : torch.nn.Module, optional
        A model in memory (SpeechBrain's Whisper lobe or a Hugging Face
        Whisper) whose encoder and decoder replace the folder's
        (adaptive-dropout layers are removed from copies).
    quantization : str, optional
        CTranslate2's weight type (``int8``, ``float16``...; default: the
        weights' own, float32). faster-whisper's ``compute_type`` converts
        at load time either way.

    Returns
    -------
    dict
        The layer counts, head counts and head widths exported, and the
        folder.

    Raises
    ------
    ValueError
        A structure CTranslate2 cannot hold (see :func:`ctranslate2_heads`).
    """
    folder, out = Path(folder), Path(out_folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{folder} is not a Hugging Face Whisper folder (no config.json)"
        )
    if not (folder / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"{folder} has no tokenizer.json, which faster-whisper reads"
        )
    if out.exists():
        raise FileExistsError(
            f"{out} exists; export_ctranslate2 writes a new folder"
        )
    dense = json.loads((folder / "config.json").read_text())
    model = load_exported_whisper(folder)
    if whisper is not None:
        for part, stack in whisper_parts(whisper).items():
            stack = strip_adaptive_dropout(copy.deepcopy(stack)).eval()
            setattr(model.model, part, stack)
    decoder = model.model.decoder
    model.proj_out.weight = decoder.embed_tokens.weight  # Whisper's tie
    summary = {"folder": str(out)}
    head_dims = {}
    for part in PARTS:
        stack = getattr(model.model, part)
        heads, head_dims[part] = ctranslate2_heads(part, stack)
        setattr(model.config, f"{part}_layers", len(stack.layers))
        setattr(model.config, f"{part}_attention_heads", heads)
        summary[part] = {
            "layers": len(stack.layers),
            "heads": heads,
            "head_dim": head_dims[part],
        }
    if (dense["decoder_layers"], dense["decoder_attention_heads"]) != (
        summary["decoder"]["layers"],
        summary["decoder"]["heads"],
    ):  # word alignment heads name dense heads: CTranslate2's default
        model.generation_config.alignment_heads = None
    _converter(folder, model, head_dims).convert(
        str(out), quantization=quantization
    )
    return summary
