#!/usr/bin/env python3
"""An encoder-decoder recipe in the style of SpeechBrain's upstream one.

Test material for sb_prune (see README.md): joint CTC and attention
training, beam search with a CTC scorer, and upstream's averaging
``on_evaluate_start``. ``SB_PRUNE_BRAIN=1`` makes the Brain a PruningBrain.

Usage: python train_seq2seq.py hparams/transformer_seq2seq.yaml \
    --data_folder=... --output_folder=...
"""

import os
import sys

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.tokenizers.SentencePiece import SentencePiece
from speechbrain.utils.distributed import if_main_process, run_on_main
from train import ASR as CTCRecipe
from train import dataio_prepare

from sb_prune.data.librispeech import prepare_librispeech


class ASR(CTCRecipe):
    def compute_forward(self, batch, stage):
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        tokens_bos, _ = batch.tokens_bos
        feats = self.hparams.compute_features(wavs)
        feats = self.modules.normalize(feats, wav_lens)
        src = self.modules.CNN(feats)
        enc_out, pred = self.modules.Transformer(
            src, tokens_bos, wav_lens, pad_idx=self.hparams.pad_index
        )
        p_ctc = self.hparams.log_softmax(self.modules.ctc_lin(enc_out))
        p_seq = self.hparams.log_softmax(self.modules.seq_lin(pred))
        hyps = None
        if stage != sb.Stage.TRAIN:
            hyps, _, _, _ = self.hparams.valid_search(
                enc_out.detach(), wav_lens
            )
        return p_ctc, p_seq, wav_lens, hyps

    def compute_objectives(self, predictions, batch, stage):
        p_ctc, p_seq, wav_lens, hyps = predictions
        tokens_eos, tokens_eos_lens = batch.tokens_eos
        tokens, tokens_lens = batch.tokens
        loss_seq = self.hparams.seq_cost(
            p_seq, tokens_eos, length=tokens_eos_lens
        )
        loss_ctc = self.hparams.ctc_cost(p_ctc, tokens, wav_lens, tokens_lens)
        weight = self.hparams.ctc_weight
        loss = weight * loss_ctc + (1 - weight) * loss_seq
        if stage != sb.Stage.TRAIN:
            words = [self.tokenizer.sp.decode_ids(h).split(" ") for h in hyps]
            targets = [wrd.split(" ") for wrd in batch.wrd]
            self.wer_metric.append(batch.id, words, targets)
        return loss

    def on_stage_start(self, stage, epoch):
        if stage != sb.Stage.TRAIN:
            self.wer_metric = self.hparams.wer_computer()

    def on_stage_end(self, stage, stage_loss, epoch):
        stage_stats = {"loss": stage_loss}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stage_stats
            return
        stage_stats["WER"] = self.wer_metric.summarize("error_rate")
        if stage == sb.Stage.VALID:
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch},
                train_stats=self.train_stats,
                valid_stats=stage_stats,
            )
            self.checkpointer.save_and_keep_only(
                meta={"WER": stage_stats["WER"], "epoch": epoch},
                min_keys=["WER"],
                num_to_keep=self.hparams.avg_checkpoints,
            )
        else:
            stage_stats["params"] = self.evaluated_params
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current},
                test_stats=stage_stats,
            )
            if if_main_process():
                with open(self.hparams.wer_file, "w", encoding="utf-8") as w:
                    self.wer_metric.write_stats(w)


def add_bos_eos(datasets, tokenizer, hparams):
    """The decoder's inputs and targets (upstream's tokens_bos/eos)."""

    @sb.utils.data_pipeline.takes("wrd")
    @sb.utils.data_pipeline.provides("tokens_bos", "tokens_eos")
    def bos_eos_pipeline(wrd):
        tokens = tokenizer.sp.encode_as_ids(wrd)
        yield torch.LongTensor([hparams["bos_index"]] + tokens)
        yield torch.LongTensor(tokens + [hparams["eos_index"]])

    sb.dataio.dataset.add_dynamic_item(datasets, bos_eos_pipeline)
    sb.dataio.dataset.set_output_keys(
        datasets, ["id", "sig", "wrd", "tokens", "tokens_bos", "tokens_eos"]
    )


if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    sb.utils.distributed.ddp_init_group(run_opts)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    run_on_main(
        prepare_librispeech,
        kwargs={
            "data_folder": hparams["data_folder"],
            "tr_splits": hparams["train_splits"],
            "dev_splits": hparams["dev_splits"],
            "te_splits": hparams["test_splits"],
            "save_folder": hparams["output_folder"],
            "merge_lst": hparams["train_splits"],
            "merge_name": "train.csv",
            "skip_prep": hparams["skip_prep"],
        },
    )
    tokenizer = SentencePiece(
        model_dir=hparams["save_folder"],
        vocab_size=hparams["output_neurons"],
        annotation_train=hparams["train_csv"],
        annotation_read="wrd",
        model_type=hparams["token_type"],
        character_coverage=hparams["character_coverage"],
        bos_id=hparams["bos_index"],
        eos_id=hparams["eos_index"],
    )
    train_data, valid_data, test_datasets = dataio_prepare(hparams, tokenizer)
    add_bos_eos(
        [train_data, valid_data, *test_datasets.values()], tokenizer, hparams
    )
    asr_brain = ASR(
        modules=hparams["modules"],
        opt_class=hparams["model_opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    asr_brain.tokenizer = tokenizer
    asr_brain.fit(
        asr_brain.hparams.epoch_counter,
        train_data,
        valid_data,
        train_loader_kwargs=hparams["train_dataloader_opts"],
        valid_loader_kwargs=hparams["valid_dataloader_opts"],
    )
    for name, test_set in test_datasets.items():
        asr_brain.hparams.wer_file = os.path.join(
            hparams["output_folder"], f"wer_{name}.txt"
        )
        asr_brain.evaluate(
            test_set,
            min_key="WER",
            test_loader_kwargs=hparams["test_dataloader_opts"],
        )
