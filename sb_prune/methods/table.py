"""The method table: where each part of every method lives, named once.

One :class:`Method` per method or analysis: its ``sb_prune.convert``
keyword and converter, the hooks ``sb_prune.hooks`` exports, the modules
``sb_prune.nn`` exports, its YAML fragment (``hparams/``), its recipes
(``recipes/LibriSpeech/``) and how ``sb-prune compress`` runs it on a
trained model. :func:`sb_prune.convert`, those two namespaces and the
command line read it; adding a method is adding an entry. Code is named by
its dotted path (data: this module imports none of it) and imported on
first use by its readers (:func:`sb_prune.core.names.resolve`), so reading
the table is light.

Authors
 * sb_prune developers
"""

from dataclasses import dataclass, field
from typing import Optional

_M = "sb_prune.methods"


@dataclass(frozen=True)
class Compression:
    """How ``sb-prune compress`` runs a method on a trained dense model.

    Arguments
    ---------
    recipe : str
        The hparams file of ``recipes/LibriSpeech/ASR/hparams`` it runs.
    overrides : dict
        Recipe keys set for a trained model (the recipe's defaults train
        from scratch).
    schedule : tuple of str
        The recipe keys of the pruning schedule's start epoch, number of
        steps and epochs between steps (a prefix of these three): a trained
        model needs no pre-training, so the schedule starts after the first
        epoch and spreads its steps over the first half of the epochs,
        leaving the rest for fine-tuning.

    Example
    -------
    >>> criteria = Compression("x.yaml", {"criterion": "taylor"},
    ...     ("prune_start_epoch", "prune_steps"))
    >>> criteria.settings(epochs=6)
    {'criterion': 'taylor', 'prune_start_epoch': 1, 'prune_steps': 3}
    >>> Compression("y.yaml", schedule=("start", "steps", "every")).settings(2)
    {'start': 1, 'steps': 1, 'every': 1}
    """

    recipe: str
    overrides: dict = field(default_factory=dict)
    schedule: tuple = ()

    def settings(self, epochs):
        """The recipe overrides of a run of ``epochs`` epochs."""
        values = (1, max(1, epochs // 2), 1)
        return {**self.overrides, **dict(zip(self.schedule, values))}


@dataclass(frozen=True)
class Method:
    """Where the parts of one method live.

    Arguments
    ---------
    convert : str, optional
        Its keyword of ``sb_prune.convert``.
    converter : str, optional
        The function that keyword runs, ``converter(model, **options)``.
    hooks : tuple of str
        Its hook classes, exported by ``sb_prune.hooks``.
    modules : tuple of str
        Its drop-in modules, exported by ``sb_prune.nn``.
    fragment : str, optional
        Its YAML fragment in ``hparams/`` (what to add to an hparams file).
    recipes : tuple of str
        Hparams files under ``recipes/LibriSpeech`` that run it (besides
        those of ``compress``).
    compress : dict
        ``sb-prune compress --method`` name -> :class:`Compression`.
    """

    convert: Optional[str] = None
    converter: Optional[str] = None
    hooks: tuple = ()
    modules: tuple = ()
    fragment: Optional[str] = None
    recipes: tuple = ()
    compress: dict = field(default_factory=dict)


#: Adaptive dropout from a trained model (the recipe's defaults are the
#: paper's, from scratch): retention starts at 0.6 and moves fast, and a
#: weak regulariser lets the task keep what it needs. Chosen on the
#: validation set, the demo's dense model, 6 epochs on the whole synthetic
#: training set (benchmarks/results/ad_compress_whole_set.json): 60.5%
#: fewer encoder parameters at test WER 5.81 +- 0.15 (3 seeds) against the
#: dense 6.16; weight 3e-5 removed 73% at 7.27. Fewer steps or a lower
#: learning rate need a stronger regulariser.
ADAPTIVE_DROPOUT_FROM_TRAINED = {
    "adl_init_retention": 0.6,
    "adl_logit_scale": 30.0,
    "adl_regularization_weight": 0.00001,
}

#: The schedule keys of the criteria and low-rank ASR recipes.
_PRUNE_SCHEDULE = ("prune_start_epoch", "prune_steps")

#: Every method and analysis, by name.
METHODS = {
    "adaptive_dropout": Method(
        convert="adaptive_dropout",
        converter=f"{_M}.adaptive_dropout.convert.add_adaptive_dropout",
        hooks=(f"{_M}.adaptive_dropout.hook.AdaptiveDropoutPruning",),
        modules=(f"{_M}.adaptive_dropout.layer.AdaptiveDropout",),
        fragment="adaptive_dropout.yaml",
        recipes=("whisper/hparams/whisper_adaptive_dropout.yaml",),
        compress={
            "adaptive-dropout": Compression(
                "conformer_ctc_adaptive_dropout.yaml",
                ADAPTIVE_DROPOUT_FROM_TRAINED,
            )
        },
    ),
    "criteria": Method(
        convert="prunable_attention",
        converter=f"{_M}.attention.convert.add_prunable_attention",
        hooks=(f"{_M}.criteria.hook.CriterionPruning",),
        modules=(
            f"{_M}.attention.mha.PrunableMHA",
            f"{_M}.attention.relpos.PrunableRelPosMHA",
        ),
        fragment="criterion_pruning.yaml",
        recipes=(
            "LM/hparams/transformer_lm_incremental.yaml",
            "LM/hparams/transformer_lm_one_shot.yaml",
            "whisper/hparams/whisper_criteria.yaml",
        ),
        compress={
            criterion: Compression(
                "conformer_ctc_criteria.yaml",
                {"criterion": criterion},
                _PRUNE_SCHEDULE,
            )
            for criterion in ("magnitude", "taylor", "activation", "wanda")
        },
    ),
    "low_rank": Method(
        convert="low_rank",
        converter=f"{_M}.low_rank.convert.add_low_rank",
        hooks=(
            f"{_M}.low_rank.hook.ActivationLowRank",
            f"{_M}.low_rank.hook.LowRankCompression",
        ),
        modules=(f"{_M}.low_rank.layer.LowRankLinear",),
        fragment="low_rank.yaml",
        recipes=(
            "LM/hparams/transformer_lm_low_rank.yaml",
            "whisper/hparams/whisper_low_rank.yaml",
            "whisper/hparams/whisper_lite_asr.yaml",
        ),
        compress={
            "low-rank": Compression(
                "conformer_ctc_low_rank.yaml",
                schedule=(*_PRUNE_SCHEDULE, "prune_every"),
            )
        },
    ),
    "low_rank_embedding": Method(
        convert="low_rank_embedding",
        converter=f"{_M}.low_rank.convert.add_low_rank_embedding",
        hooks=(f"{_M}.low_rank.token_table.TokenTableLowRank",),
        modules=(
            f"{_M}.low_rank.embedding.LowRankEmbedding",
            # The Hugging Face Whisper family's lobe that uses the factors.
            "sb_prune.families.whisper.lobe.WhisperLobe",
        ),
        fragment="low_rank_embedding.yaml",
        recipes=("whisper/hparams/whisper_prune.yaml",),
    ),
    "i3d": Method(
        convert="dynamic_depth",
        converter=f"{_M}.i3d.convert.add_dynamic_depth",
        modules=(
            f"{_M}.i3d.gating.GatePredictor",
            # The SpeechBrain Conformer family's gated classes.
            "sb_prune.families.conformer_gated.GatedConformerEncoder",
            "sb_prune.families.conformer_gated.GatedConformerLayer",
        ),
        fragment="i3d.yaml",
        compress={
            # The static baseline: criterion pruning of whole layers.
            "layer-pruning": Compression(
                "conformer_ctc_static_layer_pruning.yaml",
                schedule=("static_start_epoch",),
            ),
            "i3d-local": Compression("conformer_ctc_i3d_local.yaml"),
            "i3d-global": Compression("conformer_ctc_i3d_global.yaml"),
        },
    ),
    "convexity_layer_cut": Method(
        hooks=(
            "sb_prune.analysis.convexity.hooks.ConvexityScoring",
            f"{_M}.layer_cut.hook.LayerCut",
        ),
        fragment="convexity.yaml",
        recipes=(
            "classification/hparams/classify.yaml",
            "whisper/hparams/whisper_layer_cut.yaml",
        ),
    ),
    "layer_importance": Method(
        convert="conv_norm",
        converter=f"{_M}.conv_norm.group_norm.set_conv_norm",
        hooks=("sb_prune.analysis.importance.tracking.WeightChangeTracker",),
        fragment="importance.yaml",
        recipes=("ambient/hparams/conformer_ctc_importance.yaml",),
    ),
    "distillation": Method(
        hooks=("sb_prune.training.distillation.Distillation",),
        fragment="distillation.yaml",
        recipes=("whisper/hparams/whisper_prune.yaml",),
    ),
    "federated_dropout": Method(
        fragment="federated_dropout.yaml",
        recipes=("federated/hparams/federated_dropout.yaml",),
    ),
}


def converters():
    """``sb_prune.convert`` keyword -> dotted path of its converter.

    Returns
    -------
    dict
        In table order.

    Example
    -------
    >>> sorted(converters())[:4]
    ['adaptive_dropout', 'conv_norm', 'dynamic_depth', 'low_rank']
    >>> sorted(converters())[4:]
    ['low_rank_embedding', 'prunable_attention']
    """
    return {m.convert: m.converter for m in METHODS.values() if m.convert}


def compressions():
    """``sb-prune compress --method`` name -> :class:`Compression`.

    Returns
    -------
    dict
        In table order.

    Example
    -------
    >>> list(compressions())[:3]
    ['adaptive-dropout', 'magnitude', 'taylor']
    """
    return {
        name: compression
        for method in METHODS.values()
        for name, compression in method.compress.items()
    }


def public_classes(kind):
    """Class name -> dotted path, for ``"hooks"`` or ``"modules"``.

    Arguments
    ---------
    kind : str
        The :class:`Method` field: ``hooks`` (``sb_prune.hooks``) or
        ``modules`` (``sb_prune.nn``).

    Returns
    -------
    dict
        Sorted by name.

    Example
    -------
    >>> public_classes("modules")["LowRankLinear"]
    'sb_prune.methods.low_rank.layer.LowRankLinear'
    """
    paths = [path for m in METHODS.values() for path in getattr(m, kind)]
    return dict(sorted((path.rpartition(".")[2], path) for path in paths))
