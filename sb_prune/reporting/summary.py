"""Result summaries and plots written by the recipes.

Authors
 * sb_prune developers
"""

import json
import os

import torch

from sb_prune.core.encoders import find_layer_stack
from sb_prune.core.structure import describe, summarize
from sb_prune.methods.adaptive_dropout.convert import masked_layers


def count_parameters(module):
    """Return the number of parameters of a module.

    Arguments
    ---------
    module : torch.nn.Module
        Any module.

    Returns
    -------
    int
        The number of scalar parameters (shared ones counted once).

    Example
    -------
    >>> count_parameters(torch.nn.Linear(3, 2))
    8
    """
    return sum(p.numel() for p in module.parameters())


def plot_retention(model, path):
    """Plot adaptive-dropout retention per layer and application point.

    Left: the fraction of units kept per layer for each point. Right: the
    retention probabilities of the surviving units.

    Arguments
    ---------
    model : torch.nn.Module
        A model converted with adaptive dropout.
    path : str
        The PNG file to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [masks for _, masks in masked_layers(model)]
    names = sorted({name for layer in points for name in layer})
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for offset, name in enumerate(names):
        layers = [i for i, layer in enumerate(points) if name in layer]
        adls = [points[i][name] for i in layers]
        kept = [adl.n_units / adl.initial_units for adl in adls]
        left.plot(layers, kept, marker="o", label=name)
        shift = (offset - len(names) / 2) * 0.12
        for i, adl in zip(layers, adls):
            retention = adl.retention().detach().cpu()
            x = torch.full_like(retention, i + shift)
            label = name if i == layers[0] else None
            right.scatter(x, retention, s=4, label=label)
    threshold = next(iter(points[0].values())).threshold if points[0] else 0.5
    right.axhline(threshold, color="grey", linestyle="--", linewidth=1)
    left.set(xlabel="layer", ylabel="fraction of units kept", ylim=(0, 1.05))
    right.set(xlabel="layer", ylabel="retention probability", ylim=(0, 1.02))
    left.legend()
    right.legend(markerscale=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_recipe_summary(brain, results):
    """Write the structure files and plots of a finished recipe run.

    Writes ``structure.json`` and ``structure.txt`` (units kept per module)
    and, for adaptive dropout, ``retention.png`` into the output folder.

    Arguments
    ---------
    brain : sb_prune.PruningBrain
        The trained Brain (its hparams hold ``output_folder``).
    results : dict
        Test results to include.

    Returns
    -------
    dict
        Parameters (total and encoder), the results and the files written.
    """
    modules = brain.unwrapped_modules()
    folder = brain.hparams.output_folder
    record = describe(modules)
    with open(os.path.join(folder, "structure.json"), "w") as handle:
        json.dump(record, handle, indent=1)
    with open(os.path.join(folder, "structure.txt"), "w") as handle:
        handle.write(summarize(record) + "\n")
    summary = {
        "params": count_parameters(modules),
        "encoder_params": count_parameters(find_layer_stack(modules)[1]),
        **results,
    }
    ratios = keep_ratios(modules)
    if ratios:
        plot_retention(modules, os.path.join(folder, "retention.png"))
        summary["retention_plot"] = "retention.png"
        summary["keep_ratios"] = ratios
    return summary


def keep_ratios(model):
    """Return the fraction of units adaptive dropout kept, per point.

    Arguments
    ---------
    model : torch.nn.Module
        A model converted with adaptive dropout.

    Returns
    -------
    dict
        ``point -> [fraction kept in layer 0, layer 1, ...]`` (empty for a
        model without adaptive dropout).
    """
    ratios = {}
    for _, masks in masked_layers(model):
        for point, adl in masks.items():
            kept = round(adl.n_units / adl.initial_units, 4)
            ratios.setdefault(point, []).append(kept)
    return ratios
