#!/usr/bin/env python3
"""Whisper fine-tuning in the style of SpeechBrain's upstream LibriSpeech one.

Test material for sb_prune (see README.md), shaped like
``recipes/LibriSpeech/ASR/transformer/train_with_whisper.py``: the whole
Whisper (encoder and decoder) is fine-tuned on the NLL of its decoder,
the decoder's inputs padded with the tokenizer's pad token, transcripts
normalised by Whisper's tokenizer (``normalized_transcripts``), greedy
search to validate, beam search to test, and the checkpoint of the lowest
validation WER kept and tested (SpeechBrain's default
``on_evaluate_start``). The Brain is a plain ``sb.Brain``: the sb_prune
tests make it a PruningBrain with the README's one-line edit.

Data: real LibriSpeech-layout speech under ``data_folder``, split by
speaker into ``train.csv``, ``dev.csv`` and ``test.csv``
(``sb_prune.data.real_speech.prepare_librispeech_trees``), or CSVs of
yours with ``--skip_prep=True``.

Usage: python train_with_whisper.py hparams/train_hf_whisper.yaml \
    --data_folder=... --whisper_hub=<Whisper folder> --output_folder=...
"""

import os
import sys
from pathlib import Path

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.data_utils import undo_padding
from speechbrain.utils.distributed import if_main_process, run_on_main

from sb_prune.data.real_speech import prepare_librispeech_trees


class ASR(sb.Brain):
    def compute_forward(self, batch, stage):
        """Encoder states and decoder log-probabilities; hypotheses to
        validate (greedy) and test (beam search)."""
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        bos_tokens, bos_lens = batch.tokens_bos
        # The decoder sees the pad token after each transcript, not the
        # zeros PaddedBatch puts there.
        lengths = torch.round(bos_lens * bos_tokens.shape[1]).long()
        positions = torch.arange(bos_tokens.shape[1], device=self.device)
        padding = positions[None, :] >= lengths[:, None]
        bos_tokens = bos_tokens.masked_fill(
            padding, self.tokenizer.pad_token_id
        )
        enc_out, logits, _ = self.modules.whisper(wavs, bos_tokens)
        log_probs = self.hparams.log_softmax(logits)
        hyps = None
        if stage == sb.Stage.VALID:
            hyps, _, _, _ = self.hparams.valid_search(
                enc_out.detach(), wav_lens
            )
        elif stage == sb.Stage.TEST:
            hyps, _, _, _ = self.hparams.test_search(enc_out.detach(), wav_lens)
        return log_probs, hyps, wav_lens

    def compute_objectives(self, predictions, batch, stage):
        """NLL of the next tokens; WER and CER outside training."""
        log_probs, hyps, _ = predictions
        tokens_eos, tokens_eos_lens = batch.tokens_eos
        loss = self.hparams.nll_loss(
            log_probs, tokens_eos, length=tokens_eos_lens
        )
        if stage != sb.Stage.TRAIN:
            tokens, tokens_lens = batch.tokens
            hypotheses = [
                self.tokenizer.decode(h, skip_special_tokens=True).strip()
                for h in hyps
            ]
            references = self.tokenizer.batch_decode(
                undo_padding(tokens, tokens_lens), skip_special_tokens=True
            )
            predicted = [self.words(text) for text in hypotheses]
            targets = [self.words(text) for text in references]
            self.wer_metric.append(batch.id, predicted, targets)
            self.cer_metric.append(batch.id, predicted, targets)
        return loss

    def words(self, text):
        """The words scored: normalised as Whisper's paper does, if set."""
        if getattr(self.hparams, "normalized_transcripts", False):
            text = self.tokenizer.normalize(text)
        return text.split(" ")

    def on_stage_start(self, stage, epoch):
        if stage != sb.Stage.TRAIN:
            self.cer_metric = self.hparams.cer_computer()
            self.wer_metric = self.hparams.error_rate_computer()

    def on_stage_end(self, stage, stage_loss, epoch):
        stage_stats = {"loss": stage_loss}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stage_stats
            return
        stage_stats["CER"] = self.cer_metric.summarize("error_rate")
        stage_stats["WER"] = self.wer_metric.summarize("error_rate")
        if stage == sb.Stage.VALID:
            self.hparams.train_logger.log_stats(
                stats_meta={
                    "epoch": epoch,
                    "lr": self.hparams.lr_annealing_whisper.current_lr,
                },
                train_stats=self.train_stats,
                valid_stats=stage_stats,
            )
            self.checkpointer.save_and_keep_only(
                meta={"WER": stage_stats["WER"]}, min_keys=["WER"]
            )
        else:
            # The size of the model tested (sb_prune's tests read it).
            stage_stats["params"] = sum(
                p.numel() for p in self.modules.whisper.parameters()
            )
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current},
                test_stats=stage_stats,
            )
            if if_main_process():
                with open(
                    self.hparams.test_wer_file, "w", encoding="utf-8"
                ) as w:
                    self.wer_metric.write_stats(w)


def prepare_data(hparams):
    """Split the trees under ``data_folder`` by speaker into CSVs."""
    if hparams["skip_prep"]:
        return
    run_on_main(
        prepare_librispeech_trees,
        kwargs={
            "root": hparams["data_folder"],
            "save_folder": hparams["output_folder"],
            "dev_speakers": hparams["dev_speakers"],
            "test_speakers": hparams["test_speakers"],
            "seed": hparams["split_seed"],
        },
    )


def read_datasets(hparams):
    """The datasets of the CSVs, sorted as ``sorting`` says, with audio.

    Returns the training and validation sets and the test sets by name.
    """
    data_folder = hparams["data_folder"]

    def read(csv_path):
        return sb.dataio.dataset.DynamicItemDataset.from_csv(
            csv_path=csv_path, replacements={"data_root": data_folder}
        )

    train_data = read(hparams["train_csv"])
    if hparams["sorting"] in ("ascending", "descending"):
        train_data = train_data.filtered_sorted(
            sort_key="duration", reverse=hparams["sorting"] == "descending"
        )
        # Shuffling would undo the sorting.
        hparams["train_loader_kwargs"]["shuffle"] = False
    elif hparams["sorting"] != "random":
        raise NotImplementedError(
            "sorting must be random, ascending or descending"
        )
    valid_data = read(hparams["valid_csv"]).filtered_sorted(sort_key="duration")
    test_datasets = {
        Path(csv_path).stem: read(csv_path).filtered_sorted(sort_key="duration")
        for csv_path in hparams["test_csv"]
    }

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        return sb.dataio.dataio.read_audio(wav)

    datasets = [train_data, valid_data, *test_datasets.values()]
    sb.dataio.dataset.add_dynamic_item(datasets, audio_pipeline)
    return train_data, valid_data, test_datasets


def dataio_prepare(hparams, tokenizer):
    """The datasets, with Whisper's tokens of each transcript."""
    train_data, valid_data, test_datasets = read_datasets(hparams)
    datasets = [train_data, valid_data, *test_datasets.values()]

    @sb.utils.data_pipeline.takes("wrd")
    @sb.utils.data_pipeline.provides(
        "wrd", "tokens_list", "tokens_bos", "tokens_eos", "tokens"
    )
    def text_pipeline(wrd):
        if hparams.get("normalized_transcripts"):
            wrd = tokenizer.normalize(wrd)
        yield wrd
        tokens_list = tokenizer.encode(wrd, add_special_tokens=False)
        yield tokens_list
        # Whisper's prompt, the transcript, end of text.
        full = tokenizer.build_inputs_with_special_tokens(tokens_list)
        yield torch.LongTensor(full[:-1])
        yield torch.LongTensor(full[1:])
        yield torch.LongTensor(full)

    sb.dataio.dataset.add_dynamic_item(datasets, text_pipeline)
    sb.dataio.dataset.set_output_keys(
        datasets,
        ["id", "sig", "tokens_list", "tokens_bos", "tokens_eos", "tokens"],
    )
    return train_data, valid_data, test_datasets


def main(argv, brain_class, tokenizer_of, dataio):
    """Prepare the data, train, then test each test set (upstream's steps).

    ``tokenizer_of(hparams)`` gives the recipe's tokenizer and
    ``dataio(hparams, tokenizer)`` its datasets; the Brain's optimizer is
    ``whisper_opt_class``.
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    prepare_data(hparams)
    tokenizer = tokenizer_of(hparams)
    train_data, valid_data, test_datasets = dataio(hparams, tokenizer)
    asr_brain = brain_class(
        modules=hparams["modules"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
        opt_class=hparams["whisper_opt_class"],
    )
    if "pretrainer" in hparams:
        hparams["pretrainer"].collect_files()
        hparams["pretrainer"].load_collected(asr_brain.device)
    asr_brain.tokenizer = tokenizer
    asr_brain.fit(
        asr_brain.hparams.epoch_counter,
        train_data,
        valid_data,
        train_loader_kwargs=hparams["train_loader_kwargs"],
        valid_loader_kwargs=hparams["valid_loader_kwargs"],
    )
    os.makedirs(hparams["output_wer_folder"], exist_ok=True)
    for name, test_set in test_datasets.items():
        asr_brain.hparams.test_wer_file = os.path.join(
            hparams["output_wer_folder"], f"wer_{name}.txt"
        )
        asr_brain.evaluate(
            test_set,
            test_loader_kwargs=hparams["test_loader_kwargs"],
            min_key="WER",
        )


def whisper_tokenizer(hparams):
    """Whisper's own tokenizer, loaded with the model."""
    return hparams["whisper"].tokenizer


if __name__ == "__main__":
    main(sys.argv[1:], ASR, whisper_tokenizer, dataio_prepare)
