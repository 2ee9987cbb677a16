"""Measure what pruning buys: multiply-accumulates and latency.

One latency harness for the benchmarks and the report: the functions
compared run interleaved on the same inputs after a warm-up, each timing
is a median, GPU work is synchronised before the clock is read, and
:func:`timing_conditions` states what the numbers depend on (threads,
torch, device).

Authors
 * sb_prune developers
"""

import platform
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode


def _attention_flops(query, key, value, *args, out_shape=None, **kwargs):
    """FLOPs of ``softmax(Q K^T) V``: both products, every head."""
    *batch, length, width = query
    keys, value_width = key[-2], value[-1]
    heads = 1
    for size in batch:
        heads *= size
    return 2 * heads * length * keys * (width + value_width)


#: Attention kernels torch's FLOP counter has no formula for: the CPU
#: kernel that scaled_dot_product_attention (Hugging Face Whisper's
#: attention) runs on long sequences would otherwise count as nothing.
_ATTENTION_KERNELS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: (
        _attention_flops
    ),
}


def count_macs(function, *args, **kwargs):
    """Count the multiply-accumulates of one call (every product).

    Arguments
    ---------
    function : callable
        Usually a module.
    *args, **kwargs
        Its inputs.

    Matrix products, convolutions and attention, whichever kernel
    ``scaled_dot_product_attention`` picks (the score and value products of
    the CPU kernel are counted by :func:`_attention_flops`).

    Returns
    -------
    int
        Multiply-accumulates (half of torch's FLOP count).

    Example
    -------
    >>> count_macs(torch.nn.Linear(4, 3), torch.rand(2, 4))
    24
    >>> q = torch.rand(1, 2, 300, 8)  # long enough for the CPU kernel
    >>> attention = torch.nn.functional.scaled_dot_product_attention
    >>> count_macs(attention, q, q, q) == 2 * 300 * 300 * (8 + 8)
    True
    """
    counter = FlopCounterMode(display=False, custom_mapping=_ATTENTION_KERNELS)
    with counter, torch.no_grad():
        function(*args, **kwargs)
    return counter.get_total_flops() // 2


def _synchronizer(inputs):
    """``torch.cuda.synchronize`` if any input is on a GPU, else a no-op."""
    if any(isinstance(x, torch.Tensor) and x.is_cuda for x in inputs):
        return torch.cuda.synchronize
    return lambda: None


def measure_latency(
    functions, make_inputs, repeats=20, warmup=3, inference=True
):
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
    inference : bool
        Run under ``torch.inference_mode`` (False to time training steps).

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
    synchronize = _synchronizer(inputs)
    samples = {name: [] for name in functions}
    with torch.inference_mode(inference):
        for _ in range(warmup):
            for function in functions.values():
                function(*inputs)
        for _ in range(repeats):
            for name, function in functions.items():
                synchronize()
                start = time.perf_counter()
                function(*inputs)
                synchronize()
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}


def speedups(
    functions, make_batch, batches=(1, 8), reference="dense", **options
):
    """Speed-up of each function over a reference at several batch sizes.

    Arguments
    ---------
    functions : dict
        ``name -> callable``; one of them is the reference.
    make_batch : callable
        ``batch size -> tuple of inputs``.
    batches : tuple of int
        Batch sizes to time.
    reference : str
        The name of the reference function.
    **options
        ``repeats``, ``warmup``: see :func:`measure_latency`.

    Returns
    -------
    dict
        ``name -> {"latency_ratio_b<B>": reference time / time,
        "latency_b<B>_s": median seconds}`` for each batch size ``B``.

    Example
    -------
    >>> lin = torch.nn.Linear(8, 8)
    >>> ratios = speedups(
    ...     {"dense": lin, "same": lin}, lambda b: (torch.rand(b, 8),),
    ...     repeats=3,
    ... )
    >>> sorted(ratios["same"])
    ['latency_b1_s', 'latency_b8_s', 'latency_ratio_b1', 'latency_ratio_b8']
    """
    figures = {name: {} for name in functions}
    for batch in batches:
        times = measure_latency(
            functions, lambda b=batch: make_batch(b), **options
        )
        for name, seconds in times.items():
            figures[name][f"latency_ratio_b{batch}"] = (
                times[reference] / seconds
            )
            figures[name][f"latency_b{batch}_s"] = seconds
    return figures


def timing_conditions(device="cpu"):
    """What measured times depend on, to store beside them.

    Arguments
    ---------
    device : str
        The device the timed models ran on.

    Returns
    -------
    dict
        ``threads`` (torch's intra-op threads), ``torch``, ``cpu`` and
        ``device`` (the GPU's name on CUDA).

    Example
    -------
    >>> sorted(timing_conditions())
    ['cpu', 'device', 'threads', 'torch']
    """
    name = device
    if str(device).startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
    return {
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "device": name,
    }
