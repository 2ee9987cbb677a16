"""A whole run of the CTC Conformer ASR recipe: train, then test.

``recipes/LibriSpeech/ASR/train.py`` is ``main(sys.argv[1:])``, and
``sb-prune compress`` calls :func:`main` in process with an hparams file
of that recipe (shipped with the wheel)::

    main(["hparams/conformer_ctc.yaml", "--output_folder=run"])

Authors
 * sb_prune developers
"""

import json
import time

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import if_main_process

from sb_prune.asr.brain import ASR
from sb_prune.asr.data import dataio_prepare, prepare_data
from sb_prune.data.tokenizer import train_tokenizer
from sb_prune.deploy.pretrained import initialize_from
from sb_prune.methods.i3d.gates import GateRecorder
from sb_prune.reporting.summary import write_recipe_summary


def main(argv):
    """Train, then evaluate on every test split; return the Brain.

    Writes the run folder (``output_folder``): checkpoints, logs, WER
    files per test split and ``results.json`` (parameters, test WER/CER,
    gate statistics of I3D models, training time).

    Arguments
    ---------
    argv : list of str
        SpeechBrain's command line: the hparams file, then ``--key=value``
        overrides and run options.

    Returns
    -------
    ASR
        The trained and tested Brain.
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    sb.utils.distributed.ddp_init_group(run_opts)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    start = time.time()
    prepare_data(hparams)
    if hparams.get("init_from"):  # absent from other recipes' hparams
        initialize_from(hparams, hparams["init_from"])
    tokenizer = train_tokenizer(hparams)
    train, valid, tests = dataio_prepare(hparams, tokenizer)

    asr_brain = ASR(
        modules=hparams["modules"],
        opt_class=hparams["model_opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    asr_brain.tokenizer = tokenizer
    train_loader = asr_brain.make_dataloader(
        train, stage=sb.Stage.TRAIN, **hparams["train_dataloader_opts"]
    )
    steps = len(train_loader) // hparams["grad_accumulation_factor"]
    hparams["lr_annealing"].num_training_steps = (
        steps * hparams["number_of_epochs"]
    )
    asr_brain.fit(
        hparams["epoch_counter"],
        train_loader,
        valid,
        valid_loader_kwargs=hparams["valid_dataloader_opts"],
    )
    train_seconds = time.time() - start

    results = {"train_seconds": round(train_seconds, 1)}
    for name, test_set in tests.items():
        asr_brain.hparams.wer_file = f"{hparams['wer_file_prefix']}{name}.txt"
        # sb_prune I3D: record the gates of a gated encoder (no-op without).
        with GateRecorder(asr_brain.unwrapped_modules()) as gates:
            asr_brain.evaluate(
                test_set,
                min_key="WER",
                test_loader_kwargs=hparams["test_dataloader_opts"],
            )
        results[name] = {
            "WER": asr_brain.test_stats["WER"],
            "CER": asr_brain.test_stats["CER"],
        }
        # Gate statistics, and gates_<name>.png against the input.
        results[name].update(
            gates.report(
                hparams["output_folder"],
                name,
                test_set.data_ids,
                labels_folder=hparams["data_folder"],
            )
        )
    # The validation WER of the (best) checkpoint tested.
    results["valid"] = {"WER": getattr(asr_brain, "valid_wer", None)}
    if if_main_process():
        summary = write_recipe_summary(asr_brain, results)
        with open(hparams["results_file"], "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2)
    return asr_brain
