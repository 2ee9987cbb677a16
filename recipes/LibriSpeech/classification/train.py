#!/usr/bin/env python3
"""Utterance classification on top of the ASR recipe's Conformer encoder.

Keyword classification (which of 10 keywords the sentence says) or speaker
identification (the training speakers, each speaker's utterances split
into train/valid/test) on the synthetic corpus. The encoder (front end and
Conformer) and its feature normalisation come from a run of ``../ASR``;
its checkpoint's structure record reshapes the model first, so a pruned
ASR encoder loads too. A linear head on the mean-pooled encoder output is
fine-tuned with the encoder.

The ``prune_hooks`` score the convexity of the task's classes at every
encoder depth when training starts (``convexity.json``/``.png``) and cut
the encoder with the rule of ``cut_rule`` before fine-tuning:
``peak``/``fraction`` (convexity), ``evenly_spaced``/``last``/``first``
(``cut_layers`` layers) or ``none``. ``compare.py`` runs the comparison.

To run this recipe (after ``python train.py hparams/conformer_ctc.yaml``
in ../ASR):
> python train.py hparams/classify.yaml --task=keyword
> python train.py hparams/classify.yaml --task=speaker --cut_rule=none

Authors
 * sb_prune developers
"""

import csv
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.checkpoints import Checkpointer
from speechbrain.utils.distributed import if_main_process, run_on_main

import sb_prune
from sb_prune.analysis import masked_mean_pool
from sb_prune.core.checkpoints import read_structure
from sb_prune.core.profiling import count_macs
from sb_prune.core.structure import restore
from sb_prune.data import read_labels
from sb_prune.data.librispeech import split_rows
from sb_prune.reporting.summary import count_parameters

logger = logging.getLogger(__name__)

TASKS = ("keyword", "speaker")
CSV_COLUMNS = ["ID", "duration", "wav", "label"]


class Classifier(sb_prune.PruningBrain):
    """Pretrained Conformer encoder, mean pooling and a linear head."""

    def encode(self, wavs, wav_lens):
        """Features -> front end -> Conformer encoder output [B, T, D]."""
        feats = self.hparams.compute_features(wavs)
        epoch = self.hparams.epoch_counter.current
        feats = self.modules.normalize(feats, wav_lens, epoch=epoch)
        src = self.modules.CNN(feats)
        enc_out, _ = self.modules.Transformer(src, tgt=None, wav_len=wav_lens)
        return enc_out

    def compute_forward(self, batch, stage):
        """Class log-probabilities of each utterance."""
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        pooled = masked_mean_pool(self.encode(wavs, wav_lens), wav_lens)
        return self.hparams.log_softmax(self.modules.head(pooled))

    def compute_objectives(self, predictions, batch, stage):
        """NLL loss; accuracy counts outside training."""
        targets = batch.label_index.data[:, 0].to(self.device)
        loss = torch.nn.functional.nll_loss(predictions, targets)
        if stage != sb.Stage.TRAIN:
            hits = predictions.argmax(dim=-1) == targets
            self.correct += int(hits.sum())
            self.total += len(hits)
        return loss

    def on_stage_start(self, stage, epoch):
        """Reset the accuracy counts."""
        self.correct, self.total = 0, 0

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Anneal the learning rate after every optimizer step."""
        if should_step:
            self.hparams.lr_annealing(self.optimizer)

    def on_stage_end(self, stage, stage_loss, epoch):
        """Log, checkpoint after validation, keep the test accuracy."""
        stats = {"loss": stage_loss}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            return
        stats["ACC"] = 100.0 * self.correct / max(self.total, 1)
        if stage == sb.Stage.VALID:
            self.hparams.train_logger.log_stats(
                stats_meta={
                    "epoch": epoch,
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "params": count_parameters(self.modules),
                },
                train_stats=self.train_stats,
                valid_stats=stats,
            )
            self.checkpointer.save_and_keep_only(
                meta={"ACC": stats["ACC"], "epoch": epoch},
                max_keys=["ACC"],
                num_to_keep=1,
            )
        else:
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current},
                test_stats=stats,
            )
            self.test_stats = stats


def _write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def split_by_speaker(rows, speaker_of, valid_fraction, test_fraction, seed):
    """Split each speaker's utterances into train, valid and test rows.

    Arguments
    ---------
    rows : list of dict
        Utterance rows (with ``ID``).
    speaker_of : dict
        Utterance ID -> speaker.
    valid_fraction, test_fraction : float
        Fractions of each speaker's utterances (at least one each).
    seed : int
        Seed of the shuffle within each speaker.

    Returns
    -------
    dict
        ``train``, ``valid`` and ``test`` lists of rows.

    Example
    -------
    >>> rows = [{"ID": f"{s}-{i}"} for s in "ab" for i in range(5)]
    >>> parts = split_by_speaker(rows, {r["ID"]: r["ID"][0] for r in rows},
    ...                          0.2, 0.2, seed=0)
    >>> [len(parts[k]) for k in ("train", "valid", "test")]
    [6, 2, 2]
    """
    rng = np.random.default_rng(seed)
    per_speaker = {}
    for row in rows:
        per_speaker.setdefault(speaker_of[row["ID"]], []).append(row)
    parts = {"train": [], "valid": [], "test": []}
    for speaker in sorted(per_speaker):
        utterances = per_speaker[speaker]
        order = rng.permutation(len(utterances))
        n_valid = max(1, round(valid_fraction * len(utterances)))
        n_test = max(1, round(test_fraction * len(utterances)))
        if n_valid + n_test >= len(utterances):
            raise ValueError(
                f"speaker {speaker} has {len(utterances)} utterances: too "
                "few for speaker_valid_fraction and speaker_test_fraction"
            )
        shuffled = [utterances[i] for i in order]
        parts["valid"] += shuffled[:n_valid]
        parts["test"] += shuffled[n_valid : n_valid + n_test]
        parts["train"] += shuffled[n_valid + n_test :]
    return {name: sorted(p, key=lambda r: r["ID"]) for name, p in parts.items()}


def prepare_classification(hparams):
    """Write train/valid/test CSVs with a ``label`` column for the task."""
    task = hparams["task"]
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    data_folder = hparams["data_folder"]
    labels = read_labels(data_folder)
    train_split = hparams["train_split"]
    if task == "keyword":
        parts = {
            "train": split_rows(data_folder, train_split),
            "valid": split_rows(data_folder, hparams["valid_split"]),
            "test": split_rows(data_folder, hparams["test_split"]),
        }
    else:
        speakers = {utt: str(row["speaker"]) for utt, row in labels.items()}
        parts = split_by_speaker(
            split_rows(data_folder, train_split),
            speakers,
            hparams["speaker_valid_fraction"],
            hparams["speaker_test_fraction"],
            hparams["seed"],
        )
    column = "keyword" if task == "keyword" else "speaker"
    for name, rows in parts.items():
        for row in rows:
            row["label"] = labels[row["ID"]][column]
            del row["spk_id"], row["wrd"]
        _write_csv(hparams[f"{name}_csv"], rows)


def dataio_prepare(hparams):
    """Datasets of ``sig`` and ``label_index``, and the label encoder."""
    data_folder = hparams["data_folder"]
    datasets = {}
    for name in ("train", "valid", "test"):
        datasets[name] = sb.dataio.dataset.DynamicItemDataset.from_csv(
            csv_path=hparams[f"{name}_csv"],
            replacements={"data_root": data_folder},
        ).filtered_sorted(sort_key="duration")
    label_encoder = sb.dataio.encoder.CategoricalEncoder()

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        return sb.dataio.dataio.read_audio(wav)

    @sb.utils.data_pipeline.takes("label")
    @sb.utils.data_pipeline.provides("label", "label_index")
    def label_pipeline(label):
        yield label
        yield label_encoder.encode_label_torch(label)

    items = list(datasets.values())
    sb.dataio.dataset.add_dynamic_item(items, audio_pipeline)
    sb.dataio.dataset.add_dynamic_item(items, label_pipeline)
    classes = {row["label"] for row in datasets["train"].data.values()}
    label_encoder.expect_len(len(classes))
    label_encoder.load_or_create(
        path=os.path.join(hparams["save_folder"], "label_encoder.txt"),
        from_didatasets=[datasets["train"]],
        output_key="label",
    )
    sb.dataio.dataset.set_output_keys(items, ["id", "sig", "label_index"])
    return datasets, label_encoder


def load_pretrained_encoder(hparams):
    """Load the front end, encoder and normaliser of an ASR recipe run.

    The best checkpoint (lowest WER) under ``<pretrained_folder>/save`` is
    used; its structure record reshapes CNN and Transformer first.
    """
    folder = hparams["pretrained_folder"]
    save = Path(folder) / "save"
    if not save.is_dir():
        raise ValueError(
            f"pretrained_folder {folder} has no save/ folder: train the ASR "
            "recipe first (cd ../ASR; python train.py hparams/conformer_ctc"
            ".yaml) or point pretrained_folder at its output folder"
        )
    checkpoint = Checkpointer(str(save)).find_checkpoint(min_key="WER")
    if checkpoint is None:
        raise ValueError(f"pretrained_folder {folder} holds no checkpoint")
    modules = torch.nn.ModuleDict(
        {"CNN": hparams["CNN"], "Transformer": hparams["Transformer"]}
    )
    record = read_structure(checkpoint) or {}
    restore(
        modules,
        {p: s for p, s in record.items() if p.split(".")[0] in modules},
    )
    state = torch.load(checkpoint.paramfiles["model"], map_location="cpu")
    for index, name in enumerate(modules):
        prefix = f"{index}."
        part = {
            k[len(prefix) :]: v
            for k, v in state.items()
            if k.startswith(prefix)
        }
        try:
            modules[name].load_state_dict(part)
        except RuntimeError as error:
            raise ValueError(
                f"The checkpoint of pretrained_folder {folder} does not fit "
                f"{name}: use the model sizes of the ASR run (d_model, nhead, "
                f"num_encoder_layers, d_ffn, conv_kernel_size): {error}"
            ) from None
    hparams["normalize"]._load(checkpoint.paramfiles["normalizer"])
    logger.info(f"Loaded the pretrained encoder of {checkpoint.path}")


def model_macs(brain, seconds):
    """Multiply-accumulates of one utterance of ``seconds`` (encoder+head)."""
    wavs = torch.zeros(1, int(seconds * brain.hparams.sample_rate))
    lens = torch.ones(1)
    brain.modules.eval()

    def forward(wavs):
        pooled = masked_mean_pool(brain.encode(wavs, lens), lens)
        return brain.modules.head(pooled)

    return count_macs(forward, wavs.to(brain.device))


def main(argv):
    """Prepare, load the encoder, fine-tune, test; returns the Brain."""
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
    run_on_main(prepare_classification, kwargs={"hparams": hparams})
    datasets, label_encoder = dataio_prepare(hparams)
    load_pretrained_encoder(hparams)
    head = hparams["classifier"](n_neurons=len(label_encoder))
    hparams["modules"]["head"] = head
    hparams["checkpointer"].add_recoverable("head", head)

    brain = Classifier(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    dense = {
        "params": count_parameters(brain.modules),
        "layers": len(hparams["Transformer"].encoder.layers),
    }
    train_loader = brain.make_dataloader(
        datasets["train"], stage=sb.Stage.TRAIN, **hparams["train_loader"]
    )
    hparams["lr_annealing"].num_training_steps = (
        len(train_loader) * hparams["number_of_epochs"]
    )
    brain.fit(
        hparams["epoch_counter"],
        train_loader,
        datasets["valid"],
        valid_loader_kwargs=hparams["test_loader"],
    )
    train_seconds = time.time() - start
    brain.evaluate(
        datasets["test"],
        max_key="ACC",
        test_loader_kwargs=hparams["test_loader"],
    )
    encoder = hparams["Transformer"].encoder
    best = brain.checkpointer.find_checkpoint(max_key="ACC")
    results = {
        "task": hparams["task"],
        "cut_rule": hparams["cut_rule"],
        "classes": len(label_encoder),
        "layers_kept": len(encoder.layers),
        "layers_total": dense["layers"],
        "cut": hparams["layer_cut"].decision,
        "params": count_parameters(brain.modules),
        "params_dense": dense["params"],
        "encoder_params": count_parameters(encoder),
        "macs_per_utterance": model_macs(brain, hparams["macs_seconds"]),
        "macs_seconds": hparams["macs_seconds"],
        "valid_accuracy": best.meta["ACC"],
        "best_epoch": best.meta["epoch"],
        "test_accuracy": brain.test_stats["ACC"],
        "train_seconds": round(train_seconds, 1),
    }
    if if_main_process():
        with open(hparams["results_file"], "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)
    return brain


if __name__ == "__main__":
    main(sys.argv[1:])
