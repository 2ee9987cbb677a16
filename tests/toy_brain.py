"""A small prune-aware Brain on random data, for tests (also under DDP).

Run as a script (``torchrun --nproc_per_node=2 toy_brain.py OUT``) it
trains with adaptive-dropout pruning and writes each rank's structure and
parameters to ``OUT/rank<r>.pt``.
"""

import sys

import speechbrain as sb
import torch
from helpers import tiny_conformer
from speechbrain.utils.checkpoints import Checkpointer
from speechbrain.utils.epoch_loop import EpochCounter

import sb_prune
from sb_prune.core.structure import describe
from sb_prune.hooks import AdaptiveDropoutPruning

POINTS = ["ffn", "query", "value", "conv"]


class ToyBrain(sb_prune.PruningBrain):
    """Regress random targets from random features with a Conformer."""

    def compute_forward(self, batch, stage):
        x, _ = batch
        x = x.to(self.device)
        lens = torch.ones(x.shape[0], device=self.device)
        enc, _ = self.modules.model(x, tgt=None, wav_len=lens)
        return self.modules.head(enc)

    def compute_objectives(self, predictions, batch, stage):
        _, y = batch
        return torch.nn.functional.mse_loss(predictions, y.to(self.device))

    def on_stage_end(self, stage, stage_loss, epoch):
        if stage == sb.Stage.TRAIN:
            self.losses.append(stage_loss)
        elif stage == sb.Stage.VALID:
            self.checkpointer.save_and_keep_only(
                meta={"loss": stage_loss}, num_to_keep=3
            )


def toy_data(n=48, time=9, feats=12, seed=0):
    """A TensorDataset of random features and targets."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, time, feats, generator=gen)
    y = torch.randn(n, time, 4, generator=gen)
    return torch.utils.data.TensorDataset(x, y)


def build_brain(
    save_dir, model, hooks, epochs, lr=0.01, run_opts=None, brain_class=ToyBrain
):
    """A ``brain_class`` training ``model`` and a new ``Linear(16, 4)`` head.

    The model, the head and the epoch counter are checkpointed in
    ``save_dir``; ``brain.losses`` collects the training losses.
    """
    head = torch.nn.Linear(16, 4)
    counter = EpochCounter(epochs)
    brain = brain_class(
        modules={"model": model, "head": head},
        opt_class=lambda params: torch.optim.Adam(params, lr=lr),
        hparams={"prune_hooks": hooks, "epoch_counter": counter},
        run_opts=run_opts or {"noprogressbar": True},
        checkpointer=Checkpointer(
            save_dir, {"model": model, "head": head, "counter": counter}
        ),
    )
    brain.losses = []
    return brain


def make_brain(
    save_dir, epochs, weight=0.01, seed=0, run_opts=None, points=POINTS
):
    """A ToyBrain whose hook prunes hard: strong pull towards -6."""
    torch.manual_seed(seed)
    model = tiny_conformer(layers=2, seed=seed).train()
    if points:
        sb_prune.convert(
            model, adaptive_dropout={"points": points, "min_units": 2}
        )
    hook = AdaptiveDropoutPruning(
        regularization_weight=weight,
        target_start=2.0,
        target_end=-6.0,
        ramp_epochs=2,
    )
    return build_brain(
        save_dir, model, [hook], epochs, lr=0.02, run_opts=run_opts
    )


def fit(brain, n_train=48):
    """Train; a checkpoint is saved after each validation, as in recipes."""
    brain.fit(
        brain.hparams.epoch_counter,
        toy_data(n=n_train),
        toy_data(n=8, seed=1),
        train_loader_kwargs={"batch_size": 8},
        valid_loader_kwargs={"batch_size": 8},
    )


def state(brain):
    """Structure record and a copy of every parameter."""
    modules = brain.unwrapped_modules()
    params = {k: v.detach().clone() for k, v in modules.state_dict().items()}
    return describe(modules), params


if __name__ == "__main__":
    out = sys.argv[1]
    _, run_opts, _ = sb.parse_arguments(
        ["x.yaml", "--noprogressbar", "--distributed_backend=gloo"]
    )
    sb.utils.distributed.ddp_init_group(run_opts)
    brain = make_brain(f"{out}/ckpt", epochs=5, run_opts=run_opts)
    fit(brain)
    rank = torch.distributed.get_rank()
    torch.save(state(brain), f"{out}/rank{rank}.pt")
