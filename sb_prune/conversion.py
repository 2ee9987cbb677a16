"""Insert sb_prune modules into an existing SpeechBrain model.

:func:`convert` works in place and returns the model, so an existing
hparams file only has to wrap the model it already builds::

    Transformer: !apply:sb_prune.convert
        model: !ref <Transformer_dense>
        adaptive_dropout:
            points: [ffn, query, value, conv]

Converted modules keep the parameter names of the modules they extend, so
load dense pretrained weights before converting (``sb-prune compress`` does
this for you); sb_prune checkpoints are loaded after converting.

Authors
 * sb_prune developers
"""

from speechbrain.lobes.models.transformer.Conformer import ConformerEncoderLayer
from speechbrain.nnet.attention import (
    MultiheadAttention,
    PositionalwiseFeedForward,
    RelPosMHAXL,
)
from torch import nn

from sb_prune.nn._convert import check_keys
from sb_prune.nn.adaptive_dropout import AdaptiveDropout
from sb_prune.nn.attention import PrunableRelPosMHA
from sb_prune.nn.gated import add_dynamic_depth
from sb_prune.nn.group_norm import set_conv_norm
from sb_prune.nn.low_rank import LowRankLinear, rank_for_compression
from sb_prune.nn.mha import PrunableMHA

ADAPTIVE_DROPOUT_POINTS = ("ffn", "query", "value", "conv")
_ADAPTIVE_DROPOUT_OPTIONS = (
    "init_retention",
    "temperature",
    "threshold",
    "min_units",
    "hard",
    "logit_scale",
)


def conformer_layers(model):
    """Return the Conformer encoder layers of a model, in order.

    Arguments
    ---------
    model : torch.nn.Module
        Any module containing SpeechBrain ``ConformerEncoderLayer`` s.

    Returns
    -------
    list of ConformerEncoderLayer
        The layers found.
    """
    return [m for m in model.modules() if isinstance(m, ConformerEncoderLayer)]


def prunable_attention(layer):
    """Return the layer's attention as a :class:`PrunableRelPosMHA`.

    A SpeechBrain ``RelPosMHAXL`` is replaced by an equivalent prunable
    module (same outputs, weights re-laid out per unit).

    Arguments
    ---------
    layer : ConformerEncoderLayer
        The layer whose ``mha_layer`` is converted in place.

    Returns
    -------
    PrunableRelPosMHA
        The layer's attention module.
    """
    mha = layer.mha_layer
    if isinstance(mha, RelPosMHAXL):
        layer.mha_layer = mha = PrunableRelPosMHA.from_relposmhaxl(mha)
    if not isinstance(mha, PrunableRelPosMHA):
        raise ValueError(
            "sb_prune prunes attention of type RelPosMHAXL "
            f"(attention_type: RelPosMHAXL), not {type(mha).__name__}"
        )
    return mha


def adaptive_dropout_points(layer):
    """Return the AdaptiveDropout layers of a Conformer layer by point.

    Arguments
    ---------
    layer : ConformerEncoderLayer
        A layer converted by :func:`add_adaptive_dropout`.

    Returns
    -------
    dict
        ``{"ffn1", "ffn2", "query", "value", "conv"} -> AdaptiveDropout``,
        for the points that have one.
    """
    mha = layer.mha_layer
    candidates = {
        "ffn1": layer.ffn_module1,
        "ffn2": layer.ffn_module2,
        "query": getattr(mha, "query_dropout", None),
        "value": getattr(mha, "value_dropout", None),
        "conv": layer.convolution_module,
    }
    points = {}
    for point, module in candidates.items():
        found = [
            m
            for m in (module.modules() if module is not None else [])
            if isinstance(m, AdaptiveDropout)
        ]
        if found:
            points[point] = found[0]
    return points


def add_adaptive_dropout(model, points=ADAPTIVE_DROPOUT_POINTS, **options):
    """Insert AdaptiveDropout layers into every Conformer layer.

    Application points (Kubo et al. 2024):

    * ``ffn``: the hidden units of both macaron feed-forward blocks;
    * ``query`` / ``value``: the query and value vectors of self-attention
      (per unit; a dropped query dimension also removes its key and
      positional dimensions);
    * ``conv``: the input vectors of the convolution module, after its
      layer norm. Masking there lets pruning remove input channels of the
      pointwise convolution exactly. Masking the channels that feed the
      depthwise convolution instead would not be exact in SpeechBrain,
      whose LayerNorm after the depthwise convolution normalises over all
      channels.

    Arguments
    ---------
    model : torch.nn.Module
        A model containing SpeechBrain ``ConformerEncoderLayer`` s.
    points : list of str
        Application points, a subset of ``ffn, query, value, conv``.
    **options
        ``init_retention``, ``temperature``, ``threshold``, ``min_units``,
        ``hard``, ``logit_scale``: see :class:`~sb_prune.nn.AdaptiveDropout`.

    Returns
    -------
    torch.nn.Module
        The same model, converted in place.

    Example
    -------
    >>> from speechbrain.lobes.models.transformer.Conformer import (
    ...     ConformerEncoder,
    ... )
    >>> enc = add_adaptive_dropout(
    ...     ConformerEncoder(2, 8, 4, 8, attention_type="RelPosMHAXL"),
    ...     points=["ffn", "value"],
    ... )
    >>> type(enc.layers[0].mha_layer).__name__
    'PrunableRelPosMHA'
    """
    check_keys("adaptive_dropout", options, _ADAPTIVE_DROPOUT_OPTIONS)
    points = list(points)
    unknown = sorted(set(points) - set(ADAPTIVE_DROPOUT_POINTS))
    if unknown or not points:
        raise ValueError(
            f"adaptive_dropout.points: unknown or empty {unknown or points}; "
            f"choose from {list(ADAPTIVE_DROPOUT_POINTS)}"
        )
    layers = conformer_layers(model)
    if not layers:
        raise ValueError(
            "adaptive_dropout: the model has no Conformer encoder layers "
            "(ConformerEncoderLayer); use encoder_module: conformer"
        )
    if any(isinstance(m, AdaptiveDropout) for m in model.modules()):
        raise ValueError("adaptive_dropout: the model is already converted")
    for layer in layers:
        if "ffn" in points:
            for block in (layer.ffn_module1, layer.ffn_module2):
                ffn = block[1].ffn
                adl = AdaptiveDropout(ffn[0].out_features, **options)
                ffn[2] = nn.Sequential(adl, ffn[2])
        if "query" in points or "value" in points:
            mha = prunable_attention(layer)
            if "query" in points:
                n_qk = sum(mha.qk_dims)
                mha.query_dropout = AdaptiveDropout(n_qk, **options)
            if "value" in points:
                n_v = sum(mha.v_dims)
                mha.value_dropout = AdaptiveDropout(n_v, **options)
        if "conv" in points:
            conv = layer.convolution_module
            adl = AdaptiveDropout(
                conv.bottleneck[0].in_channels,
                dim=1,
                gathers_input=True,
                **options,
            )
            conv.bottleneck = nn.Sequential(adl, *conv.bottleneck)
    # New modules follow the model's device and train/eval mode.
    device = next(model.parameters()).device
    return model.to(device).train(model.training)


def _replace_modules(model, convert_one):
    """Swap every module for which ``convert_one`` returns a new one."""
    for path, module in list(model.named_modules()):
        new = convert_one(module)
        if new is None:
            continue
        if not path:
            raise ValueError("sb_prune.convert cannot replace the model itself")
        parent_path, _, name = path.rpartition(".")
        setattr(model.get_submodule(parent_path), name, new)


def _prunable_equivalent(module):
    if isinstance(module, RelPosMHAXL):
        return PrunableRelPosMHA.from_relposmhaxl(module)
    if isinstance(module, MultiheadAttention):
        return PrunableMHA.from_multihead(module)
    return None


def add_prunable_attention(model):
    """Make every self-attention module prunable, head by head.

    SpeechBrain's ``RelPosMHAXL`` becomes a
    :class:`~sb_prune.nn.PrunableRelPosMHA` and its ``regularMHA``
    (``MultiheadAttention``) a :class:`~sb_prune.nn.PrunableMHA`; both
    compute the same outputs as before, with the same parameter values laid
    out per unit. Attention modules that are already prunable are left as
    they are.

    Arguments
    ---------
    model : torch.nn.Module
        A SpeechBrain model (Conformer/Transformer encoder, TransformerLM).

    Returns
    -------
    torch.nn.Module
        The same model, converted in place.

    Example
    -------
    >>> from speechbrain.lobes.models.transformer.TransformerLM import (
    ...     TransformerLM,
    ... )
    >>> lm = TransformerLM(10, d_model=8, nhead=2, num_encoder_layers=1,
    ...                    d_ffn=16)
    >>> lm = add_prunable_attention(lm)
    >>> type(lm.encoder.layers[0].self_att).__name__
    'PrunableMHA'
    """
    _replace_modules(model, _prunable_equivalent)
    if not any(
        isinstance(m, (PrunableMHA, PrunableRelPosMHA)) for m in model.modules()
    ):
        raise ValueError(
            "prunable_attention: the model has no RelPosMHAXL or regularMHA "
            "attention (attention_type: RelPosMHAXL or regularMHA)"
        )
    return model


LOW_RANK_POINTS = ("ffn", "attention")


def _low_rank_targets(model, points):
    """``(parent, attribute name, path)`` of each Linear to factorise."""
    targets = []
    for path, module in model.named_modules():
        names = []
        if "ffn" in points and isinstance(module, PositionalwiseFeedForward):
            module, path = module.ffn, f"{path}.ffn"
            names = ["0", str(len(module) - 1)]
        elif "attention" in points and isinstance(
            module, (PrunableMHA, PrunableRelPosMHA)
        ):
            names = ["in_proj", "out_proj"]
        for name in names:
            if isinstance(getattr(module, name), LowRankLinear):
                raise ValueError("low_rank: the model is already converted")
            targets.append((module, name, f"{path}.{name}".lstrip(".")))
    return targets


def add_low_rank(model, points=("ffn",), rank=None, compression=None):
    """Replace Linear layers by :class:`~sb_prune.nn.LowRankLinear`.

    Each layer is factorised by truncated SVD of its current weights, so
    load trained weights before converting (a full-rank conversion is
    exact). Application points:

    * ``ffn``: both Linear layers of every feed-forward block
      (``PositionalwiseFeedForward``: Conformer macaron FFNs, Transformer
      encoder/LM FFNs);
    * ``attention``: the input (query/key/value) and output projections of
      every self-attention, made prunable first (see
      :func:`add_prunable_attention`). Low-rank projections cannot have
      their heads pruned afterwards. :class:`~sb_prune.nn.PrunableMHA`
      (regularMHA: Transformer encoders, TransformerLM) applies them as
      modules, so they save time; :class:`~sb_prune.nn.PrunableRelPosMHA`
      (Conformers) builds padded dense weights on every call, so there they
      save parameters but not time.

    Arguments
    ---------
    model : torch.nn.Module
        A SpeechBrain model.
    points : list of str
        A subset of ``ffn, attention``.
    rank : int, optional
        The rank of every converted layer, in ``[1, min(in, out)]``.
    compression : float, optional
        Instead of ``rank``: the fraction of each dense weight matrix's
        entries that the factors remove, in [0, 1) (0 is the break-even
        rank, see :func:`~sb_prune.nn.low_rank.rank_for_compression`).
        Without ``rank`` and ``compression`` the conversion is full rank
        (exact, but larger than the dense layer until compressed).

    Returns
    -------
    torch.nn.Module
        The same model, converted in place.

    Example
    -------
    >>> ffn = PositionalwiseFeedForward(d_ffn=8, input_size=4)
    >>> block = add_low_rank(nn.Sequential(ffn), compression=0.5)
    >>> ffn.ffn[0].rank, ffn.ffn[3].rank
    (1, 1)
    >>> add_low_rank(
    ...     nn.Sequential(PositionalwiseFeedForward(d_ffn=8, input_size=4)),
    ...     rank=5,
    ... )
    Traceback (most recent call last):
    ...
    ValueError: low_rank.rank (0.ffn.0) must be in [1, ...4], got 5
    """
    points = list(points)
    unknown = sorted(set(points) - set(LOW_RANK_POINTS))
    if unknown or not points:
        raise ValueError(
            f"low_rank.points: unknown or empty {unknown or points}; choose "
            f"from {list(LOW_RANK_POINTS)}"
        )
    if rank is not None and compression is not None:
        raise ValueError("low_rank: give rank or compression, not both")
    if "attention" in points:
        add_prunable_attention(model)
    targets = _low_rank_targets(model, points)
    if not targets:
        raise ValueError(
            f"low_rank: the model has no Linear layer at points {points}"
        )
    for parent, name, path in targets:
        dense = getattr(parent, name)
        layer_rank = rank
        if compression is not None:
            layer_rank = rank_for_compression(
                dense.in_features, dense.out_features, compression
            )
        if layer_rank is not None and not (
            1 <= layer_rank <= min(dense.in_features, dense.out_features)
        ):
            raise ValueError(
                f"low_rank.rank ({path}) must be in [1, min(in_features, "
                f"out_features) = "
                f"{min(dense.in_features, dense.out_features)}], got "
                f"{layer_rank}"
            )
        low = LowRankLinear.from_linear(dense, layer_rank)
        setattr(parent, name, low.train(dense.training))
    return model


def _no_options(converter, name):
    def convert_without_options(model, **options):
        check_keys(name, options, ())
        return converter(model)

    return convert_without_options


_CONVERTERS = {
    "adaptive_dropout": add_adaptive_dropout,
    "prunable_attention": _no_options(
        add_prunable_attention, "prunable_attention"
    ),
    "low_rank": add_low_rank,
    "conv_norm": set_conv_norm,
    "dynamic_depth": add_dynamic_depth,
}


def convert(model, **methods):
    """Insert sb_prune modules into ``model`` (in place) and return it.

    Arguments
    ---------
    model : torch.nn.Module
        A SpeechBrain model (e.g. ``TransformerASR`` with a Conformer
        encoder).
    **methods
        One keyword per method, each a mapping of its options:
        ``adaptive_dropout`` (see :func:`add_adaptive_dropout`),
        ``prunable_attention`` (no options, see
        :func:`add_prunable_attention`), ``low_rank`` (see
        :func:`add_low_rank`), ``conv_norm`` (see
        :func:`sb_prune.nn.group_norm.set_conv_norm`), ``dynamic_depth``
        (I3D gates, see :func:`sb_prune.nn.gated.add_dynamic_depth`).

    Returns
    -------
    torch.nn.Module
        The converted model.

    Example
    -------
    >>> from speechbrain.lobes.models.transformer.TransformerASR import (
    ...     TransformerASR,
    ... )
    >>> model = TransformerASR(
    ...     tgt_vocab=10, input_size=8, d_model=8, nhead=2,
    ...     num_encoder_layers=1, num_decoder_layers=0, d_ffn=16,
    ...     encoder_module="conformer", attention_type="RelPosMHAXL",
    ...     normalize_before=True, causal=False,
    ... )
    >>> model = convert(model, adaptive_dropout={"points": ["ffn"]})
    >>> convert(model, pruning={})
    Traceback (most recent call last):
    ...
    ValueError: sb_prune.convert: unknown method(s) ['pruning']; ...
    """
    unknown = sorted(set(methods) - set(_CONVERTERS))
    if unknown:
        raise ValueError(
            f"sb_prune.convert: unknown method(s) {unknown}; valid methods "
            f"are {sorted(_CONVERTERS)}"
        )
    for name, options in methods.items():
        _CONVERTERS[name](model, **(options or {}))
        # Remembered so that exports can rebuild the architecture.
        history = recorded_conversions(model) + [(name, dict(options or {}))]
        model._sb_prune_conversions = history
    return model


def recorded_conversions(model):
    """Return the ``(method, options)`` pairs :func:`convert` applied.

    Arguments
    ---------
    model : torch.nn.Module
        A model passed to :func:`convert` (or not).

    Returns
    -------
    list
        In the order they were applied (empty if none).
    """
    return list(getattr(model, "_sb_prune_conversions", []))
