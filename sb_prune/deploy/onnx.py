"""ONNX export of a (pruned) encoder, checked under ONNX Runtime.

A pruned model is a PyTorch model with smaller tensors, so torch's
exporter (``torch.onnx.export``, built on ``torch.export``) writes a graph
with the pruned shapes. The number of frames stays free; the batch size is
the example's (SpeechBrain's padding masks read it as a Python number, so
a graph exported at one batch size serves that batch size). Every export
is checked: ONNX Runtime runs the graph on an input of another length and
must reproduce the model within ``atol``. When the exporter fails, the
error names the deepest submodule that fails on its own.

Authors
 * sb_prune developers
"""

import contextlib
import io
import re
from pathlib import Path

import torch

from sb_prune.deploy.torchscript import CTCEncoder, example_features

#: The ONNX file ``sb-prune export --onnx`` adds to an exported folder.
ONNX_FILE = "ctc_encoder.onnx"


def _onnx_program(module, args, kwargs=None, dynamic=None, names=None):
    """Export ``module`` called on ``args``.

    ``dynamic``: their free axes; ``names``: the graph's
    ``(input_names, output_names)``.
    """
    inputs, outputs = names or (None, None)
    # The exporter prints its progress; keep the caller's output clean.
    with contextlib.redirect_stdout(io.StringIO()):
        return torch.onnx.export(
            module,
            tuple(args),
            kwargs=kwargs or None,
            dynamo=True,
            dynamic_shapes=dynamic,
            input_names=inputs,
            output_names=outputs,
            verbose=False,
        )


def onnx_program(module, args, dynamic, input_names=None, output_names=None):
    """Export a module to ONNX, naming the part that fails if it fails.

    Arguments
    ---------
    module : torch.nn.Module
        The module, in eval mode.
    args : tuple
        Example positional inputs.
    dynamic : tuple
        For each input, ``{axis: torch.export.Dim}`` of its free axes (or
        None).
    input_names, output_names : list of str, optional
        The graph's names of its inputs and outputs.

    Returns
    -------
    torch.onnx.ONNXProgram
        The exported program (``.save(path)`` writes it).

    Raises
    ------
    ValueError
        Naming the deepest submodule that cannot be exported.
    """
    try:
        return _onnx_program(
            module, args, dynamic=dynamic, names=(input_names, output_names)
        )
    except Exception as error:
        part = failing_part(module, args)
        message = re.sub(r"\x1b\[[0-9;]*m", "", str(error).strip())
        message = message.splitlines()[0]
        raise ValueError(
            f"ONNX cannot export the model: the part that fails on its own "
            f"is {part}. Exporter's error: {message}"
        ) from error


def failing_part(model, inputs):
    """Name the deepest submodule whose own export fails.

    Every submodule is exported alone on the arguments it received in one
    forward pass of ``model``; the search descends into the first child
    that fails, until no child of the failing module fails.

    Arguments
    ---------
    model : torch.nn.Module
        A module whose export failed.
    inputs : tuple
        Its positional inputs.

    Returns
    -------
    str
        ``"path (TypeName)"`` of that submodule (``""`` for the model).
    """
    calls = {}

    def record(module, args, kwargs):
        calls.setdefault(module, (args, kwargs))

    handles = [
        m.register_forward_pre_hook(record, with_kwargs=True)
        for m in model.modules()
    ]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    path, module = "", model
    while True:
        failing = next(
            (
                (name, child)
                for name, child in _called_below(module, calls)
                if not _exports(child, *calls[child])
            ),
            None,
        )
        if failing is None:
            return f"{path} ({type(module).__name__})"
        name, module = failing
        path = f"{path}.{name}" if path else name


def _called_below(module, calls, prefix=""):
    """The nearest descendants that ran as modules, with their paths.

    A child that did not run through ``__call__`` (a ``ModuleList``, or a
    model whose method was called) is looked through.
    """
    for name, child in module.named_children():
        if child in calls:
            yield prefix + name, child
        else:
            yield from _called_below(child, calls, f"{prefix}{name}.")


def _exports(module, args, kwargs):
    try:
        _onnx_program(module, args, kwargs)
    except Exception:  # noqa: BLE001 - any failure means "not exportable"
        return False
    return True


def ort_inference_session(path, threads=None):
    """An ONNX Runtime CPU session with torch's number of threads.

    Arguments
    ---------
    path : str
        The ``.onnx`` file.
    threads : int, optional
        Intra-op threads (default: ``torch.get_num_threads()``, so that
        ONNX Runtime and PyTorch are timed alike).

    Returns
    -------
    onnxruntime.InferenceSession
        The session.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(
        str(path), options, providers=["CPUExecutionProvider"]
    )


def ort_session(path, threads=None):
    """An ONNX Runtime CPU session as a function of tensors.

    Arguments
    ---------
    path : str
        The ``.onnx`` file.
    threads : int, optional
        See :func:`ort_inference_session`.

    Returns
    -------
    callable
        ``(*tensors) -> torch.Tensor``: the graph's first output.
    """
    return _outputs_of(ort_inference_session(path, threads), first=True)


def _outputs_of(session, first=False):
    """``(*tensors) -> outputs`` of a session (the first one only)."""
    names = [i.name for i in session.get_inputs()]

    def run(*tensors):
        feed = {n: t.detach().cpu().numpy() for n, t in zip(names, tensors)}
        outputs = [torch.from_numpy(o) for o in session.run(None, feed)]
        return outputs[0] if first else outputs

    return run


def ort_difference(path, module, inputs):
    """The largest difference between ONNX Runtime and PyTorch.

    Arguments
    ---------
    path : str
        The ``.onnx`` file of ``module``.
    module : torch.nn.Module
        The module.
    inputs : tuple
        Positional inputs of both.

    Returns
    -------
    float
        Over all outputs, the largest absolute difference.
    """
    with torch.no_grad():
        expected = module(*inputs)
    if isinstance(expected, torch.Tensor):
        expected = (expected,)
    got = _outputs_of(ort_inference_session(path))(*inputs)
    return max(
        float((a - b).abs().max()) if a.numel() else 0.0
        for a, b in zip(got, expected, strict=True)
    )


def export_onnx(model, path, inputs, check_inputs, atol=1e-4):
    """Export a module to ONNX and check it under ONNX Runtime.

    Arguments
    ---------
    model : torch.nn.Module
        The module (put in eval mode).
    path : str
        The ``.onnx`` file to write.
    inputs : tuple
        Example inputs; axis 1 of the first one (frames) stays free.
    check_inputs : tuple
        Inputs of the same batch size and another length, on which ONNX
        Runtime must reproduce the model.
    atol : float
        Largest difference allowed on ``check_inputs``.

    Returns
    -------
    float
        The largest difference between ONNX Runtime and the model on
        ``check_inputs``.

    Raises
    ------
    ValueError
        Naming the submodule that cannot be exported, or when the graph
        does not reproduce the model.

    Example
    -------
    >>> import tempfile
    >>> lin = torch.nn.Linear(4, 3)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     difference = export_onnx(
    ...         lin, f"{folder}/lin.onnx",
    ...         (torch.randn(1, 5, 4),), (torch.randn(1, 9, 4),),
    ...     )
    >>> difference < 1e-5
    True
    """
    model.eval()
    frames = torch.export.Dim.AUTO
    dynamic = tuple({1: frames} if i == 0 else None for i in range(len(inputs)))
    program = onnx_program(model, inputs, dynamic)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path))
    difference = ort_difference(path, model, check_inputs)
    if difference > atol:
        raise ValueError(
            f"The ONNX graph differs from the model by {difference:.2e} "
            f"(more than {atol:g}) on an input of another length"
        )
    return difference


def export_ctc_onnx(hparams, path, batch=1):
    """Export a recipe's CTC encoder (features in, log-probabilities out).

    Arguments
    ---------
    hparams : dict
        Loaded hparams of an ASR run or exported folder (``CNN``,
        ``Transformer``, ``ctc_lin``, ``n_mels``), weights loaded.
    path : str
        The ``.onnx`` file to write.
    batch : int
        The batch size of the graph.

    Returns
    -------
    dict
        ``batch`` and ``max_abs_diff`` (ONNX Runtime against PyTorch).
    """
    n_mels = hparams["n_mels"]
    difference = export_onnx(
        CTCEncoder.from_hparams(hparams),
        path,
        example_features(batch, 4.0, n_mels, 0),
        example_features(batch, 6.5, n_mels, 1),
    )
    return {"batch": batch, "max_abs_diff": difference}
