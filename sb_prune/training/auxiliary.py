"""Auxiliary losses that reach the gradient without touching the recipe.

Regularisers of sb_prune modules (the retention penalty of
:class:`~sb_prune.nn.AdaptiveDropout`, the executed-module penalty of the
I3D gates) must be added to whatever loss a recipe's ``compute_objectives``
returns. Instead of asking every recipe to add them, a module attaches its
auxiliary loss to one of its outputs with :func:`attach_auxiliary_loss`: the
output is unchanged in the forward pass, and in the backward pass the
gradient of the auxiliary loss is added, exactly as if it had been summed
into the recipe's loss.

SpeechBrain scales the loss before ``backward()`` (by ``1 /
grad_accumulation_factor`` and by the fp16 GradScaler). The same factor must
multiply the auxiliary gradient; :class:`sb_prune.PruningBrain` sets it for
every training batch with :func:`auxiliary_loss_scale`. Outside a
PruningBrain the factor is 1, which is right for fp32 training without
gradient accumulation.

Authors
 * sb_prune developers
"""

import contextlib
import threading

import torch

_STATE = threading.local()


def current_auxiliary_loss_scale():
    """Return the factor applied to auxiliary gradients (default 1.0).

    Returns
    -------
    float
        The factor set by the innermost :func:`auxiliary_loss_scale`.

    Example
    -------
    >>> current_auxiliary_loss_scale()
    1.0
    """
    return getattr(_STATE, "scale", 1.0)


@contextlib.contextmanager
def auxiliary_loss_scale(scale):
    """Set the factor that multiplies auxiliary gradients in this block.

    Arguments
    ---------
    scale : float
        The factor SpeechBrain applies to the loss before ``backward()``.

    Example
    -------
    >>> with auxiliary_loss_scale(0.5):
    ...     current_auxiliary_loss_scale()
    0.5
    >>> current_auxiliary_loss_scale()
    1.0
    """
    previous = current_auxiliary_loss_scale()
    _STATE.scale = float(scale)
    try:
        yield
    finally:
        _STATE.scale = previous


class _AttachLoss(torch.autograd.Function):
    """Identity on ``output``; backward adds d(loss)/d(loss) = scale."""

    @staticmethod
    def forward(ctx, output, loss, scale):
        ctx.scale = scale
        ctx.loss_shape = loss.shape
        return output.view_as(output)

    @staticmethod
    def backward(ctx, grad_output):
        grad_loss = grad_output.new_full(ctx.loss_shape, ctx.scale)
        return grad_output, grad_loss, None


def attach_auxiliary_loss(output, loss):
    """Return ``output`` unchanged, with ``loss`` attached to its gradient.

    Arguments
    ---------
    output : torch.Tensor
        A tensor on the path to the training loss.
    loss : torch.Tensor
        A scalar auxiliary loss with a graph to the parameters it penalises.

    Returns
    -------
    torch.Tensor
        A view of ``output``; back-propagating through it also
        back-propagates ``loss`` (times the current scale).

    Example
    -------
    >>> w = torch.tensor([3.0], requires_grad=True)
    >>> x = torch.ones(2, requires_grad=True)
    >>> y = attach_auxiliary_loss(x * 2, (w**2).sum())
    >>> y.sum().backward()
    >>> w.grad  # d(w^2)/dw = 2w
    tensor([6.])
    >>> x.grad
    tensor([2., 2.])
    """
    if not torch.is_grad_enabled() or not loss.requires_grad:
        return output
    return _AttachLoss.apply(output, loss, current_auxiliary_loss_scale())
