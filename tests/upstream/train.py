#!/usr/bin/env python3
"""A CTC ASR recipe in the style of SpeechBrain's upstream LibriSpeech one.

Test material for sb_prune (see README.md): the Brain, data pipeline and
``on_evaluate_start`` (average the best checkpoints, load them strictly)
have the shape a user's copy of the upstream recipe has. The sb_prune tests
change one line, the base class, by setting ``SB_PRUNE_BRAIN=1``; hparams
with ``frontend_opt_class`` train the CNN front end with its own optimizer,
as SpeechBrain's SSL recipes train wav2vec2 with a second one.

Usage: python train.py hparams/ctc_conformer.yaml --data_folder=... \
    --output_folder=...
"""

import os
import sys

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.tokenizers.SentencePiece import SentencePiece
from speechbrain.utils.distributed import if_main_process, run_on_main

from sb_prune.data.librispeech import prepare_librispeech

if os.environ.get("SB_PRUNE_BRAIN") == "1":
    import sb_prune

    Base = sb_prune.PruningBrain  # the README's one-line change
else:
    Base = sb.Brain


class ASR(Base):
    def compute_forward(self, batch, stage):
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        feats = self.hparams.compute_features(wavs)
        feats = self.modules.normalize(feats, wav_lens)
        src = self.modules.CNN(feats)
        enc_out, _ = self.modules.Transformer(src, tgt=None, wav_len=wav_lens)
        logits = self.modules.ctc_lin(enc_out)
        p_ctc = self.hparams.log_softmax(logits)
        p_tokens = None
        if stage != sb.Stage.TRAIN:
            p_tokens = sb.decoders.ctc_greedy_decode(
                p_ctc, wav_lens, blank_id=self.hparams.blank_index
            )
        return p_ctc, wav_lens, p_tokens

    def compute_objectives(self, predictions, batch, stage):
        p_ctc, wav_lens, predicted_tokens = predictions
        tokens, tokens_lens = batch.tokens
        loss = self.hparams.ctc_cost(p_ctc, tokens, wav_lens, tokens_lens)
        if stage != sb.Stage.TRAIN:
            predicted_words = self.tokenizer(
                predicted_tokens, task="decode_from_list"
            )
            target_words = [wrd.split(" ") for wrd in batch.wrd]
            self.wer_metric.append(batch.id, predicted_words, target_words)
            self.cer_metric.append(batch.id, predicted_words, target_words)
        return loss

    def init_optimizers(self):
        if "frontend_opt_class" not in self.hparams.__dict__:
            return super().init_optimizers()
        cnn = list(self.modules.CNN.parameters())
        others = [
            p
            for name, module in self.modules.items()
            if name != "CNN"
            for p in module.parameters()
        ]
        self.model_optimizer = self.hparams.model_opt_class(others)
        self.frontend_optimizer = self.hparams.frontend_opt_class(cnn)
        self.optimizers_dict = {
            "model_optimizer": self.model_optimizer,
            "frontend_optimizer": self.frontend_optimizer,
        }
        self.checkpointer.add_recoverable("modelopt", self.model_optimizer)
        self.checkpointer.add_recoverable(
            "frontendopt", self.frontend_optimizer
        )

    def on_evaluate_start(self, max_key=None, min_key=None):
        """Average the best checkpoints and load the average (upstream)."""
        super().on_evaluate_start()
        ckpts = self.checkpointer.find_checkpoints(
            max_key=max_key, min_key=min_key
        )
        ckpt = sb.utils.checkpoints.average_checkpoints(
            ckpts, recoverable_name="model"
        )
        self.hparams.model.load_state_dict(ckpt, strict=True)
        self.hparams.model.eval()
        self.evaluated_params = sum(
            p.numel() for p in self.hparams.model.parameters()
        )

    def on_stage_start(self, stage, epoch):
        if stage != sb.Stage.TRAIN:
            self.cer_metric = self.hparams.cer_computer()
            self.wer_metric = self.hparams.wer_computer()

    def on_stage_end(self, stage, stage_loss, epoch):
        stage_stats = {"loss": stage_loss}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stage_stats
        else:
            stage_stats["CER"] = self.cer_metric.summarize("error_rate")
            stage_stats["WER"] = self.wer_metric.summarize("error_rate")
        if stage == sb.Stage.VALID:
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "steps": self.optimizer_step},
                train_stats=self.train_stats,
                valid_stats=stage_stats,
            )
            self.checkpointer.save_and_keep_only(
                meta={"WER": stage_stats["WER"], "epoch": epoch},
                min_keys=["WER"],
                num_to_keep=self.hparams.avg_checkpoints,
            )
        elif stage == sb.Stage.TEST:
            stage_stats["params"] = self.evaluated_params
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current},
                test_stats=stage_stats,
            )
            if if_main_process():
                with open(self.hparams.wer_file, "w", encoding="utf-8") as w:
                    self.wer_metric.write_stats(w)

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        if should_step:
            self.hparams.noam_annealing(self.optimizer_for_schedule())

    def optimizer_for_schedule(self):
        return getattr(self, "model_optimizer", None) or self.optimizer


def dataio_prepare(hparams, tokenizer):
    data_folder = hparams["data_folder"]
    train_data = sb.dataio.dataset.DynamicItemDataset.from_csv(
        csv_path=hparams["train_csv"], replacements={"data_root": data_folder}
    ).filtered_sorted(sort_key="duration")
    valid_data = sb.dataio.dataset.DynamicItemDataset.from_csv(
        csv_path=hparams["valid_csv"], replacements={"data_root": data_folder}
    ).filtered_sorted(sort_key="duration")
    test_datasets = {}
    for csv_file in hparams["test_csv"]:
        name = os.path.splitext(os.path.basename(csv_file))[0]
        test_datasets[name] = sb.dataio.dataset.DynamicItemDataset.from_csv(
            csv_path=csv_file, replacements={"data_root": data_folder}
        ).filtered_sorted(sort_key="duration")
    datasets = [train_data, valid_data] + list(test_datasets.values())

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        return sb.dataio.dataio.read_audio(wav)

    @sb.utils.data_pipeline.takes("wrd")
    @sb.utils.data_pipeline.provides("wrd", "tokens_list", "tokens")
    def text_pipeline(wrd):
        yield wrd
        tokens_list = tokenizer.sp.encode_as_ids(wrd)
        yield tokens_list
        yield torch.LongTensor(tokens_list)

    sb.dataio.dataset.add_dynamic_item(datasets, audio_pipeline)
    sb.dataio.dataset.add_dynamic_item(datasets, text_pipeline)
    sb.dataio.dataset.set_output_keys(datasets, ["id", "sig", "wrd", "tokens"])
    return train_data, valid_data, test_datasets


def main(argv, brain_class, add_items=None):
    """Prepare the data, train, then test each test set (upstream's steps).

    ``add_items(datasets, tokenizer, hparams)``, if given, adds the dynamic
    items a recipe needs beyond ``sig``, ``wrd`` and ``tokens``.
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
    if add_items is not None:
        datasets = [train_data, valid_data, *test_datasets.values()]
        add_items(datasets, tokenizer, hparams)
    asr_brain = brain_class(
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


if __name__ == "__main__":
    main(sys.argv[1:], ASR)
