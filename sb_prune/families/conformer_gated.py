"""I3D gates for the SpeechBrain Conformer: the family's gated classes.

Gate names and what a closed gate skips in a SpeechBrain
``ConformerEncoderLayer`` (the residual branches of its forward):

* ``ffn``: both macaron feed-forward branches (``x + 0.5 * ffn_module1(x)``
  and ``x + 0.5 * ffn_module2(x)`` become ``x``; one gate for the pair,
  which is the FFN of I3D's Transformer layer). The layer's closing
  ``norm2`` always runs;
* ``attention``: ``x + mha_layer(norm1(x))`` becomes ``x``;
* ``conv``: ``x + convolution_module(x)`` becomes ``x``.

A layer whose branches are all closed computes ``norm2(x)`` only. The
gating itself (predictors, Gumbel-softmax decisions, the regulariser) is
the method's (:mod:`sb_prune.methods.i3d.gating`). The gated classes
subclass SpeechBrain's and build with its arguments; converting a trained
model builds new instances that take over the existing submodules
(:meth:`GatedConformerEncoder.from_encoder`). The encoder's forward is
SpeechBrain's; a layer's forward is SpeechBrain's when no branch is closed,
and otherwise runs the branches one by one: the four branch expressions of
``ConformerEncoderLayer.forward`` are the only upstream code mirrored (see
:meth:`GatedConformerLayer._branches`).

Authors
 * sb_prune developers
"""

import torch
from speechbrain.lobes.models.transformer.Conformer import (
    ConformerEncoder,
    ConformerEncoderLayer,
)

from sb_prune.methods.i3d.gating import (
    DEFAULT_GATES,
    DYNAMIC_DEPTH_OPTIONS,
    GatedEncoder,
    GatedLayer,
    take_over,
)


def model_dim(layer_norm):
    """``d_model`` of a SpeechBrain LayerNorm wrapper or an nn.LayerNorm.

    Arguments
    ---------
    layer_norm : torch.nn.Module
        A LayerNorm.

    Returns
    -------
    int
        The normalised width.
    """
    norm = getattr(layer_norm, "norm", layer_norm)
    return norm.normalized_shape[0]


class GatedConformerLayer(GatedLayer, ConformerEncoderLayer):
    """A ConformerEncoderLayer with binary gates on its residual branches.

    The forward takes SpeechBrain's arguments plus ``gates``; without gates
    it is ``ConformerEncoderLayer.forward``. Gate decisions are made by the
    :class:`GatedConformerEncoder` that holds the layer; with a ``local``
    predictor, the layer holds its own gate predictor as
    ``gate_predictor`` (so it follows the layer when layers are cut).

    Arguments
    ---------
    d_model, d_ffn, nhead, kernel_size, kdim, vdim, activation, bias, \
dropout, causal, attention_type
        Those of SpeechBrain's ``ConformerEncoderLayer``.
    gates : list of str
        The gated branches, a subset of ``attention, conv, ffn``.
    local_predictor : bool
        Whether the layer has its own gate predictor.
    predictor_hidden : int
        Hidden units of the local predictor, >= 1.
    init_probability : float
        Initial execution probability of the local predictor's gates.

    Example
    -------
    >>> layer = GatedConformerLayer(
    ...     8, 16, 2, kernel_size=3, gates=["attention", "conv", "ffn"]
    ... ).eval()
    >>> x, pos = torch.rand(3, 5, 8), torch.rand(1, 9, 8)
    >>> gates = torch.tensor([[1.0, 1, 1], [0.0, 1, 1], [0.0, 0, 0]])
    >>> out, _ = layer(x, pos_embs=pos, gates=gates)
    >>> torch.allclose(out[2], layer.norm2(x[2]))
    True
    """

    def __init__(
        self,
        *args,
        gates=DEFAULT_GATES,
        local_predictor=True,
        predictor_hidden=64,
        init_probability=0.9,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self._add_gates(
            gates, local_predictor, predictor_hidden, init_probability
        )

    @classmethod
    def from_layer(
        cls,
        layer,
        gates=DEFAULT_GATES,
        local_predictor=True,
        predictor_hidden=64,
        init_probability=0.9,
    ):
        """Return a gated layer that replaces a ``ConformerEncoderLayer``.

        The result is what ``GatedConformerLayer(...)`` builds, without
        rebuilding the submodules: it holds those of ``layer`` (the same
        objects under the same names, so weights and parameter names are
        kept, whatever other conversions made of them), plus a gate
        predictor if ``local_predictor``. ``layer`` is left as it was; use
        the result in its place.

        Arguments
        ---------
        layer : ConformerEncoderLayer
            The layer to convert.
        gates, local_predictor, predictor_hidden, init_probability
            See :class:`GatedConformerLayer`.

        Returns
        -------
        GatedConformerLayer
            A new layer.

        Example
        -------
        >>> layer = ConformerEncoderLayer(8, 16, 2, kernel_size=3)
        >>> gated = GatedConformerLayer.from_layer(layer, gates="conv")
        >>> type(gated).__name__, gated.gates
        ('GatedConformerLayer', ('conv',))
        >>> gated.convolution_module is layer.convolution_module
        True
        """
        if isinstance(layer, GatedConformerLayer):
            raise ValueError("dynamic_depth: the layer is already gated")
        if type(layer) is not ConformerEncoderLayer:
            raise ValueError(
                "dynamic_depth gates SpeechBrain ConformerEncoderLayers, not "
                f"{type(layer).__name__}"
            )
        gated = take_over(cls, layer)
        gated._add_gates(
            gates, local_predictor, predictor_hidden, init_probability
        )
        return gated

    def _gate_width(self):
        return model_dim(self.norm1)

    def forward(
        self,
        x,
        src_mask=None,
        src_key_padding_mask=None,
        pos_embs=None,
        dynchunktrain_config=None,
        gates=None,
    ):
        """Run the layer; closed branches are skipped.

        When no branch is closed (no gates, or at inference every gate of
        the batch open), this is ``ConformerEncoderLayer.forward``.
        Otherwise the residual branches of :meth:`_branches` run one by one.

        Arguments
        ---------
        x : torch.Tensor
            ``[B, T, d_model]``.
        src_mask, src_key_padding_mask, pos_embs, dynchunktrain_config
            As for SpeechBrain's ``ConformerEncoderLayer``.
        gates : torch.Tensor, optional
            ``[B, len(self.gates)]`` gate values in the order of
            ``self.gates``. In training the branches are multiplied by
            them; in evaluation a branch runs only for the utterances whose
            gate is positive. None: those that the
            :class:`GatedConformerEncoder` running the layer decides, if
            any; otherwise every branch runs.

        Returns
        -------
        x : torch.Tensor
            The layer's output.
        attention : torch.Tensor or None
            Attention weights (zeros for utterances that skipped the
            attention; None if none ran it).
        """
        gate = self._gate_values(x, gates)
        if gate is None:
            return super().forward(
                x,
                src_mask=src_mask,
                src_key_padding_mask=src_key_padding_mask,
                pos_embs=pos_embs,
                dynchunktrain_config=dynchunktrain_config,
            )
        branches = self._branches(src_mask, pos_embs, dynchunktrain_config)
        x, attention = self._run_branches(
            x, gate, src_key_padding_mask, branches
        )
        return self.norm2(x), attention

    def _branches(self, src_mask, pos_embs, dynchunktrain_config):
        """The residual branches of the layer, in order, with their gates.

        The only upstream code mirrored in this module. SpeechBrain's
        ``ConformerEncoderLayer.forward`` (1.1.2) computes ``x = x +
        branch(x)`` for each of these four branches, in this order, then
        returns ``norm2(x)`` and the attention weights:

        * ``ffn``: ``0.5 * ffn_module1(x)``;
        * ``attention``: ``mha_layer(h, h, h, attn_mask=src_mask,
          key_padding_mask=mask, pos_embs=pos_embs)`` with ``h = norm1(x)``
          (it also returns the attention weights);
        * ``conv``: ``convolution_module(x, mask.unsqueeze(-1),
          dynchunktrain_config=dynchunktrain_config)``;
        * ``ffn``: ``0.5 * ffn_module2(x)``.

        :meth:`forward` cannot call ``super().forward`` for a gated layer:
        it runs the four branches in one call, where one of them must be
        skipped for some utterances (or scaled by the gate in training).
        The branches call the layer's submodules, so conversions of those
        modules still apply; ``mask`` is the key padding mask of the
        utterances a branch runs on. ``tests/test_gated.py`` checks that
        they still compute ``ConformerEncoderLayer.forward``.

        Arguments
        ---------
        src_mask, pos_embs, dynchunktrain_config
            Those of :meth:`forward`.

        Returns
        -------
        list
            ``(gate name, branch)`` pairs; ``branch(x, mask)`` returns the
            update of ``x`` and the attention weights (None for the other
            branches).
        """

        def ffn1(x, mask):
            return 0.5 * self.ffn_module1(x), None

        def attention(x, mask):
            x = self.norm1(x)
            return self.mha_layer(
                x,
                x,
                x,
                attn_mask=src_mask,
                key_padding_mask=mask,
                pos_embs=pos_embs,
            )

        def convolution(x, mask):
            conv_mask = None if mask is None else mask.unsqueeze(-1)
            out = self.convolution_module(
                x, conv_mask, dynchunktrain_config=dynchunktrain_config
            )
            return out, None

        def ffn2(x, mask):
            return 0.5 * self.ffn_module2(x), None

        return [
            ("ffn", ffn1),
            ("attention", attention),
            ("conv", convolution),
            ("ffn", ffn2),
        ]

    def _timing_inputs(self, frames, batch):
        """An input of ``frames`` frames and the branches to time on it."""
        parameter = next(self.parameters())
        options = {"device": parameter.device, "dtype": parameter.dtype}
        width = model_dim(self.norm1)
        x = torch.randn(batch, frames, width, **options)
        pos_embs = torch.randn(1, 2 * frames - 1, width, **options)
        return x, self._branches(None, pos_embs, None)


class GatedConformerEncoder(GatedEncoder, ConformerEncoder):
    """A Conformer encoder with I3D input-dependent dynamic depth.

    Built like SpeechBrain's ``ConformerEncoder`` (same arguments, plus the
    gating options as keywords), or converted from one with
    :meth:`from_encoder` (what ``sb_prune.convert(model, dynamic_depth=
    {...})`` does). Its forward is ``ConformerEncoder.forward`` (LayerDrop,
    hidden states and final norm included), its layers taking their gates
    from the encoder (see :class:`~sb_prune.methods.i3d.gating.GatedEncoder`
    for what it exposes after each forward).

    Arguments
    ---------
    num_layers, d_model, d_ffn, nhead, kernel_size, kdim, vdim, activation, \
bias, dropout, causal, attention_type, output_hidden_states, layerdrop_prob
        Those of SpeechBrain's ``ConformerEncoder``.
    predictor : str, default "local"
        ``local`` (one gate predictor per layer, on its input) or
        ``global`` (one on the encoder input, for all gates).
    gates : list of str, default ["attention", "ffn"]
        The gated branches of every layer, a subset of ``attention, conv,
        ffn`` (see the module docstring).
    predictor_hidden : int, default 64
        Hidden units of the gate predictor(s), >= 1.
    temperature : float, default 1.0
        Gumbel-softmax temperature in training, > 0.
    threshold : float, default 0.5
        In evaluation a gate is open when its execution probability
        exceeds it, in (0, 1).
    target : float, default 0.6
        Target fraction of executed modules, in (0, 1].
    regularization_weight : float, default 1.0
        Weight of ``(mean p - target)^2`` in the training loss, >= 0.
    init_probability : float, default 0.9
        Initial execution probability of every gate, in (0, 1).
    gate_costs : dict or str, optional
        Weights of the gates in the regulariser: ``{gate: cost}`` (positive
        numbers, one per gate), or ``measure`` to time each branch of the
        first layer on 10 s of input where the model is built
        (:func:`~sb_prune.methods.i3d.costs.measure_gate_costs`; under DDP
        each process measures its own, so give the dict for identical
        costs). Default: every gate counts alike.

    Example
    -------
    >>> enc = GatedConformerEncoder(
    ...     2, 8, 16, 2, kernel_size=3, predictor="global", init_probability=0.8
    ... ).eval()
    >>> out, _ = enc(torch.rand(3, 5, 8), pos_embs=torch.rand(1, 9, 8))
    >>> enc.gate_probabilities.shape
    torch.Size([3, 2, 2])
    >>> enc.executed_modules, enc.executed_layers
    (tensor([4., 4., 4.]), tensor([2., 2., 2.]))
    >>> enc.threshold = 0.9
    >>> _ = enc(torch.rand(3, 5, 8), pos_embs=torch.rand(1, 9, 8))
    >>> enc.executed_layers
    tensor([0., 0., 0.])
    """

    gated_layer_type = GatedConformerLayer

    def __init__(self, *args, **kwargs):
        options = {
            k: kwargs.pop(k) for k in DYNAMIC_DEPTH_OPTIONS if k in kwargs
        }
        super().__init__(*args, **kwargs)
        self._add_gates(**options)

    @classmethod
    def from_encoder(cls, encoder, **options):
        """Return a gated encoder that replaces a ``ConformerEncoder``.

        The result is what ``GatedConformerEncoder(...)`` builds, without
        rebuilding the submodules: it holds those of ``encoder``, its layers
        converted by :meth:`GatedConformerLayer.from_layer`, so every weight
        and parameter name is kept (gate predictors are added). ``encoder``
        is left as it was; use the result in its place.

        Arguments
        ---------
        encoder : ConformerEncoder
            The encoder to convert (trained or not).
        predictor, gates, predictor_hidden, temperature, threshold, \
target, regularization_weight, init_probability, gate_costs
            The gating options of :class:`GatedConformerEncoder`.

        Returns
        -------
        GatedConformerEncoder
            A new encoder.

        Example
        -------
        >>> enc = ConformerEncoder(2, 8, 16, 2, kernel_size=3)
        >>> gated = GatedConformerEncoder.from_encoder(enc, gates=["ffn"])
        >>> type(gated.layers[1]).__name__, gated.layers[1].gates
        ('GatedConformerLayer', ('ffn',))
        >>> type(enc.layers[1]).__name__
        'ConformerEncoderLayer'
        >>> GatedConformerEncoder.from_encoder(gated)
        Traceback (most recent call last):
        ...
        ValueError: dynamic_depth: the encoder is already gated
        """
        if isinstance(encoder, GatedConformerEncoder):
            raise ValueError("dynamic_depth: the encoder is already gated")
        if type(encoder) is not ConformerEncoder:
            raise ValueError(
                "dynamic_depth converts SpeechBrain ConformerEncoders, not "
                f"{type(encoder).__name__}"
            )
        gated = take_over(cls, encoder)
        gated._add_gates(**options)
        return gated

    def _gate_width(self):
        return model_dim(self.norm)

    def forward_streaming(self, src, context, pos_embs=None):
        """Not supported: chunks would need gates decided per utterance.

        Arguments
        ---------
        src, context, pos_embs
            Those of ``ConformerEncoder.forward_streaming``.
        """
        raise NotImplementedError(
            "GatedConformerEncoder does not support streaming inference: "
            "its gates are decided on whole utterances"
        )

    def forward(
        self,
        src,
        src_mask=None,
        src_key_padding_mask=None,
        pos_embs=None,
        dynchunktrain_config=None,
    ):
        """Run ``ConformerEncoder.forward`` with gated layers.

        Arguments
        ---------
        src : torch.Tensor
            ``[B, T, d_model]``.
        src_mask, src_key_padding_mask, pos_embs, dynchunktrain_config
            As for SpeechBrain's ``ConformerEncoder``.

        Returns
        -------
        output : torch.Tensor
            The encoder output.
        attention_lst : list
            Attention weights of each layer that ran.
        hidden_state_lst : list
            Only with ``output_hidden_states``.
        """
        return self._gated_forward(
            lambda: super(GatedConformerEncoder, self).forward(
                src,
                src_mask=src_mask,
                src_key_padding_mask=src_key_padding_mask,
                pos_embs=pos_embs,
                dynchunktrain_config=dynchunktrain_config,
            ),
            src,
            src_key_padding_mask,
        )
