#!/usr/bin/env python3
"""Recipe for training a CTC Conformer on LibriSpeech-format data.

By default it trains on sb_prune's offline synthetic corpus (generated on
first use); point ``--data_folder`` at a LibriSpeech folder for the real
data. The Brain is an ``sb_prune.PruningBrain``, so the pruning hooks listed
in the hparams file under ``prune_hooks`` run between epochs.

To run this recipe, do the following:
> python train.py hparams/conformer_ctc.yaml
> python train.py hparams/conformer_ctc_adaptive_dropout.yaml
> python train.py hparams/conformer_ctc_i3d_local.yaml

Authors
 * sb_prune developers
"""

import json
import logging
import sys
import time
from pathlib import Path

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import if_main_process, run_on_main

import sb_prune
from sb_prune.data import synthesize_corpus
from sb_prune.data.librispeech import prepare_librispeech
from sb_prune.data.tokenizer import train_tokenizer
from sb_prune.deploy.pretrained import initialize_from
from sb_prune.methods.i3d.gates import GateRecorder
from sb_prune.reporting.summary import write_recipe_summary

logger = logging.getLogger(__name__)


class ASR(sb_prune.PruningBrain):
    """CTC Conformer with greedy decoding for validation and test."""

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


def dataio_prepare(hparams, tokenizer):
    """Build the train, valid and test datasets of the CSV manifests."""
    data_folder = hparams["data_folder"]

    def load(csv_path, sort):
        data = sb.dataio.dataset.DynamicItemDataset.from_csv(
            csv_path=csv_path, replacements={"data_root": data_folder}
        )
        return data.filtered_sorted(sort_key="duration") if sort else data

    train = load(hparams["train_csv"], hparams["sorting"] == "ascending")
    valid = load(hparams["valid_csv"], True)
    tests = {Path(p).stem: load(p, True) for p in hparams["test_csv"]}

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        try:
            return sb.dataio.dataio.read_audio(wav)
        except Exception as error:
            raise RuntimeError(
                f"Cannot read audio file {wav}: {error}"
            ) from error

    @sb.utils.data_pipeline.takes("wrd")
    @sb.utils.data_pipeline.provides("wrd", "tokens")
    def text_pipeline(wrd):
        yield wrd
        yield torch.LongTensor(tokenizer.sp.encode_as_ids(wrd))

    datasets = [train, valid, *tests.values()]
    sb.dataio.dataset.add_dynamic_item(datasets, audio_pipeline)
    sb.dataio.dataset.add_dynamic_item(datasets, text_pipeline)
    sb.dataio.dataset.set_output_keys(datasets, ["id", "sig", "wrd", "tokens"])
    return train, valid, tests


def prepare_data(hparams):
    """Write the CSV manifests (synthesising the default corpus first)."""
    data_folder = Path(hparams["data_folder"]).resolve()
    synthetic = Path(hparams["synthetic_folder"]).resolve() / "LibriSpeech"
    if data_folder == synthetic:
        run_on_main(
            synthesize_corpus,
            kwargs={
                "out_dir": hparams["synthetic_folder"],
                **hparams["synthetic_corpus"],
            },
        )
    run_on_main(
        prepare_librispeech,
        kwargs={
            "data_folder": hparams["data_folder"],
            "save_folder": hparams["output_folder"],
            "tr_splits": hparams["train_splits"],
            "dev_splits": hparams["dev_splits"],
            "te_splits": hparams["test_splits"],
            "merge_lst": hparams["train_splits"],
            "merge_name": "train.csv",
            "skip_prep": hparams["skip_prep"],
        },
    )


def main(argv):
    """Train, then evaluate on every test split; returns the Brain."""
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


if __name__ == "__main__":
    main(sys.argv[1:])
