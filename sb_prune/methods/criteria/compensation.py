"""Least-squares compensation: refit the Linear that reads pruned members.

Removing hidden units of a feed-forward block, or heads of an attention,
removes input columns of the Linear that reads them (their *consumer*,
``y = W x + b``). What the removed columns contributed is partly carried by
the kept ones, because activations are correlated: with ``G`` the second
moment of ``[x, 1]`` over the training frames seen since the previous
pruning step, the weights of the kept columns ``K`` and the bias that make
the pruned output closest to the dense one (least squares over those
frames) are::

    [W_K, b]' = [W, b] G[:, K'] (G[K', K'] + lambda I)^-1

(``K'``: the kept columns and the constant; ``lambda``: ``damping`` times
the mean of the diagonal of ``G[K', K']``). Without fine-tuning, it is
what makes a one-shot cut of a pretrained model usable (Whisper tiny.en,
``benchmarks/results/whisper_accuracy.json``, README "Keeping the
accuracy"). Used by :class:`sb_prune.hooks.CriterionPruning` with
``compensate: True``.

Authors
 * sb_prune developers
"""

import torch
from speechbrain.utils.distributed import ddp_all_reduce
from torch import nn

from sb_prune.methods.criteria.criteria import applies_own_projections

#: The groups whose members a consumer Linear reads.
COMPENSATED_GROUPS = ("ffn", "heads")


def member_of_columns(members):
    """Which member each input column of the consumer belongs to.

    Arguments
    ---------
    members : sb_prune.core.importance.Members
        Units of a feed-forward block or heads of an attention.

    Returns
    -------
    torch.LongTensor
        One member index per consumer input column.

    Example
    -------
    >>> from transformers.models.whisper.modeling_whisper import (
    ...     WhisperAttention)
    >>> from sb_prune.core.importance import Members
    >>> import sb_prune.families  # registers the families' specs
    >>> attention = WhisperAttention(embed_dim=4, num_heads=2)
    >>> member_of_columns(Members("a", "heads", attention)).tolist()
    [0, 0, 1, 1]
    """
    columns = members.consumer().in_features
    one_hots = torch.eye(columns)
    return torch.stack([members.per_member(row) for row in one_hots]).argmax(1)


class LeastSquaresCompensation:
    """Second moments of consumer inputs, and the refit they allow.

    Arguments
    ---------
    damping : float
        ``lambda`` relative to the mean diagonal of ``G[K', K']``, > 0.

    Example
    -------
    >>> from speechbrain.nnet.attention import PositionalwiseFeedForward
    >>> from sb_prune.core.importance import Members
    >>> import sb_prune.families  # registers the families' specs
    >>> _ = torch.manual_seed(0)
    >>> ffn = PositionalwiseFeedForward(d_ffn=6, input_size=3)
    >>> members = Members("", "ffn", ffn)
    >>> compensation = LeastSquaresCompensation()
    >>> compensation.attach([members])
    >>> x = torch.randn(4, 50, 3)
    >>> dense = ffn(x).detach()  # a training forward: moments summed
    >>> def error_without_units_4_and_5():
    ...     weight = ffn.ffn[3].weight.data
    ...     removed = weight[:, 4:].clone()
    ...     weight[:, 4:] = 0
    ...     error = (ffn(x) - dense).pow(2).mean().item()
    ...     weight[:, 4:] = removed
    ...     return error
    >>> before = error_without_units_4_and_5()
    >>> compensation.compensate(members, torch.tensor([0, 1, 2, 3]))
    >>> error_without_units_4_and_5() < before / 2
    True
    """

    def __init__(self, damping=1e-3):
        if not isinstance(damping, (int, float)) or not damping > 0:
            raise ValueError(f"damping must be > 0, got {damping!r}")
        self.damping = float(damping)
        self.moments = {}
        self._handles = []

    def attach(self, members):
        """Sum ``[x, 1]^T [x, 1]`` of the members' consumers from zero.

        Arguments
        ---------
        members : list of sb_prune.core.importance.Members
            Units or heads (``COMPENSATED_GROUPS``); their consumers must be
            ``torch.nn.Linear`` modules called as modules (their forward
            pre-hooks run).
        """
        self.detach()
        for item in members:
            consumer = item.consumer()
            if applies_own_projections(item.module):
                raise ValueError(
                    f"compensate: '{item.path}' applies its projections "
                    "itself (no module call to observe): sb_prune cannot "
                    "refit its output projection"
                )
            if type(consumer) is not nn.Linear:
                raise ValueError(
                    f"compensate: '{item.path}' is read by a "
                    f"{type(consumer).__name__}, which sb_prune cannot refit"
                )
            size = consumer.in_features + 1
            self.moments[item.path] = torch.zeros(
                size, size, dtype=torch.float64, device=consumer.weight.device
            )
            self._handles.append(
                consumer.register_forward_pre_hook(self._summer(item.path))
            )

    def _summer(self, path):
        def add(module, args):
            if not module.training:
                return
            x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
            x = torch.cat([x, x.new_ones(len(x), 1)], 1)
            self.moments[path] += (x.T @ x).double()

        return add

    def detach(self):
        """Remove the forward pre-hooks and forget the moments."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.moments = {}

    def all_reduce(self):
        """Sum the moments over DDP processes (no-op otherwise)."""
        for path in sorted(self.moments):
            self.moments[path] = ddp_all_reduce(
                self.moments[path], torch.distributed.ReduceOp.SUM
            )

    @torch.no_grad()
    def compensate(self, members, kept):
        """Refit the consumer's kept columns and bias (see the module).

        The removed columns are left as they are: the surgery that follows
        removes them.

        Arguments
        ---------
        members : sb_prune.core.importance.Members
            Attached units or heads.
        kept : torch.LongTensor
            The members that the pruning step keeps.
        """
        moments = self.moments[members.path]
        if moments[-1, -1] == 0:
            raise ValueError(
                f"compensate: no training frame reached '{members.path}' "
                "since the previous step; a step needs training batches "
                "before it (not AtStart)"
            )
        consumer = members.consumer()
        owner = member_of_columns(members).to(moments.device)
        columns = torch.isin(owner, kept.to(moments.device)).nonzero()[:, 0]
        weight = consumer.weight.double()
        bias = consumer.bias
        if bias is not None:
            weight = torch.cat([weight, bias.double()[:, None]], 1)
            columns = torch.cat([columns, columns.new_tensor([len(owner)])])
        else:
            moments = moments[:-1, :-1]
        kept_moments = moments[columns][:, columns]
        damping = self.damping * kept_moments.diagonal().mean()
        kept_moments += damping * torch.eye(
            len(columns), dtype=moments.dtype, device=moments.device
        )
        target = weight @ moments[:, columns]
        refit = torch.linalg.solve(kept_moments, target.T).T
        weight[:, columns] = refit
        if bias is not None:
            bias.copy_(weight[:, -1].to(bias.dtype))
            weight = weight[:, :-1]
        consumer.weight.copy_(weight.to(consumer.weight.dtype))
