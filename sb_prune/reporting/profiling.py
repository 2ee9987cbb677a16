"""Measure what pruning buys: multiply-accumulates and CPU latency.

Authors
 * sb_prune developers
"""

import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_macs(function, *args, **kwargs):
    """Count the multiply-accumulates of one call (matmuls and convolutions).

    Arguments
    ---------
    function : callable
        Usually a module.
    *args, **kwargs
        Its inputs.

    Returns
    -------
    int
        Multiply-accumulates (half of torch's FLOP count).

    Example
    -------
    >>> count_macs(torch.nn.Linear(4, 3), torch.rand(2, 4))
    24
    """
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        function(*args, **kwargs)
    return counter.get_total_flops() // 2


def measure_latency(functions, make_inputs, repeats=20, warmup=3):
    """Median wall time of each function, measured interleaved.

    The functions run in turn on the same inputs, repeat after repeat, so
    that load from other processes affects all of them alike: compare them
    as ratios.

    Arguments
    ---------
    functions : dict
        ``name -> callable`` taking the inputs of ``make_inputs()``.
    make_inputs : callable
        Returns a tuple of positional inputs.
    repeats : int
        Timed calls per function.
    warmup : int
        Untimed calls per function first.

    Returns
    -------
    dict
        ``name -> median seconds per call``.

    Example
    -------
    >>> lin = torch.nn.Linear(8, 8)
    >>> times = measure_latency({"lin": lin}, lambda: (torch.rand(2, 8),), 3)
    >>> times["lin"] > 0
    True
    """
    inputs = make_inputs()
    samples = {name: [] for name in functions}
    with torch.inference_mode():
        for _ in range(warmup):
            for function in functions.values():
                function(*inputs)
        for _ in range(repeats):
            for name, function in functions.items():
                start = time.perf_counter()
                function(*inputs)
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}
