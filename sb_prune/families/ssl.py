"""The Hugging Face wav2vec2 / HuBERT / WavLM family (SSL encoders).

Named by qualified name (``transformers`` need not be imported):

* the encoders (plain and ``StableLayerNorm``): layer stacks, whose
  ``config.num_hidden_layers`` follows a cut;
* their encoder layers: modules ``attention`` and ``ffn`` (for importance
  analysis and federated dropout);
* their feed-forward blocks (``intermediate_dense`` up, ``output_dense``
  down): group ``hidden``;
* wav2vec2 and HuBERT attention: whole heads (group ``heads``); WavLM's
  attention adds a gated relative-position bias per head and is refused.

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

for _name, _prefix in MODELS.items():
    for _suffix in ("Encoder", "EncoderStableLayerNorm"):
        FAMILY.register(
            _prefix + _suffix,
            layer_stack_spec(refusals={"dynamic_depth": NO_GATES}),
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
    if _name != "wavlm":
        FAMILY.register(_prefix + "Attention", whole_head_attention_spec())
