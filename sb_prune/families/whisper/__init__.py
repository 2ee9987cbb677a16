"""The Hugging Face Whisper family: encoder and decoder.

``transformers.models.whisper.modeling_whisper``, named by qualified name
so that ``transformers`` need not be installed or imported:

* ``WhisperEncoder`` / ``WhisperDecoder``: layer stacks (groups ``layers``
  / ``decoder_layers``); a cut keeps ``config.encoder_layers`` /
  ``config.decoder_layers`` in step and renumbers the decoder layers'
  cache indices (``layer_idx``), so generation with a key/value cache
  works on the cut decoder;
* ``WhisperEncoderLayer`` / ``WhisperDecoderLayer``: the layer holds its
  feed-forward block itself (``fc1`` / ``fc2``): group ``hidden``
  (criterion group ``ffn``); adaptive dropout has the ``ffn`` point only;
* ``WhisperAttention`` (self-attention of both, and the decoder's
  cross-attention): group ``heads``, whole heads (its attention reshapes
  by ``head_dim``, so heads cannot keep different widths). The key
  projection has no bias.

Authors
 * sb_prune developers
"""

from sb_prune.core.registry import (
    Family,
    ModuleSpec,
    layer_stack_spec,
    spec_of,
)
from sb_prune.families.common import (
    feed_forward_spec,
    first_dropout,
    whole_head_attention_spec,
)
from sb_prune.methods.adaptive_dropout.points import (
    MaskPoints,
    mask_hidden_units,
    masks_by_label,
)
from sb_prune.methods.low_rank.embedding import LowRankEmbedding
from sb_prune.methods.low_rank.token_table import TokenStatistics

FAMILY = Family("Hugging Face Whisper")
MODULE = "transformers.models.whisper.modeling_whisper."

#: Why Whisper layers take no per-unit attention masks.
FIXED_HEAD_WIDTH = (
    "a Whisper encoder layer has only the 'ffn' point (its attention "
    "reshapes by a fixed head width: prune whole heads with criteria)"
)


#: Why a bare Hugging Face Whisper keeps its dense token table.
NO_FACTORED_SCORES = (
    "its output projection reads the dense token table; factorise the "
    "table of SpeechBrain's lobe built as sb_prune.nn.WhisperLobe, which "
    "scores through the factors"
)


def _factorise_embedding(lobe, rank, row_weights=None, state_moment=None):
    """The ``low_rank_embedding`` answer of the lobe: a low-rank table.

    The decoder embeds its tokens with ``embed_tokens``; the lobe scores
    the vocabulary with the same table, through its factors only in
    :class:`~sb_prune.families.whisper.lobe.WhisperLobe`. The statistics
    of a calibration (``token_statistics``) weight the fit.
    """
    if not getattr(lobe, "scores_through_factors", False):
        raise ValueError(
            f"low_rank_embedding: the {FAMILY.name} family cannot factorise "
            f"the table of a {type(lobe).__name__} lobe, which scores "
            "through the dense table: build it as sb_prune.nn.WhisperLobe "
            "(same arguments)"
        )
    decoder = lobe.model.decoder
    decoder.embed_tokens = LowRankEmbedding.from_embedding(
        decoder.embed_tokens, rank, row_weights, state_moment
    )


def _token_statistics(lobe):
    """The ``token_statistics`` answer of the lobe: its decoder watched.

    The decoder is called with ``input_ids`` and returns its final states
    first.
    """
    decoder = lobe.model.decoder
    return TokenStatistics(decoder, decoder.embed_tokens.num_embeddings)


def _sync_encoder_layers(encoder):
    encoder.config.encoder_layers = len(encoder.layers)


def _sync_decoder_layers(decoder):
    """The decoder's layer count and each layer's cache index follow a cut."""
    decoder.config.decoder_layers = len(decoder.layers)
    for index, layer in enumerate(decoder.layers):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = index


FAMILY.register(
    MODULE + "WhisperEncoder",
    layer_stack_spec(
        after_cut=_sync_encoder_layers,
        refusals={
            "dynamic_depth": "no gated Whisper encoder: I3D gates "
            "SpeechBrain Conformer layers only"
        },
    ),
)


FAMILY.register(
    MODULE + "WhisperDecoder",
    layer_stack_spec(
        after_cut=_sync_decoder_layers,
        role="decoder",
        refusals={"low_rank_embedding": NO_FACTORED_SCORES},
    ),
)
FAMILY.register(
    MODULE + "WhisperEncoderLayer",
    feed_forward_spec(
        lambda layer: (layer, "fc1", "fc2"),
        dropouts=lambda layer: {"hidden": first_dropout(layer)},
        layer_modules={
            "attention": ["self_attn_layer_norm", "self_attn"],
            "ffn": ["final_layer_norm", "fc1", "fc2"],
        },
        answers={
            "adaptive_dropout": MaskPoints(
                insert={
                    "ffn": lambda layer, options: mask_hidden_units(
                        layer, "fc2", options
                    )
                },
                find=lambda layer: masks_by_label({"ffn": layer.fc2}),
                refused={
                    "query": FIXED_HEAD_WIDTH,
                    "value": FIXED_HEAD_WIDTH,
                    "conv": "a Whisper layer has no convolution",
                },
            )
        },
    ),
)
FAMILY.register(
    MODULE + "WhisperDecoderLayer",
    feed_forward_spec(
        lambda layer: (layer, "fc1", "fc2"),
        dropouts=lambda layer: {"hidden": first_dropout(layer)},
        role="decoder",
        layer_modules={
            "self_attention": ["self_attn_layer_norm", "self_attn"],
            "cross_attention": ["encoder_attn_layer_norm", "encoder_attn"],
            "ffn": ["final_layer_norm", "fc1", "fc2"],
        },
    ),
)
FAMILY.register(MODULE + "WhisperAttention", whole_head_attention_spec())
# SpeechBrain's Whisper lobe (and sb_prune's, which subclasses it).
FAMILY.register(
    "speechbrain.integrations.huggingface.whisper.Whisper",
    ModuleSpec(
        groups=(),
        answers={
            "low_rank_embedding": _factorise_embedding,
            "token_statistics": _token_statistics,
        },
    ),
)


def whisper_stack(model, role="encoder"):
    """The Hugging Face Whisper encoder (or decoder) inside a model.

    Arguments
    ---------
    model : torch.nn.Module
        SpeechBrain's Whisper lobe, a Hugging Face ``WhisperModel`` or
        ``WhisperForConditionalGeneration``, or the stack itself.
    role : str
        ``encoder`` or ``decoder``.

    Returns
    -------
    torch.nn.Module
        The stack.
    """
    found = []
    for module in model.modules():
        spec = spec_of(module)
        if (
            spec is not None
            and spec.family == FAMILY.name
            and spec.is_layer_stack
            and spec.role == role
        ):
            found.append(module)
    if len(found) != 1:
        raise ValueError(
            f"{type(model).__name__} holds {len(found)} Hugging Face Whisper "
            f"{role}s, not one"
        )
    return found[0]
