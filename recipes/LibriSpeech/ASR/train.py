#!/usr/bin/env python3
"""Recipe for training a CTC Conformer on LibriSpeech-format data.

By default it trains on sb_prune's offline synthetic corpus (generated on
first use); point ``--data_folder`` at a LibriSpeech folder for the real
data. The Brain is an ``sb_prune.PruningBrain``, so the pruning hooks listed
in the hparams file under ``prune_hooks`` run between epochs.

The Brain, the data preparation and the run itself are packaged
(:mod:`sb_prune.asr`: ``brain``, ``data``, ``recipe``), so that ``sb-prune
compress`` runs the same code from an installed wheel; this script runs
them on a hparams file of this folder.

To run this recipe, do the following:
> python train.py hparams/conformer_ctc.yaml
> python train.py hparams/conformer_ctc_adaptive_dropout.yaml
> python train.py hparams/conformer_ctc_i3d_local.yaml

Authors
 * sb_prune developers
"""

import sys

from sb_prune.asr.recipe import main

if __name__ == "__main__":
    main(sys.argv[1:])
