"""Replace Linear layers by truncated-SVD low-rank factors.

Authors
 * sb_prune developers
"""

from sb_prune.core.registry import answered, answers_under, refusal, spec_of
from sb_prune.core.validation import check_choices, check_int, check_number
from sb_prune.methods.attention.convert import swap_prunable_attention
from sb_prune.methods.low_rank.layer import (
    LowRankLinear,
    check_rank,
    rank_for_compression,
)

LOW_RANK_POINTS = ("ffn", "attention")


def low_rank_targets(model, points, method="low_rank"):
    """``(parent, attribute name, path)`` of each Linear to factorise.

    The Linear layers of a point are those the registry's specs list under
    that ``low_rank_point`` (:mod:`sb_prune.families`). A point without
    any is refused, naming the model's families and their reasons (their
    ``refusals`` of ``low_rank``).

    Arguments
    ---------
    model : torch.nn.Module
        The model.
    points : list of str
        A subset of ``LOW_RANK_POINTS``.
    method : str
        What asks, for the messages.

    Returns
    -------
    list of tuple
        In module order.
    """
    paths = {module: path for path, module in model.named_modules()}
    targets, found = [], set()
    for module in list(paths):
        spec = spec_of(module)
        if spec is None or spec.low_rank_point not in points:
            continue
        found.add(spec.low_rank_point)
        for parent, name in spec.linears(module):
            if isinstance(getattr(parent, name), LowRankLinear):
                raise ValueError(f"{method}: the model is already converted")
            path = f"{paths[parent]}.{name}".lstrip(".")
            targets.append((parent, name, path))
    for point in points:
        if point in found:
            continue
        missing = f"no Linear layer at point '{point}'"
        if point == "attention" and answered(model, "prunable_attention"):
            missing = "add prunable_attention to sb_prune.convert"
        raise refusal(model, "low_rank", missing, f"{method} points '{point}'")
    return targets


def add_low_rank(model, points=("ffn",), rank=None, compression=None):
    """Replace Linear layers by :class:`~sb_prune.nn.LowRankLinear`.

    Each layer is factorised by truncated SVD of its current weights, so
    load trained weights before converting (a full-rank conversion is
    exact). Application points:

    * ``ffn``: both Linear layers of every feed-forward block
      (``PositionalwiseFeedForward``: Conformer macaron FFNs, Transformer
      encoder/LM FFNs; Hugging Face Whisper, wav2vec2, HuBERT, WavLM);
    * ``attention``: the input (query/key/value) and output projections of
      every self-attention (SpeechBrain's are made prunable first, see
      :func:`add_prunable_attention`; Hugging Face Whisper's query, key,
      value and output projections are factorised as they are).
      Low-rank projections cannot have their heads pruned afterwards.
      :class:`~sb_prune.nn.PrunableMHA` (regularMHA: Transformer
      encoders, TransformerLM) and :class:`~sb_prune.nn.PrunableRelPosMHA`
      (Conformers) apply them as modules (except under adaptive-dropout
      masks, which need the dense weights).

    Arguments
    ---------
    model : torch.nn.Module
        A SpeechBrain model.
    points : list of str
        A subset of ``ffn, attention`` (a single name is a list of one).
    rank : int, optional
        The rank of every converted layer, in ``[1, min(in, out)]``.
    compression : float, optional
        Instead of ``rank``: the fraction of each dense weight matrix's
        entries that the factors remove, in [0, 1) (0 is the break-even
        rank, see
        :func:`~sb_prune.methods.low_rank.layer.rank_for_compression`).
        Without ``rank`` and ``compression`` the conversion is full rank
        (exact, but larger than the dense layer until compressed).

    Returns
    -------
    torch.nn.Module
        The same model, converted in place.

    Example
    -------
    >>> from speechbrain.nnet.attention import PositionalwiseFeedForward
    >>> from torch import nn
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
    >>> add_low_rank(nn.Sequential(ffn), compression="0.5")
    Traceback (most recent call last):
    ...
    ValueError: low_rank.compression must be a number in [0, 1), got '0.5'
    """
    points = check_choices("low_rank.points", points, LOW_RANK_POINTS)
    if rank is not None and compression is not None:
        raise ValueError("low_rank: give rank or compression, not both")
    if rank is not None:
        # The range depends on each layer's shape: checked below.
        check_int("low_rank.rank", rank)
    if compression is not None:
        check_number("low_rank.compression", compression, 0, 1, open_high=True)
    if "attention" in points:  # those a family converts; others as they are
        swap_prunable_attention(model)
    targets = low_rank_targets(model, points)
    for parent, name, path in targets:
        dense = getattr(parent, name)
        layer_rank = rank
        if compression is not None:
            layer_rank = rank_for_compression(
                dense.in_features, dense.out_features, compression
            )
        if layer_rank is not None:
            check_rank(
                layer_rank,
                dense.in_features,
                dense.out_features,
                key=f"low_rank.rank ({path})",
            )
        low = LowRankLinear.from_linear(dense, layer_rank)
        setattr(parent, name, low.train(dense.training))
    return model


def add_low_rank_embedding(model, rank):
    """Factorise the tied token tables of a model's decoders (rank ``rank``).

    Where a decoder reads its token embedding table to embed its input and,
    transposed, to score the vocabulary (Whisper), the table becomes a
    :class:`~sb_prune.methods.low_rank.embedding.LowRankEmbedding` from its
    truncated SVD: both uses then cost ``rank`` / width of the dense ones.
    Which decoders have such a table is their family's answer to
    ``low_rank_embedding``. This is the ``low_rank_embedding`` method of
    :func:`sb_prune.convert`::

        whisper: !apply:sb_prune.convert
            model: !ref <whisper_dense>
            low_rank_embedding: {rank: 192}

    Arguments
    ---------
    model : torch.nn.Module
        A model holding decoders whose family answers.
    rank : int or None
        The rank of every table, >= 1 (None: the model is left as it is,
        so one hparams file serves both).

    Returns
    -------
    torch.nn.Module
        The same model, converted in place.
    """
    if rank is None:
        return model
    check_int("low_rank_embedding.rank", rank, minimum=1)
    for _, decoder, factorise in answers_under(model, "low_rank_embedding"):
        factorise(decoder, rank)
    return model
