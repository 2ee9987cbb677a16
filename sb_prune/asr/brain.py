"""The Brain of the CTC Conformer ASR recipe.

Authors
 * sb_prune developers
"""

import speechbrain as sb
from speechbrain.utils.distributed import if_main_process

from sb_prune.training.brain import PruningBrain


class ASR(PruningBrain):
    """CTC Conformer with greedy decoding for validation and test.

    The hparams are those of ``recipes/LibriSpeech/ASR/hparams``: modules
    ``CNN`` (the frame-stacking front end), ``Transformer`` (encoder only),
    ``ctc_lin`` and ``normalize``; set ``tokenizer`` (a SentencePiece
    model) before evaluating.
    """

    def compute_forward(self, batch, stage):
        """Features -> frame-stacking front end -> Conformer -> CTC."""
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        feats = self.hparams.compute_features(wavs)
        epoch = self.hparams.epoch_counter.current
        feats = self.modules.normalize(feats, wav_lens, epoch=epoch)
        if stage == sb.Stage.TRAIN and hasattr(self.hparams, "fea_augment"):
            feats = self.hparams.fea_augment(feats)
        src = self.modules.CNN(feats)
        enc_out, _ = self.modules.Transformer(src, tgt=None, wav_len=wav_lens)
        logits = self.modules.ctc_lin(enc_out)
        return self.hparams.log_softmax(logits), wav_lens

    def compute_objectives(self, predictions, batch, stage):
        """CTC loss; error rates of greedy decoding outside training."""
        p_ctc, wav_lens = predictions
        tokens, tokens_lens = batch.tokens
        loss = self.hparams.ctc_cost(p_ctc, tokens, wav_lens, tokens_lens)
        if stage != sb.Stage.TRAIN:
            hyps = sb.decoders.ctc_greedy_decode(
                p_ctc, wav_lens, blank_id=self.hparams.blank_index
            )
            decode = self.tokenizer.sp.decode_ids
            # Output units beyond the tokenizer's vocabulary (output_neurons
            # may be larger) decode to nothing: a damaged or barely trained
            # model may emit them (sb_prune layer-importance tests do).
            vocab = self.tokenizer.sp.vocab_size()
            predicted = [
                decode([i for i in h if i < vocab]).split(" ") for h in hyps
            ]
            # sb_prune LM rescoring (hparams/conformer_ctc_lm_rescoring.yaml):
            # at test time, n-best CTC beam search rescored by an LM.
            rescorer = getattr(self.hparams, "lm_rescorer", None)
            if stage == sb.Stage.TEST and rescorer is not None:
                predicted = rescorer(p_ctc, wav_lens, self.tokenizer)
            target = [words.split(" ") for words in batch.wrd]
            self.wer_metric.append(batch.id, predicted, target)
            self.cer_metric.append(batch.id, predicted, target)
        return loss

    def on_stage_start(self, stage, epoch):
        """Create the error-rate trackers of validation and test."""
        if stage != sb.Stage.TRAIN:
            self.cer_metric = self.hparams.cer_computer()
            self.wer_metric = self.hparams.wer_computer()

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Anneal the learning rate after every optimizer step."""
        if should_step:
            self.hparams.lr_annealing(self.optimizer)

    def on_stage_end(self, stage, stage_loss, epoch):
        """Log, checkpoint after validation, write WER files after test."""
        stats = {"loss": stage_loss}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            return
        stats["CER"] = self.cer_metric.summarize("error_rate")
        stats["WER"] = self.wer_metric.summarize("error_rate")
        if stage == sb.Stage.VALID:
            params = sum(p.numel() for p in self.modules.parameters())
            self.hparams.train_logger.log_stats(
                stats_meta={
                    "epoch": epoch,
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "params": params,
                },
                train_stats=self.train_stats,
                valid_stats=stats,
            )
            self.checkpointer.save_and_keep_only(
                meta={"WER": stats["WER"], "epoch": epoch},
                min_keys=["WER"],
                num_to_keep=self.hparams.avg_checkpoints,
            )
        else:
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current},
                test_stats=stats,
            )
            self.test_stats = stats
            if if_main_process():
                with open(self.hparams.wer_file, "w", encoding="utf-8") as w:
                    self.wer_metric.write_stats(w)

    def on_evaluate_start(self, max_key=None, min_key=None):
        """Load the best checkpoint, then average the best ones.

        PruningBrain lets evaluation see only the checkpoints of the final
        structure, so this tests (and averages) the pruned model.
        """
        super().on_evaluate_start(max_key=max_key, min_key=min_key)
        checkpoints = self.checkpointer.find_checkpoints(
            max_key=max_key,
            min_key=min_key,
            max_num_checkpoints=self.hparams.avg_checkpoints,
        )
        if len(checkpoints) > 1:
            state = sb.utils.checkpoints.average_checkpoints(
                checkpoints, recoverable_name="model"
            )
            self.hparams.model.load_state_dict(state, strict=True)
        self.averaged_checkpoints = len(checkpoints)
        # Model selection reads the validation set, never the test set.
        self.valid_wer = min(
            (ckpt.meta["WER"] for ckpt in checkpoints), default=None
        )
