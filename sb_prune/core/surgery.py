"""Exact physical removal of units, heads, ranks and layers.

Pruning is expressed as a *plan*: ``{module path: {group: kept indices}}``,
for example ``{"Transformer.encoder.layers.0.ffn_module1.1": {"hidden":
tensor([0, 2, 5])}}``. :func:`apply_plan` hands each entry to the ``prune``
of the module type's spec (:mod:`sb_prune.core.registry`; the groups of
each type are listed in its family module, :mod:`sb_prune.families`).
Every pruning method (adaptive dropout, magnitude or Taylor criteria, low
rank, layer cuts) produces a plan, so they all share the same surgery and
the same structure record.

Authors
 * sb_prune developers
"""

from sb_prune.core.registry import require_module_spec


def apply_plan(root, plan):
    """Physically prune the modules under ``root`` as the plan says.

    Arguments
    ---------
    root : torch.nn.Module
        The root the plan's paths are relative to.
    plan : dict
        ``{path: {group: kept indices}}``.

    Example
    -------
    >>> import torch
    >>> from speechbrain.nnet.attention import PositionalwiseFeedForward
    >>> ffn = PositionalwiseFeedForward(d_ffn=6, input_size=4).eval()
    >>> x = torch.rand(2, 3, 4)
    >>> with torch.no_grad():
    ...     ffn.ffn[3].weight[:, [1, 4]] = 0.0
    ...     expected = ffn(x)
    >>> apply_plan(ffn, {"": {"hidden": torch.tensor([0, 2, 3, 5])}})
    >>> torch.allclose(ffn(x), expected, atol=1e-6)
    True
    >>> apply_plan(ffn, {"": {"rows": torch.tensor([0])}})
    Traceback (most recent call last):
    ...
    ValueError: plan: '' is a PositionalwiseFeedForward, whose groups are ...
    """
    for path, groups in plan.items():
        module = root.get_submodule(path)
        spec = require_module_spec(module, f"plan entry '{path}'")
        unknown = sorted(set(groups) - set(spec.groups))
        if unknown:
            raise ValueError(
                f"plan: '{path}' is a {type(module).__name__}, whose groups "
                f"are {list(spec.groups)}, not {unknown}"
            )
        prune = spec.require(
            "prune", f"plan entry '{path}'", type(module).__name__
        )
        prune(module, **groups)
