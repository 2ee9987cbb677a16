#!/usr/bin/env python3
"""Recipe for compressing a pretrained Whisper encoder on real speech.

The student is SpeechBrain's Whisper lobe with the encoder only; a frozen
copy of the whole model (the teacher) supplies the decoder and the targets.
The loss is the decoder's cross-entropy on the transcripts, with the
student's encoder states fed to the teacher's decoder (teacher forcing),
plus ``distill_weight`` times the mean squared distance between the
student's and the teacher's encoder states. The ``prune_hooks`` of the
hparams file compress the student (criteria on FFN units and heads, low
rank by SVD or by activation PCA, a layer cut); the first
``calibration_epochs`` run with learning rate 0 (the model is unchanged
until the cut, the data-driven criteria collect their statistics), the
epochs after them fine-tune. Resuming the same output folder with a larger
``--number_of_epochs`` fine-tunes a finished run further. At the end the
dev and test sets are decoded greedily (SpeechBrain's
``S2SWhisperGreedySearcher``) and the student exported as a folder that
``speechbrain.inference.ASR.WhisperASR`` loads.

The ``train_utterances`` are drawn across the training speakers (seeded by
``seed``; a larger number keeps the smaller draw), so a calibration epoch
on a few utterances hears many voices; the dev and test subsets are the
first utterances of their sets.

To run this recipe (real LibriSpeech-format speech; Whisper as a Hugging
Face folder or a CTranslate2 one, such as faster-whisper's):
> python compress.py hparams/whisper_criteria.yaml
      --data_folder ../shared/data/librilight --whisper_source <folder>

Authors
 * sb_prune developers
"""

import json
import random
import sys
import time
from pathlib import Path

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import if_main_process, run_on_main

import sb_prune
from sb_prune.data.real_speech import plain_words, prepare_librispeech_trees
from sb_prune.deploy.whisper import export_whisper


class WhisperCompression(sb_prune.PruningBrain):
    """Student Whisper encoder, teacher decoder, greedy test decoding."""

    def on_fit_start(self):
        """Move the teacher with the student; run the hooks' start."""
        self.hparams.teacher.to(self.device)
        super().on_fit_start()

    def on_evaluate_start(self, max_key=None, min_key=None):
        """Move the teacher with the student; load the best checkpoint."""
        self.hparams.teacher.to(self.device)
        super().on_evaluate_start(max_key=max_key, min_key=min_key)

    def compute_forward(self, batch, stage):
        """Student encoder states; outside test, teacher states and logits."""
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        states = self.modules.whisper(wavs)
        if stage == sb.Stage.TEST:
            return states, wav_lens
        teacher, targets = self.hparams.teacher, None
        if self.hparams.distill_weight:
            with torch.no_grad():
                targets = teacher.forward_encoder(teacher._get_mel(wavs))
        bos, _ = batch.tokens_bos
        logits, _, _ = teacher.forward_decoder(states, bos, use_cache=False)
        return states, targets, logits

    def compute_objectives(self, predictions, batch, stage):
        """Cross-entropy plus distillation; WER of greedy decoding in test."""
        if stage == sb.Stage.TEST:
            states, wav_lens = predictions
            hyps, _, _, _ = self.hparams.searcher(states.detach(), wav_lens)
            tokenizer = self.hparams.teacher.tokenizer
            words = [
                plain_words(tokenizer.decode(h, skip_special_tokens=True))
                for h in hyps
            ]
            targets = [plain_words(w) for w in batch.wrd]
            self.wer_metric.append(batch.id, words, targets)
            return torch.tensor(0.0)
        states, targets, logits = predictions
        eos, eos_lens = batch.tokens_eos
        log_probs = torch.log_softmax(logits, dim=-1)
        loss = sb.nnet.losses.nll_loss(log_probs, eos, length=eos_lens)
        weight = self.hparams.distill_weight
        if weight:
            loss = loss + weight * torch.nn.functional.mse_loss(states, targets)
        return loss

    def on_stage_start(self, stage, epoch):
        """Learning rate 0 in calibration epochs; a WER metric for test."""
        if stage == sb.Stage.TRAIN:
            calibrating = epoch <= self.hparams.calibration_epochs
            for group in self.optimizer.param_groups:
                group["lr"] = 0.0 if calibrating else self.hparams.lr
        if stage == sb.Stage.TEST:
            self.wer_metric = self.hparams.error_rate_computer()

    def on_stage_end(self, stage, stage_loss, epoch):
        """Log, checkpoint on validation, write the WER after test."""
        if stage == sb.Stage.VALID:
            params = sum(
                p.numel() for p in self.modules.whisper.model.parameters()
            )
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "encoder_params": params},
                valid_stats={"loss": stage_loss},
            )
            self.checkpointer.save_and_keep_only(
                meta={"loss": stage_loss}, min_keys=["loss"]
            )
        elif stage == sb.Stage.TEST:
            self.test_stats = {"WER": self.wer_metric.summarize("error_rate")}
            self.hparams.train_logger.log_stats(
                stats_meta={
                    "Epoch loaded": self.hparams.epoch_counter.current,
                    "set": self.decoded_set,
                },
                test_stats=self.test_stats,
            )
            if if_main_process():
                path = wer_file(self.hparams, self.decoded_set)
                with open(path, "w", encoding="utf-8") as f:
                    self.wer_metric.write_stats(f)


def wer_file(hparams, name):
    """The WER details of a decoded set: ``wer_file``, ``wer_dev.txt``..."""
    path = Path(hparams.wer_file)
    if name == "test":
        return path
    return path.with_name(f"{path.stem}_{name}{path.suffix}")


def spread_subset(data, count, seed):
    """``count`` items drawn with ``seed``; a larger count keeps them all."""
    order = list(data.data_ids)
    random.Random(seed).shuffle(order)
    chosen = set(order[:count])
    ids = [i for i in data.data_ids if i in chosen]
    return sb.dataio.dataset.FilteredSortedDynamicItemDataset(data, ids)


def dataio_prepare(hparams):
    """Train, valid and test sets: audio and the teacher's tokens."""
    tokenizer = hparams["teacher"].tokenizer
    prefix = list(tokenizer.prefix_tokens)
    eos = tokenizer.eos_token_id

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        return sb.dataio.dataio.read_audio(wav)

    @sb.utils.data_pipeline.takes("wrd")
    @sb.utils.data_pipeline.provides("wrd", "tokens_bos", "tokens_eos")
    def text_pipeline(wrd):
        yield wrd
        text = " " + wrd.lower().capitalize()
        tokens = tokenizer.encode(text, add_special_tokens=False)
        yield torch.LongTensor(prefix + tokens)
        yield torch.LongTensor(prefix[1:] + tokens + [eos])

    save = Path(hparams["output_folder"])
    sets = {}
    for name in ("train", "dev", "test"):
        data = sb.dataio.dataset.DynamicItemDataset.from_csv(
            csv_path=save / f"{name}.csv",
            replacements={"data_root": hparams["data_folder"]},
        )
        count = hparams[f"{name}_utterances"]
        if name == "train":  # across the speakers: the IDs sort by speaker
            data = spread_subset(data, count, hparams["seed"])
        else:
            data = data.filtered_sorted(select_n=count)
        sb.dataio.dataset.add_dynamic_item([data], audio_pipeline)
        sb.dataio.dataset.add_dynamic_item([data], text_pipeline)
        sb.dataio.dataset.set_output_keys(
            [data], ["id", "sig", "wrd", "tokens_bos", "tokens_eos"]
        )
        sets[name] = data
    return sets["train"], sets["dev"], sets["test"]


def main(argv):
    """Compress, fine-tune, decode the test set, export; returns the Brain."""
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
    run_on_main(
        prepare_librispeech_trees,
        args=[hparams["data_folder"], hparams["output_folder"]],
    )
    train, valid, test = dataio_prepare(hparams)
    brain = WhisperCompression(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.fit(
        hparams["epoch_counter"],
        train,
        valid,
        train_loader_kwargs=hparams["train_dataloader_opts"],
        valid_loader_kwargs=hparams["valid_dataloader_opts"],
    )
    train_seconds = time.time() - start
    wer = {}
    for name, data in (("dev", valid), ("test", test)):
        brain.decoded_set = name
        brain.evaluate(
            data,
            min_key="loss",
            test_loader_kwargs=hparams["test_dataloader_opts"],
        )
        wer[name] = round(brain.test_stats["WER"], 2)
    student = brain.unwrapped_modules()["whisper"]
    if if_main_process():
        exported = export_whisper(
            student, hparams["whisper_folder"], hparams["export_folder"]
        )
        results = {
            "WER": wer["test"],
            "dev_WER": wer["dev"],
            "encoder_params": exported["encoder_params"],
            "epochs": hparams["number_of_epochs"],
            "calibration_epochs": hparams["calibration_epochs"],
            "train_utterances": len(train),
            "dev_utterances": len(valid),
            "test_utterances": len(test),
            "train_seconds": round(train_seconds, 1),
            "budget": {  # the fine-tuning's (calibration has lr 0)
                "utterance_steps": len(train)
                * (hparams["number_of_epochs"] - hparams["calibration_epochs"]),
                "cpu_minutes": round(
                    train_seconds / 60 * torch.get_num_threads(), 1
                ),
                "threads": torch.get_num_threads(),
            },
            "export_folder": exported["folder"],
        }
        with open(hparams["results_file"], "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)
    return brain


if __name__ == "__main__":
    main(sys.argv[1:])
