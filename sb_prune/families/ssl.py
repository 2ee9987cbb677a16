"""The Hugging Face wav2vec2 / HuBERT / WavLM family (SSL encoders).

Named by qualified name (``transformers`` need not be imported):

* the encoders (plain and ``StableLayerNorm``): layer stacks, whose
  ``config.num_hidden_layers`` follows a cut;
* their encoder layers: modules ``attention`` and ``ffn`` (for importance
  analysis and federated dropout);
* their feed-forward blocks (``intermediate_dense`` up, ``output_dense``
  down): group ``hidden``;
* wav2vec2 and HuBERT attention: whole heads (group ``heads``); WavLM's
  attention adds a gated relative-position bias per head and runs torch's
  ``multi_head_attention_forward`` on its projections' weights: its heads
  and the low rank of its projections are refused. Its first layer holds
  the relative-position embedding that every layer uses: a cut that
  removes that layer gives it to the new first layer.

Adaptive dropout and I3D are refused: the layers' forward is Hugging
Face's, with no mask points or gated branches written for it.

Authors
 * sb_prune developers
"""

from sb_prune.core.registry import Family, ModuleSpec, layer_stack_spec
from sb_prune.families.common import (
    feed_forward_spec,
    whole_head_attention_spec,
)

FAMILY = Family("Hugging Face wav2vec2/HuBERT/WavLM")
MODELS = {
    "wav2vec2": "transformers.models.wav2vec2.modeling_wav2vec2.Wav2Vec2",
    "hubert": "transformers.models.hubert.modeling_hubert.Hubert",
    "wavlm": "transformers.models.wavlm.modeling_wavlm.WavLM",
}
NO_MASKS = (
    "no adaptive-dropout points are written for Hugging Face SSL layers "
    "(prune their FFN units and heads with criteria)"
)
NO_GATES = "no gated SSL encoder: I3D gates SpeechBrain Conformer layers only"
WAVLM_ATTENTION = (
    "WavLM attention gates a relative-position bias per head and runs "
    "torch's multi_head_attention_forward on its projections' weights, so "
    "its heads cannot be removed nor its projections factorised in place"
)


def _wavlm_stack_spec():
    """A layer stack whose first layer keeps the relative-position embedding.

    Every layer of a WavLM encoder adds the position bias that its first
    layer's attention computes (``rel_attn_embed``); a cut that removes
    that layer moves the embedding to the new first layer, so the bias,
    hence every remaining layer, is unchanged.
    """
    spec = layer_stack_spec(refusals={"dynamic_depth": NO_GATES})
    cut = spec.prune

    def prune(stack, layers):
        embedding = stack.layers[0].attention.rel_attn_embed
        cut(stack, layers)
        stack.layers[0].attention.rel_attn_embed = embedding

    spec.prune = prune
    return spec


for _name, _prefix in MODELS.items():
    for _suffix in ("Encoder", "EncoderStableLayerNorm"):
        FAMILY.register(
            _prefix + _suffix,
            _wavlm_stack_spec()
            if _name == "wavlm"
            else layer_stack_spec(refusals={"dynamic_depth": NO_GATES}),
        )
    for _suffix in ("EncoderLayer", "EncoderLayerStableLayerNorm"):
        FAMILY.register(
            _prefix + _suffix,
            ModuleSpec(
                groups=(),
                layer_modules={
                    "attention": ["layer_norm", "attention"],
                    "ffn": ["final_layer_norm", "feed_forward"],
                },
                refusals={"adaptive_dropout": NO_MASKS},
            ),
        )
    FAMILY.register(
        _prefix + "FeedForward",
        feed_forward_spec(
            lambda ffn: (ffn, "intermediate_dense", "output_dense")
        ),
    )
    FAMILY.register(
        _prefix + "Attention",
        ModuleSpec(
            groups=(),
            refusals={"heads": WAVLM_ATTENTION, "low_rank": WAVLM_ATTENTION},
        )
        if _name == "wavlm"
        else whole_head_attention_spec(),
    )
