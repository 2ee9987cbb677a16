"""What each gated branch of an encoder layer costs, measured.

I3D's regulariser pulls the mean execution probability of the gates
towards a target. Counting every gate alike treats skipping a cheap branch
like skipping an expensive one; with ``gate_costs`` the regulariser weighs
each gate by its branch's cost, so that the target is a fraction of the
*time* the gated branches take (see
:class:`~sb_prune.methods.i3d.gating.GatedEncoder`).

Authors
 * sb_prune developers
"""

from sb_prune.core.profiling import measure_latency


def measure_gate_costs(layer, gates, frames=250, batch=1, repeats=10):
    """Median time of each gated branch of a layer, relative.

    The branches are the layer's own (its family's ``_branches``), so what
    is timed is what a gate skips.

    Arguments
    ---------
    layer : sb_prune.methods.i3d.gating.GatedLayer
        A layer of the encoder (every layer has the same sizes).
    gates : list of str
        The gates to measure, among ``attention, conv, ffn``.
    frames : int
        Frames of the timed input (250: 10 s after 4x frame stacking).
    batch : int
        Utterances of the timed input.
    repeats : int
        Timed calls of each branch (interleaved, medians).

    Returns
    -------
    dict
        ``gate -> cost``, the costs averaging to 1.

    Example
    -------
    >>> from sb_prune.nn import GatedConformerLayer
    >>> layer = GatedConformerLayer(8, 16, 2, kernel_size=3)
    >>> costs = measure_gate_costs(layer, ["attention", "ffn"], 20, repeats=2)
    >>> sorted(costs), round(sum(costs.values()), 6)
    (['attention', 'ffn'], 2.0)
    """
    x, branches = layer._timing_inputs(frames, batch)

    def call(gate):
        return lambda x: [b(x, None) for name, b in branches if name == gate]

    was_training = layer.training
    layer.eval()
    times = measure_latency(
        {gate: call(gate) for gate in gates}, lambda: (x,), repeats=repeats
    )
    layer.train(was_training)
    mean = sum(times.values()) / len(times)
    return {gate: seconds / mean for gate, seconds in times.items()}
