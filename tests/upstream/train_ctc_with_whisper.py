#!/usr/bin/env python3
"""Whisper's encoder with a CTC head, in the style of SpeechBrain's recipe.

Test material for sb_prune (see README.md), shaped like
``recipes/LibriSpeech/ASR/CTC/train_with_whisper.py``: the Whisper encoder
(``encoder_only``) feeds a small DNN (``enc``) and a CTC output layer
(``ctc_lin``) over a SentencePiece character tokenizer; Whisper and the
head have optimizers of their own, Whisper's held back for
``warmup_steps``, both annealed (NewBob) after each validation; greedy CTC
decoding to validate, CTC beam search to test, the checkpoint of the
lowest validation WER tested. Data and main steps are
``train_with_whisper.py``'s (run it from a folder that has both). The
Brain is a plain ``sb.Brain``: the sb_prune tests make it a PruningBrain
with the README's one-line edit.

Usage: python train_ctc_with_whisper.py hparams/train_hf_whisper_encoder.yaml \
    --data_folder=... --whisper_hub=<Whisper folder> --output_folder=...
"""

import sys

import speechbrain as sb
import torch
from speechbrain.decoders.ctc import CTCBeamSearcher
from speechbrain.tokenizers.SentencePiece import SentencePiece
from speechbrain.utils.data_utils import undo_padding
from speechbrain.utils.distributed import if_main_process
from train_with_whisper import main, read_datasets


class ASR(sb.Brain):
    def compute_forward(self, batch, stage):
        """CTC log-probabilities; hypotheses to validate and test."""
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        encoded = self.modules.enc(self.modules.whisper(wavs))
        p_ctc = self.hparams.log_softmax(self.modules.ctc_lin(encoded))
        p_tokens = None
        if stage == sb.Stage.VALID:
            p_tokens = sb.decoders.ctc_greedy_decode(
                p_ctc, wav_lens, blank_id=self.hparams.blank_index
            )
        elif stage == sb.Stage.TEST:
            p_tokens = self.test_searcher(p_ctc, wav_lens)
        return p_ctc, wav_lens, p_tokens

    def compute_objectives(self, predictions, batch, stage):
        """CTC loss; WER and CER outside training."""
        p_ctc, wav_lens, p_tokens = predictions
        tokens, tokens_lens = batch.tokens
        loss = self.hparams.ctc_cost(p_ctc, tokens, wav_lens, tokens_lens)
        if stage != sb.Stage.TRAIN:
            if stage == sb.Stage.VALID:
                predicted = self.tokenizer(p_tokens, task="decode_from_list")
            else:
                predicted = [hyps[0].text.split(" ") for hyps in p_tokens]
            targets = self.tokenizer(
                undo_padding(tokens, tokens_lens), task="decode_from_list"
            )
            self.wer_metric.append(batch.id, predicted, targets)
            self.cer_metric.append(batch.id, predicted, targets)
        return loss

    def init_optimizers(self):
        """One optimizer for Whisper, one for the DNN and CTC layer."""
        self.whisper_optimizer = self.hparams.whisper_opt_class(
            self.modules.whisper.parameters()
        )
        self.model_optimizer = self.hparams.model_opt_class(
            self.hparams.model.parameters()
        )
        self.optimizers_dict = {
            "model_optimizer": self.model_optimizer,
            "whisper_optimizer": self.whisper_optimizer,
        }
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable(
                "whisper_opt", self.whisper_optimizer
            )
            self.checkpointer.add_recoverable("modelopt", self.model_optimizer)

    def freeze_optimizers(self, optimizers):
        """Whisper's optimizer steps only after the warm-up of the head."""
        stepped = {"model_optimizer": optimizers["model_optimizer"]}
        warm = self.optimizer_step > self.hparams.warmup_steps
        if not self.hparams.freeze_whisper and warm:
            stepped["whisper_optimizer"] = optimizers["whisper_optimizer"]
        return stepped

    def on_stage_start(self, stage, epoch):
        if stage != sb.Stage.TRAIN:
            self.cer_metric = self.hparams.cer_computer()
            self.wer_metric = self.hparams.error_rate_computer()
        if stage == sb.Stage.TEST:
            sp = self.tokenizer.sp
            self.test_searcher = CTCBeamSearcher(
                **self.hparams.test_beam_search,
                vocab_list=[sp.id_to_piece(i) for i in range(sp.vocab_size())],
            )

    def on_stage_end(self, stage, stage_loss, epoch):
        stage_stats = {"loss": stage_loss}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stage_stats
            return
        stage_stats["CER"] = self.cer_metric.summarize("error_rate")
        stage_stats["WER"] = self.wer_metric.summarize("error_rate")
        if stage == sb.Stage.VALID:
            lr_model, new_lr_model = self.hparams.lr_annealing_model(
                stage_stats["loss"]
            )
            lr_whisper, new_lr_whisper = self.hparams.lr_annealing_whisper(
                stage_stats["loss"]
            )
            sb.nnet.schedulers.update_learning_rate(
                self.model_optimizer, new_lr_model
            )
            sb.nnet.schedulers.update_learning_rate(
                self.whisper_optimizer, new_lr_whisper
            )
            self.hparams.train_logger.log_stats(
                stats_meta={
                    "epoch": epoch,
                    "lr_model": lr_model,
                    "lr_whisper": lr_whisper,
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
                p.numel() for p in self.modules.parameters()
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


def character_tokenizer(hparams):
    """A SentencePiece tokenizer of the characters of the transcripts."""
    return SentencePiece(
        model_dir=hparams["save_folder"],
        vocab_size=hparams["output_neurons"],
        annotation_train=hparams["tokenizer_train_csv"],
        annotation_read="wrd",
        model_type=hparams["token_type"],
        character_coverage=hparams["character_coverage"],
    )


def dataio_prepare(hparams, tokenizer):
    """The datasets, with the tokenizer's tokens of each transcript."""
    train_data, valid_data, test_datasets = read_datasets(hparams)
    datasets = [train_data, valid_data, *test_datasets.values()]

    @sb.utils.data_pipeline.takes("wrd")
    @sb.utils.data_pipeline.provides("wrd", "char_list", "tokens")
    def text_pipeline(wrd):
        yield wrd
        yield list(wrd)
        yield torch.LongTensor(tokenizer.sp.encode_as_ids(wrd))

    sb.dataio.dataset.add_dynamic_item(datasets, text_pipeline)
    sb.dataio.dataset.set_output_keys(
        datasets, ["id", "sig", "wrd", "char_list", "tokens"]
    )
    return train_data, valid_data, test_datasets


if __name__ == "__main__":
    main(sys.argv[1:], ASR, character_tokenizer, dataio_prepare)
