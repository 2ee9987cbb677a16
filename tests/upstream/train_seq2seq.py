#!/usr/bin/env python3
"""An encoder-decoder recipe in the style of SpeechBrain's upstream one.

Test material for sb_prune (see README.md): joint CTC and attention
training, beam search with a CTC scorer, and upstream's averaging
``on_evaluate_start``. ``SB_PRUNE_BRAIN=1`` makes the Brain a PruningBrain.

Usage: python train_seq2seq.py hparams/transformer_seq2seq.yaml \
    --data_folder=... --output_folder=...
"""

import sys

import speechbrain as sb
import torch
from speechbrain.utils.distributed import if_main_process
from train import ASR as CTCRecipe
from train import main


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
    main(sys.argv[1:], ASR, add_bos_eos)
