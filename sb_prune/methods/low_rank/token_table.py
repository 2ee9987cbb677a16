"""A decoder's token table factorised on what the decoder does with it.

The plain SVD of Whisper's token table keeps the directions of largest
weight, whatever tokens occur and wherever the decoder states lie: at rank
256 of tiny.en's 384 the decoder loops. :class:`TokenTableLowRank` instead
watches training batches (:class:`TokenStatistics`: how often each token
is read, the second moment of the states that score the vocabulary) and
then factorises each table for those
(:meth:`~sb_prune.methods.low_rank.embedding.LowRankEmbedding.
from_embedding`), once, when its schedule says; the epochs after it
fine-tune the factors.

Which decoders have such a table, and which module to watch, is their
family's answer to ``low_rank_embedding`` and ``token_statistics``.

Authors
 * sb_prune developers
"""

import logging

import torch
from speechbrain.utils.distributed import ddp_all_reduce

from sb_prune.core.registry import answers_under
from sb_prune.core.validation import check_bool, check_int
from sb_prune.training.hooks import OnceHook, check_epochs
from sb_prune.training.schedules import OneShot

logger = logging.getLogger(__name__)


class TokenStatistics:
    """Token counts and state moments of a decoder's training batches.

    A forward hook on a decoder called with its token ids (keyword
    ``input_ids`` or first argument) that returns its final states first
    (a tensor, a tuple or a Hugging Face output): it counts the ids and
    sums the outer products of the states (float64), while the decoder is
    training only.

    Arguments
    ---------
    decoder : torch.nn.Module
        The decoder to watch.
    vocabulary : int
        Number of token ids.

    Example
    -------
    >>> class Decoder(torch.nn.Module):
    ...     def forward(self, input_ids):
    ...         return (torch.ones(*input_ids.shape, 3),)
    >>> decoder = Decoder()
    >>> stats = TokenStatistics(decoder, vocabulary=5)
    >>> _ = decoder(input_ids=torch.tensor([[1, 1, 4]]))
    >>> stats.counts.tolist(), stats.states, stats.moment()[0].tolist()
    ([0.0, 2.0, 0.0, 0.0, 1.0], 3, [1.0, 1.0, 1.0])
    >>> stats.row_weights().tolist()
    [1.0, 3.0, 1.0, 1.0, 2.0]
    >>> stats.remove()
    """

    def __init__(self, decoder, vocabulary):
        self.counts = torch.zeros(vocabulary, dtype=torch.float64)
        self.second = None
        self.states = 0
        self._handle = decoder.register_forward_hook(
            self._observe, with_kwargs=True
        )

    def _observe(self, module, args, kwargs, output):
        if not module.training:
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        states = output if torch.is_tensor(output) else output[0]
        flat = states.detach().reshape(-1, states.shape[-1]).double()
        if self.second is None:
            self.second = flat.new_zeros(flat.shape[1], flat.shape[1])
            self.counts = self.counts.to(flat.device)
        self.second += flat.T @ flat
        self.states += flat.shape[0]
        self.counts += torch.bincount(
            ids.detach().reshape(-1), minlength=len(self.counts)
        ).to(self.counts)

    def moment(self):
        """The states' second moment (float64)."""
        return self.second / self.states

    def row_weights(self):
        """How much each token's row counts: its count plus one.

        (A token never read still scores.)
        """
        return self.counts + 1.0

    def all_reduce(self):
        """Sum the statistics over DDP processes (no-op without DDP)."""
        total = torch.distributed.ReduceOp.SUM
        self.counts = ddp_all_reduce(self.counts, total)
        self.second = ddp_all_reduce(self.second, total)
        states = torch.tensor(float(self.states), device=self.counts.device)
        self.states = int(ddp_all_reduce(states, total).item())

    def remove(self):
        """Stop watching the decoder."""
        self._handle.remove()


class TokenTableLowRank(OnceHook):
    """Factorise the token tables of a model's decoders, calibrated.

    During the training batches before its schedule's one step, each table
    that answers ``low_rank_embedding`` is watched
    (:class:`TokenStatistics`, summed over DDP processes); at the step it
    becomes a :class:`~sb_prune.nn.LowRankEmbedding` of rank ``rank`` fit
    to those statistics (every process computes the same factors). With
    ``calibrated: False`` the factors are the table's plain SVD, at the
    same moment. A run resumed before the step calibrates on the batches
    after the resumption only.

    Arguments
    ---------
    rank : int or None
        The rank of every table, >= 1 (None: the tables stay dense, so one
        hparams file serves both).
    schedule : sb_prune.training.schedules.Schedule, optional
        When: a one-step schedule without target after some training
        batches (default ``OneShot(epoch: 1)``; a one-step ``Gradual`` to
        factorise after an optimizer step).
    calibrated : bool
        Fit the factors to the statistics (default) or take the table's
        SVD.
    name : str, optional
        The key of the hook's state in checkpoints.

    Example
    -------
    >>> TokenTableLowRank(192).schedule
    OneShot(target=None, epoch=1)
    >>> TokenTableLowRank(0)
    Traceback (most recent call last):
    ...
    ValueError: rank must be an integer >= 1, got 0
    """

    def __init__(self, rank, schedule=None, calibrated=True, name=None):
        schedule = OneShot(epoch=1) if schedule is None else schedule
        super().__init__(schedule, calibrates=True, name=name)
        self.rank = None if rank is None else check_int("rank", rank, 1)
        self.calibrated = check_bool("calibrated", calibrated)
        self.done = False
        self._tables = []

    def on_fit_start(self, brain):
        """Start watching the decoders whose tables will be factorised."""
        check_epochs(self.schedule, brain)
        if self.done or self.rank is None:
            return
        modules = brain.unwrapped_modules()
        tables = answers_under(modules, "low_rank_embedding")
        watchers = {}
        if self.calibrated:
            watchers = {
                path: answer
                for path, _, answer in answers_under(
                    modules,
                    "token_statistics",
                    select=lambda spec: "low_rank_embedding" in spec.answers,
                )
            }
        self._tables = [
            (path, lobe, factorise, watchers[path](lobe) if watchers else None)
            for path, lobe, factorise in tables
        ]

    def act(self, brain, when):
        """Replace every watched table by its factors.

        Arguments
        ---------
        brain : sb_prune.PruningBrain
            The Brain whose tables are factorised.
        when : str
            The moment, for the log and the message.

        Returns
        -------
        bool
            Whether the model changed (False with ``rank: None``).
        """
        if self.rank is None or self.done:
            return False
        for path, lobe, factorise, stats in self._tables:
            if stats is None:
                factorise(lobe, self.rank)
                continue
            stats.remove()
            stats.all_reduce()
            if not stats.states:
                raise ValueError(
                    f"TokenTableLowRank: no training batch reached the "
                    f"decoder of {path or 'the model'} before {when}; "
                    "factorise after some training (schedule), or set "
                    "calibrated: False"
                )
            factorise(lobe, self.rank, stats.row_weights(), stats.moment())
        self._tables = []
        self.done = True
        logger.info(
            f"sb_prune: token tables at rank {self.rank} at {when} "
            f"({'calibrated' if self.calibrated else 'plain SVD'})"
        )
        return True

    def state_dict(self):
        """Return whether the tables were factorised."""
        return {"done": self.done}

    def load_state_dict(self, state):
        """Restore whether the tables were factorised."""
        self.done = bool(state["done"])
