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
count). Different counts (``CriterionPruning``'s ``allocation: global``)
are refused, or with ``pad_heads`` padded with zero heads up to the
stack's largest count (:func:`pad_heads_`: exact, but computed). Low-rank
factors (``LowRankLinear``, ``LowRankEmbedding``) are refused, as is any
layer CTranslate2's Whisper does not have (:data:`DENSE_WHISPER_MODULES`);
with ``dense_table`` a low-rank token table is multiplied back into the
one dense table CTranslate2 holds (:func:`dense_table_`: the same scores,
none of the table's saving).

Authors
 * sb_prune developers
"""

import copy
import json
from pathlib import Path

import torch

from sb_prune.core.atomic import complete_or_absent
from sb_prune.core.registry import qualified_name, spec_of
from sb_prune.families.whisper import MODULE
from sb_prune.families.whisper.folders import (
    PARTS,
    load_exported_whisper,
    whisper_parts,
)
from sb_prune.methods.adaptive_dropout.strip import strip_adaptive_dropout
from sb_prune.methods.low_rank.embedding import LowRankEmbedding

#: The module types of a Whisper encoder and decoder that CTranslate2's
#: Whisper holds, by qualified name.
DENSE_WHISPER_MODULES = (
    *(
        MODULE + name
        for name in (
            "WhisperEncoder",
            "WhisperDecoder",
            "WhisperEncoderLayer",
            "WhisperDecoderLayer",
            "WhisperAttention",
            "WhisperPositionalEmbedding",
        )
    ),
    "transformers.activations.GELUActivation",
    "torch.nn.modules.container.ModuleList",
    "torch.nn.modules.linear.Linear",
    "torch.nn.modules.conv.Conv1d",
    "torch.nn.modules.normalization.LayerNorm",
    "torch.nn.modules.sparse.Embedding",
    "torch.nn.modules.dropout.Dropout",
)
#: What to do about the layers CTranslate2's Whisper cannot hold.
_INSTEAD = {
    "LowRankLinear": "CTranslate2's Whisper layers hold dense matrices: "
    "compress this model without low rank (multiplying the factors back "
    "would give up what they save)",
    "LowRankEmbedding": "CTranslate2's Whisper embeds and scores tokens "
    "with one dense table: compress this model without "
    "low_rank_embedding, or multiply the factors back (dense_table: "
    "sb-prune export --dense-table), which keeps the scores and gives up "
    "the table's saving",
}
#: Files of the source folder copied to the CTranslate2 folder, for
#: faster-whisper's tokenizer and feature extractor.
COPIED_FILES = ("tokenizer.json", "preprocessor_config.json")


def pad_heads_(attention, heads):
    """Give a Whisper attention block zero heads up to ``heads``, in place.

    A zero head scores every key alike and averages zero values: its
    output, and the block's, are exactly what they were.

    Arguments
    ---------
    attention : torch.nn.Module
        A Hugging Face ``WhisperAttention``.
    heads : int
        Its new head count (at least the current one).

    Example
    -------
    >>> import torch
    >>> from transformers import WhisperConfig
    >>> from transformers.models.whisper.modeling_whisper import (
    ...     WhisperAttention,
    ... )
    >>> attention = WhisperAttention(8, 2, config=WhisperConfig()).eval()
    >>> x = torch.randn(1, 5, 8)
    >>> before = attention(x)[0]
    >>> pad_heads_(attention, 3)
    >>> attention.num_heads, attention.q_proj.weight.shape
    (3, torch.Size([12, 8]))
    >>> torch.allclose(attention(x)[0], before, atol=1e-6)
    True
    """
    kept = attention.num_heads * attention.head_dim
    old = {k: v.clone() for k, v in attention.state_dict().items()}
    spec_of(attention).set_structure(attention, {"heads": heads})  # zeros
    with torch.no_grad():
        for name, value in attention.state_dict().items():
            if name.startswith("out_proj.weight"):
                value[:, :kept] = old[name]
            elif name.startswith("out_proj"):
                value.copy_(old[name])
            else:
                value[:kept] = old[name]


def dense_table_(decoder):
    """Multiply a decoder's low-rank token table back into a dense one.

    In place: the decoder embeds with the product of the factors, as
    before; a model that scores with the table (a Hugging Face Whisper's
    ``proj_out``) must be tied to the new one.

    Arguments
    ---------
    decoder : torch.nn.Module
        A Hugging Face ``WhisperDecoder``.

    Returns
    -------
    int or None
        The table's rank (None: it was dense already).

    Example
    -------
    >>> decoder = torch.nn.Module()  # a WhisperDecoder's table alone
    >>> decoder.embed_tokens = LowRankEmbedding.from_embedding(
    ...     torch.nn.Embedding(12, 8), 3
    ... )
    >>> product = decoder.embed_tokens.weight.detach().clone()
    >>> dense_table_(decoder), dense_table_(decoder)
    (3, None)
    >>> type(decoder.embed_tokens).__name__
    'Embedding'
    >>> torch.equal(decoder.embed_tokens.weight, product)
    True
    """
    table = decoder.embed_tokens
    if not isinstance(table, LowRankEmbedding):
        return None
    dense = torch.nn.Embedding(
        table.num_embeddings, table.embedding_dim, table.padding_idx
    )
    with torch.no_grad():
        dense.weight.copy_(table.weight)
    decoder.embed_tokens = dense.to(table.codes)
    return table.rank


def ctranslate2_heads(part, stack, pad=False):
    """The head count and width that a stack's attention blocks all share.

    Arguments
    ---------
    part : str
        ``encoder`` or ``decoder``, for the messages.
    stack : torch.nn.Module
        A Hugging Face ``WhisperEncoder`` or ``WhisperDecoder``.
    pad : bool
        Blocks with fewer heads than the stack's largest count get zero
        heads up to it (:func:`pad_heads_`, in place) instead of a refusal.

    Returns
    -------
    tuple of int
        ``(heads, head_dim, zero heads added)``.

    Raises
    ------
    ValueError
        A layer CTranslate2's Whisper does not hold, or (without ``pad``)
        attention blocks with different head counts, named by path.

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
    (2, 4, 0)
    >>> pad_heads_(encoder.layers[1].self_attn, 3)
    >>> ctranslate2_heads("encoder", encoder)
    Traceback (most recent call last):
    ...
    ValueError: encoder: CTranslate2 gives all attention blocks of a \
Whisper encoder one head count; these keep layers.0.self_attn: 2, \
layers.1.self_attn: 3 (prune heads with the same count in every block: \
CriterionPruning's allocation uniform; or pad_heads: sb-prune export \
--pad-heads)
    >>> ctranslate2_heads("encoder", encoder, pad=True)
    (3, 4, 1)
    >>> encoder.layers[0].fc1 = torch.nn.Sequential()
    >>> ctranslate2_heads("encoder", encoder)
    Traceback (most recent call last):
    ...
    ValueError: encoder layers.0.fc1: a Sequential, which CTranslate2's \
Whisper does not have
    """
    blocks = {}
    for path, module in stack.named_modules():
        name = type(module).__name__
        if qualified_name(type(module)) not in DENSE_WHISPER_MODULES:
            instead = _INSTEAD.get(name, "")
            raise ValueError(
                f"{part} {path}: a {name}, which CTranslate2's Whisper does "
                f"not have{'; ' if instead else ''}{instead}"
            )
        if name == "WhisperAttention":
            blocks[path] = module
    heads = max(block.num_heads for block in blocks.values())
    added = sum(heads - block.num_heads for block in blocks.values())
    if added and not pad:
        kept = ", ".join(f"{p}: {b.num_heads}" for p, b in blocks.items())
        raise ValueError(
            f"{part}: CTranslate2 gives all attention blocks of a Whisper "
            f"{part} one head count; these keep {kept} (prune heads with "
            "the same count in every block: CriterionPruning's allocation "
            "uniform; or pad_heads: sb-prune export --pad-heads)"
        )
    for block in blocks.values():
        if block.num_heads < heads:
            pad_heads_(block, heads)
    head_dims = {block.head_dim for block in blocks.values()}
    return heads, head_dims.pop(), added


def _language_ids(tokenizer_file):
    """``{token: id}`` of the language tokens of a Whisper tokenizer.json."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    added = json.loads(Path(tokenizer_file).read_text())["added_tokens"]
    names = {f"<|{code}|>" for code in LANGUAGES}
    return {t["content"]: t["id"] for t in added if t["content"] in names}


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

        def _load(self):  # Converter.convert builds the spec with it
            spec = super()._load()
            _declare_head_dims(spec, head_dims)
            return spec

    copied = [name for name in COPIED_FILES if (folder / name).is_file()]
    return PrunedWhisperConverter(str(folder), copy_files=copied)


def export_ctranslate2(
    folder,
    out_folder,
    whisper=None,
    quantization=None,
    pad_heads=False,
    dense_table=False,
):
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
        The folder to write, whole or not at all; it must not exist yet.
    whisper : torch.nn.Module, optional
        A model in memory (SpeechBrain's Whisper lobe or a Hugging Face
        Whisper) whose encoder and decoder replace the folder's
        (adaptive-dropout layers are removed from copies).
    quantization : str, optional
        CTranslate2's weight type (``int8``, ``float16``...; default: the
        weights' own, float32). faster-whisper's ``compute_type`` converts
        at load time either way.
    pad_heads : bool
        Where a stack's attention blocks keep different head counts, give
        each zero heads up to the largest count (exact, but CTranslate2
        computes them); default: refuse.
    dense_table : bool
        A low-rank token table is multiplied back into a dense one
        (:func:`dense_table_`: the same scores, none of its saving);
        default: refuse.

    Returns
    -------
    dict
        Per part, the layers, heads, head width and zero heads added (the
        decoder's ``table_rank``: the rank multiplied back, or None); the
        folder.

    Raises
    ------
    ValueError
        A structure CTranslate2 cannot hold (see :func:`ctranslate2_heads`),
        named by layer.
    """
    try:
        import ctranslate2  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "export_ctranslate2 needs ctranslate2: pip install "
            "sb_prune[ctranslate2]"
        ) from error
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
    original = json.loads((folder / "config.json").read_text())
    model = load_exported_whisper(folder)
    if whisper is not None:
        for part, stack in whisper_parts(whisper).items():
            stack = strip_adaptive_dropout(copy.deepcopy(stack)).eval()
            setattr(model.model, part, stack)
    summary = {"folder": str(out)}
    table_rank = dense_table_(model.model.decoder) if dense_table else None
    head_dims = {}
    for part in PARTS:
        stack = getattr(model.model, part)
        heads, head_dims[part], added = ctranslate2_heads(
            part, stack, pad=pad_heads
        )
        setattr(model.config, f"{part}_layers", len(stack.layers))
        setattr(model.config, f"{part}_attention_heads", heads)
        summary[part] = {
            "layers": len(stack.layers),
            "heads": heads,
            "head_dim": head_dims[part],
            "zero_heads": added,
        }
    decoder = summary["decoder"]
    decoder["table_rank"] = table_rank
    if decoder["zero_heads"] or (decoder["layers"], decoder["heads"]) != (
        original["decoder_layers"],
        original["decoder_attention_heads"],
    ):  # word alignment heads name dense heads: CTranslate2's default
        model.generation_config.alignment_heads = None
    if not getattr(model.generation_config, "lang_to_id", None):
        # faster-whisper detects the language among these
        model.generation_config.lang_to_id = _language_ids(
            folder / "tokenizer.json"
        )
    model.proj_out.weight = model.model.decoder.embed_tokens.weight  # tied
    with complete_or_absent(out) as scratch:  # the converter rewrites it
        _converter(folder, model, head_dims).convert(
            str(scratch), quantization=quantization, force=True
        )
    return summary
