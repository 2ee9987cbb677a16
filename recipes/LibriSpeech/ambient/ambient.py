#!/usr/bin/env python3
"""Find the ambient and critical layers of a trained CTC Conformer.

Trains the model with the ASR recipe (``../ASR/train.py``) unless its
output folder already holds a checkpoint, then loads the best checkpoint
and resets each layer and each module (FFN1, attention, conv, FFN2) to
its initial weights theta_0, to a fresh random draw and to its weights
after earlier epochs, measuring the validation WER and loss each time
(Zhang, Bengio and Singer; Zhou et al. 2022). Writes to the output
folder:

* ``importance.json``: both reports (modules, layers), the weight-change
  history recorded during training, and the ambient units;
* ``importance.txt``: the same as tables;
* ``robustness_heatmap.png``: layers x reset targets (theta_0, theta after
  epoch t, random), coloured by the WER increase;
* ``robustness_vs_change.png``: WER increase against relative weight
  change, with the Spearman correlation.

It also analyses a run of the plain ASR recipe: with no
``WeightChangeTracker`` among its hooks, theta_0 is rebuilt from the
hparams file (same seed, same construction order, hence the same initial
weights) and only theta_0 and random draws are tested.

To run this recipe, do the following:
> python ambient.py hparams/conformer_ctc_importance.yaml
> python ambient.py ../ASR/hparams/conformer_ctc.yaml
>     --output_folder=../ASR/results/conformer_ctc/2024   (one line)

Authors
 * sb_prune developers
"""

import json
import logging
import sys
from pathlib import Path

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml

from sb_prune.analysis import BrainEvaluator, LayerImportance
from sb_prune.analysis.importance.plots import (
    format_report,
    plot_robustness_heatmap,
    plot_robustness_vs_change,
)
from sb_prune.analysis.importance.tracking import find_tracker
from sb_prune.analysis.importance.units import RANDOM, ambient_units, snapshot
from sb_prune.asr.brain import ASR
from sb_prune.asr.data import dataio_prepare, prepare_data
from sb_prune.asr.recipe import main as train_asr
from sb_prune.data.tokenizer import train_tokenizer

logger = logging.getLogger(__name__)


def build_brain(hparams_file, run_opts, overrides):
    """Load the hparams, data and Brain of a recipe run (no training).

    Returns
    -------
    tuple
        ``(brain, hparams, valid_set)``.
    """
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    prepare_data(hparams)
    tokenizer = train_tokenizer(hparams)
    _, valid, _ = dataio_prepare(hparams, tokenizer)
    brain = ASR(
        modules=hparams["modules"],
        opt_class=hparams["model_opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.tokenizer = tokenizer
    return brain, hparams, valid


def references(brain, tracker, fresh, epochs):
    """The reset targets: theta_0, random draws, theta after ``epochs``.

    Returns
    -------
    tuple
        References of the module tests, of the layer tests, and whether
        the saved theta_0 equals the one rebuilt from the hparams (None
        without a saved one).
    """
    if tracker is None or "epoch0" not in tracker.files:
        logger.warning(
            "No saved theta_0 (no WeightChangeTracker in prune_hooks): "
            "using the initial weights rebuilt from the hparams (same seed)"
        )
        plain = {"init": fresh, RANDOM: RANDOM}
        return plain, dict(plain), None
    initial = tracker.load(brain, "epoch0")
    same = all(torch.equal(initial[name], fresh[name]) for name in fresh)
    layers = {"init": initial}
    for epoch in epochs:
        if f"epoch{epoch}" in tracker.files:
            layers[f"epoch{epoch}"] = tracker.load(brain, f"epoch{epoch}")
    layers[RANDOM] = RANDOM
    return {"init": initial, RANDOM: RANDOM}, layers, same


def analyse(brain, hparams, valid):
    """Run the tamper tests on the best checkpoint; write the reports.

    Returns
    -------
    dict
        The content of ``importance.json``.
    """
    root = brain.unwrapped_modules()
    modules = hparams.get("importance") or LayerImportance("module")
    layers = hparams.get("importance_heatmap") or LayerImportance("layer")
    fresh = snapshot(root, {**modules.units(root), **layers.units(root)})
    brain.checkpointer.recover_if_possible(min_key="WER")
    counter = hparams["epoch_counter"]
    if not counter.current:
        raise ValueError(
            f"No checkpoint under {hparams['save_folder']}: train first"
        )
    tracker = find_tracker(brain)
    module_refs, layer_refs, same = references(
        brain, tracker, fresh, hparams.get("heatmap_epochs", [])
    )
    evaluate = BrainEvaluator(
        brain,
        valid,
        loader_kwargs=hparams["valid_dataloader_opts"],
        max_batches=hparams.get("analysis_batches"),
    )
    progress = not brain.noprogressbar
    reports = {
        "modules": modules.run(root, evaluate, module_refs, progress=progress),
        "layers": layers.run(root, evaluate, layer_refs, progress=progress),
    }
    folder = Path(hparams["output_folder"])
    plot_robustness_heatmap(
        reports["layers"], folder / "robustness_heatmap.png"
    )
    plot_robustness_vs_change(
        reports["modules"], folder / "robustness_vs_change.png"
    )
    summary = {
        "epoch": counter.current,
        "theta0_matches_rebuilt": same,
        "reports": reports,
        "ambient": sorted(
            ambient_units(reports["modules"]) + ambient_units(reports["layers"])
        ),
        "weight_change_history": tracker.history if tracker else [],
    }
    (folder / "importance.json").write_text(json.dumps(summary, indent=1))
    tables = "\n\n".join(format_report(r) for r in reports.values())
    (folder / "importance.txt").write_text(tables + "\n")
    print(tables)
    return summary


def main(argv):
    """Train if the output folder has no checkpoint, then analyse.

    Returns
    -------
    dict
        The content of ``importance.json``.
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    with open(hparams_file, encoding="utf-8") as fin:
        save_folder = Path(load_hyperpyyaml(fin, overrides)["save_folder"])
    if not list(save_folder.glob("CKPT+*")):
        train_asr(argv)
    brain, hparams, valid = build_brain(hparams_file, run_opts, overrides)
    return analyse(brain, hparams, valid)


if __name__ == "__main__":
    main(sys.argv[1:])
