"""Run by test_criteria: one process skips a layer; reduce the statistics.

Rank 0 runs both layers of a Transformer encoder, rank 1 only the first
(as LayerDrop or a closed I3D gate would): statistics keys must still be
the same on both, so the collectives of ``all_reduce`` match.
"""

import datetime
import sys
from pathlib import Path

import torch
from speechbrain.lobes.models.transformer.Transformer import (
    TransformerEncoder,
)

from sb_prune.methods.criteria.criteria import Activation, find_members

if __name__ == "__main__":
    torch.distributed.init_process_group(
        "gloo", timeout=datetime.timedelta(seconds=60)
    )
    rank = torch.distributed.get_rank()
    torch.manual_seed(0)
    encoder = TransformerEncoder(2, 2, 8, d_model=4).train()
    members = find_members(encoder, ["ffn", "layers"])
    criterion = Activation()
    criterion.attach(members)
    torch.manual_seed(1 + rank)
    out = encoder.layers[0](torch.rand(2, 5, 4))[0]
    if rank == 0:
        encoder.layers[1](out)
    criterion.observe_gradients(members)
    alone = {key: value.clone() for key, value in criterion.stats.items()}
    criterion.all_reduce()
    torch.save(
        {"alone": alone, "reduced": criterion.stats},
        Path(sys.argv[1]) / f"rank{rank}.pt",
    )
    torch.distributed.destroy_process_group()
