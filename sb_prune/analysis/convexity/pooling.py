"""Pool frame-level hidden states into one vector per utterance.

Convexity analyses compare one vector per utterance per layer.  The mean
over frames must skip the padding of shorter utterances in a batch, given
either as SpeechBrain relative lengths (``wav_lens``) or as a padding mask.

Authors
 * sb_prune developers
"""

import torch


def masked_mean_pool(hidden, lengths_or_mask):
    """Average ``[B, T, D]`` hidden states over their non-padded frames.

    Padded frames are excluded exactly: their values, even NaN or inf, do
    not reach the result.

    Arguments
    ---------
    hidden : torch.Tensor
        Hidden states, shape ``[B, T, D]``.
    lengths_or_mask : torch.Tensor
        Either relative lengths ``[B]`` in [0, 1] (floating point; the
        SpeechBrain ``wav_lens`` convention, ``round(length * T)`` frames
        are kept) or a boolean padding mask ``[B, T]`` that is True on
        padded frames (the PyTorch ``key_padding_mask`` convention).

    Returns
    -------
    torch.Tensor
        Mean of the kept frames, shape ``[B, D]``.

    Example
    -------
    >>> hidden = torch.tensor([[[1.0], [3.0], [99.0]], [[2.0], [4.0], [6.0]]])
    >>> masked_mean_pool(hidden, torch.tensor([2 / 3, 1.0]))
    tensor([[2.],
            [4.]])
    >>> padding = torch.tensor([[False, False, True], [False, False, False]])
    >>> masked_mean_pool(hidden, padding)
    tensor([[2.],
            [4.]])
    """
    if hidden.dim() != 3:
        raise ValueError(
            f"hidden must be [B, T, D], got shape {tuple(hidden.shape)}"
        )
    batch, time = hidden.shape[:2]
    lengths_or_mask = torch.as_tensor(lengths_or_mask, device=hidden.device)
    if lengths_or_mask.dtype == torch.bool:
        if lengths_or_mask.shape != (batch, time):
            raise ValueError(
                f"lengths_or_mask as a padding mask must be [{batch}, {time}],"
                f" got shape {tuple(lengths_or_mask.shape)}"
            )
        keep = ~lengths_or_mask
    elif lengths_or_mask.is_floating_point():
        if lengths_or_mask.shape != (batch,):
            raise ValueError(
                f"lengths_or_mask as relative lengths must be [{batch}], "
                f"got shape {tuple(lengths_or_mask.shape)}"
            )
        if ((lengths_or_mask < 0) | (lengths_or_mask > 1)).any():
            raise ValueError(
                "lengths_or_mask relative lengths must be in [0, 1]"
            )
        frames = torch.round(lengths_or_mask * time)
        keep = torch.arange(time, device=hidden.device) < frames[:, None]
    else:
        raise ValueError(
            "lengths_or_mask must be floating-point relative lengths or a "
            f"boolean padding mask, got dtype {lengths_or_mask.dtype}"
        )
    counts = keep.sum(dim=1)
    if (counts == 0).any():
        raise ValueError(
            "lengths_or_mask leaves no frame for utterance "
            f"{int((counts == 0).nonzero()[0])}"
        )
    kept = torch.where(keep[:, :, None], hidden, torch.zeros_like(hidden))
    return kept.sum(dim=1) / counts[:, None].to(hidden.dtype)
