"""Plan the removal of the units that adaptive dropout drops.

Authors
 * sb_prune developers
"""

from sb_prune.core.registry import spec_of


def adaptive_dropout_plan(root):
    """Plan the removal of every unit that adaptive dropout drops.

    A unit is removed when its AdaptiveDropout's evaluation mask drops it,
    so the pruned model computes exactly what the masked model computes in
    evaluation. Which layer masks which group is each module type's
    ``dropouts`` (:mod:`sb_prune.core.registry`).

    Arguments
    ---------
    root : torch.nn.Module
        The model (or ModuleDict of modules) holding AdaptiveDropout layers.

    Returns
    -------
    dict
        A plan for :func:`sb_prune.core.surgery.apply_plan`; modules that
        lose nothing are left out.

    Example
    -------
    >>> import torch
    >>> from speechbrain.nnet.attention import PositionalwiseFeedForward
    >>> from sb_prune.methods.adaptive_dropout.layer import AdaptiveDropout
    >>> ffn = PositionalwiseFeedForward(d_ffn=4, input_size=2)
    >>> ffn.ffn[2] = torch.nn.Sequential(AdaptiveDropout(4), ffn.ffn[2])
    >>> ffn.ffn[2][0].set_logits(torch.tensor([5.0, -9.0, 5.0, 5.0]))
    >>> adaptive_dropout_plan(torch.nn.ModuleDict({"f": ffn}))
    {'f': {'hidden': tensor([0, 2, 3])}}
    """
    plan = {}
    for path, module in root.named_modules():
        spec = spec_of(module)
        if spec is None or spec.dropouts is None:
            continue
        kept = {
            group: adl.keep_mask().nonzero()[:, 0]
            for group, adl in spec.dropouts(module).items()
            if adl is not None and not bool(adl.keep_mask().all())
        }
        if kept:
            plan[path] = kept
    return plan
