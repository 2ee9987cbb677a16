"""Train a gated (I3D) toy Conformer under DDP; save each rank's weights.

``torchrun --nproc_per_node=2 gated_ddp.py OUT [--layerdrop P]
[--no-find-unused]`` trains with gloo and writes ``OUT/rank<r>.pt``.
"""

import argparse

import speechbrain as sb
import torch
from helpers import tiny_conformer
from toy_brain import build_brain, fit

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
    brain = build_brain(f"{args.out}/ckpt", model, [], 2, run_opts=run_opts)
    fit(brain)
    rank = torch.distributed.get_rank()
    state = brain.unwrapped_modules().state_dict()
    torch.save(
        {k: v.detach().clone() for k, v in state.items()},
        f"{args.out}/rank{rank}.pt",
    )
