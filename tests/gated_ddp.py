"""Train a gated (I3D) toy Conformer under DDP; save each rank's weights.

``torchrun --nproc_per_node=2 gated_ddp.py OUT [--layerdrop P]
[--no-find-unused]`` trains with gloo and writes ``OUT/rank<r>.pt``.
"""

import argparse

import speechbrain as sb
import torch
from helpers import tiny_conformer
from speechbrain.utils.checkpoints import Checkpointer
from speechbrain.utils.epoch_loop import EpochCounter
from toy_brain import ToyBrain, toy_data

import sb_prune

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--layerdrop", type=float, default=0.3)
    parser.add_argument("--no-find-unused", action="store_true")
    args = parser.parse_args()
    argv = ["x.yaml", "--noprogressbar", "--distributed_backend=gloo"]
    if not args.no_find_unused:
        argv.append("--find_unused_parameters")
    _, run_opts, _ = sb.parse_arguments(argv)
    sb.utils.distributed.ddp_init_group(run_opts)
    torch.manual_seed(0)
    model = tiny_conformer(layers=2).train()
    sb_prune.convert(
        model,
        dynamic_depth={
            "gates": ["attention", "conv", "ffn"],
            "init_probability": 0.6,
            "regularization_weight": 1.0,
        },
    )
    model.encoder.layerdrop_prob = args.layerdrop
    head = torch.nn.Linear(16, 4)
    counter = EpochCounter(2)
    brain = ToyBrain(
        modules={"model": model, "head": head},
        opt_class=lambda params: torch.optim.Adam(params, lr=0.01),
        hparams={"prune_hooks": [], "epoch_counter": counter},
        run_opts=run_opts,
        checkpointer=Checkpointer(f"{args.out}/ckpt", {"model": model}),
    )
    brain.losses = []
    brain.fit(
        counter,
        toy_data(),
        toy_data(n=8, seed=1),
        train_loader_kwargs={"batch_size": 8},
        valid_loader_kwargs={"batch_size": 8},
    )
    rank = torch.distributed.get_rank()
    state = brain.unwrapped_modules().state_dict()
    torch.save(
        {k: v.detach().clone() for k, v in state.items()},
        f"{args.out}/rank{rank}.pt",
    )
