#!/usr/bin/env python3
"""Recipe for fine-tuning and compressing a pretrained Whisper on real speech.

The whole Whisper (encoder and decoder) is fine-tuned, on the transcripts
with the negative log-likelihood of its own decoder (teacher forcing;
weighted by ``label_weight``, 0 by default), while the ``prune_hooks`` of
the hparams file compress it: a frozen copy of the dense model (the
teacher) is distilled into it
(``sb_prune.hooks.Distillation``: hidden states of every layer and the
output distribution), and ``CriterionPruning`` hooks remove encoder and
decoder FFN units, heads or decoder layers in many small steps
(``sb_prune.schedules.Gradual``). With the sparsities at 0 and
``label_weight`` 1 the same recipe fine-tunes the dense model with the
same budget (the baseline). With ``freeze_decoder`` only the encoder
learns (the decoder's NLL still reaches it, through the frozen decoder).

Whisper reads 30 s windows whatever the utterance's length, so training
windows pack consecutive utterances of a chapter
(``sb_prune.data.packing.pack_utterances``; sentences written as Whisper
writes them, in sentence case with a final period); validation and test
utterances are decoded one by one (greedy, SpeechBrain's
``S2SWhisperGreedySearcher``). After training, the dev and test sets are
decoded with the checkpoint of the final structure that has the lowest
validation loss; ``results.json`` holds their WER, the parameters of the
encoder and decoder, and the budget (utterance-steps and CPU minutes), and
the model is exported for ``speechbrain.inference.ASR.WhisperASR``.

To run this recipe (real LibriSpeech-format speech; Whisper as a Hugging
Face folder or a CTranslate2 one, such as faster-whisper's):
> python train.py hparams/whisper_prune.yaml
      --data_folder ../shared/data/librilight --whisper_source <folder>

Authors
 * sb_prune developers
"""

import json
import sys
import time
from pathlib import Path

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import if_main_process, run_on_main

import sb_prune
from sb_prune.data.packing import SEPARATOR, pack_utterances
from sb_prune.data.real_speech import plain_words, prepare_librispeech_trees
from sb_prune.deploy.whisper import export_whisper


class ASR(sb_prune.PruningBrain):
    """Whisper fine-tuned on its decoder's NLL; greedy decoding to test."""

    def compute_forward(self, batch, stage):
        """Encoder states, decoder log-probabilities, test hypotheses."""
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        bos, _ = batch.tokens_bos
        enc_out, logits, _ = self.modules.whisper(wavs, bos)
        log_probs = torch.log_softmax(logits, dim=-1)
        hyps = None
        if stage == sb.Stage.TEST:
            hyps, _, _, _ = self.hparams.searcher(enc_out.detach(), wav_lens)
        return log_probs, hyps

    def compute_objectives(self, predictions, batch, stage):
        """NLL of the transcripts; WER of the hypotheses in test."""
        log_probs, hyps = predictions
        eos, eos_lens = batch.tokens_eos
        loss = sb.nnet.losses.nll_loss(log_probs, eos, length=eos_lens)
        if stage == sb.Stage.TRAIN:
            # label_weight 0: the student learns from the teacher alone
            # (the Distillation hook's terms ride on the logits' gradient).
            loss = self.hparams.label_weight * loss
        if stage == sb.Stage.TEST:
            tokenizer = self.modules.whisper.tokenizer
            words = [
                plain_words(tokenizer.decode(h, skip_special_tokens=True))
                for h in hyps
            ]
            targets = [plain_words(w) for w in batch.wrd]
            self.wer_metric.append(batch.id, words, targets)
        return loss

    def on_fit_start(self):
        """Recover, then start the training clock where the run left it."""
        super().on_fit_start()
        newest = self.checkpointer.find_checkpoint()
        meta = newest.meta if newest else {}
        self.seconds_before = meta.get("train_seconds", 0.0)
        self.fit_started = time.time()

    def train_seconds(self):
        """Seconds of training of the whole run, resumed parts included."""
        return self.seconds_before + time.time() - self.fit_started

    def on_stage_start(self, stage, epoch):
        """A WER metric for the test stage."""
        if stage == sb.Stage.TEST:
            self.wer_metric = self.hparams.error_rate_computer()

    def on_stage_end(self, stage, stage_loss, epoch):
        """Log, checkpoint on validation loss, keep the test WER."""
        if stage == sb.Stage.TRAIN:
            self.train_loss = stage_loss
        elif stage == sb.Stage.VALID:
            self.hparams.train_logger.log_stats(
                stats_meta={
                    "epoch": epoch,
                    "encoder_params": parameters(self, "encoder"),
                    "decoder_params": parameters(self, "decoder"),
                },
                train_stats={"loss": self.train_loss},
                valid_stats={"loss": stage_loss},
            )
            self.checkpointer.save_and_keep_only(
                meta={
                    "loss": stage_loss,
                    "train_seconds": self.train_seconds(),
                },
                min_keys=["loss"],
            )
        else:
            self.wer = self.wer_metric.summarize("error_rate")
            self.hparams.train_logger.log_stats(
                stats_meta={"set": self.test_set},
                test_stats={"loss": stage_loss, "WER": self.wer},
            )
            if if_main_process():
                path = Path(self.hparams.output_folder) / f"wer_{self.test_set}"
                with open(f"{path}.txt", "w", encoding="utf-8") as handle:
                    self.wer_metric.write_stats(handle)


def parameters(brain, part):
    """Parameters of the student's encoder or decoder."""
    model = brain.unwrapped_modules()["whisper"].model
    return sum(p.numel() for p in getattr(model, part).parameters())


def sentences(text):
    """LibriSpeech transcripts as Whisper writes them: ``Word word.``."""
    return " ".join(
        part.strip().lower().capitalize() + "."
        for part in text.split(SEPARATOR)
    )


def dataio_prepare(hparams):
    """Packed training windows; dev and test utterances one by one."""
    tokenizer = hparams["whisper"].tokenizer
    prefix = list(tokenizer.prefix_tokens)
    eos = tokenizer.eos_token_id
    gap = torch.zeros(int(hparams["pack_gap"] * hparams["sample_rate"]))

    @sb.utils.data_pipeline.takes("wavs")
    @sb.utils.data_pipeline.provides("sig")
    def window_pipeline(wavs):
        parts = []
        for path in wavs.split(SEPARATOR):
            parts += [sb.dataio.dataio.read_audio(path), gap]
        return torch.cat(parts[:-1])

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        return sb.dataio.dataio.read_audio(wav)

    @sb.utils.data_pipeline.takes("wrd")
    @sb.utils.data_pipeline.provides("wrd", "tokens_bos", "tokens_eos")
    def text_pipeline(wrd):
        yield wrd
        tokens = tokenizer.encode(
            " " + sentences(wrd), add_special_tokens=False
        )
        yield torch.LongTensor(prefix + tokens)
        yield torch.LongTensor(prefix[1:] + tokens + [eos])

    save = Path(hparams["output_folder"])
    replacements = {"data_root": hparams["data_folder"]}
    sets = {}
    for name, csv_name in (
        ("train", "train_packed"),
        ("dev", "dev"),
        ("test", "test"),
    ):
        data = sb.dataio.dataset.DynamicItemDataset.from_csv(
            csv_path=save / f"{csv_name}.csv", replacements=replacements
        )
        data = data.filtered_sorted(select_n=hparams[f"{name}_windows"])
        audio = window_pipeline if name == "train" else audio_pipeline
        sb.dataio.dataset.add_dynamic_item([data], audio)
        sb.dataio.dataset.add_dynamic_item([data], text_pipeline)
        sb.dataio.dataset.set_output_keys(
            [data], ["id", "sig", "wrd", "tokens_bos", "tokens_eos"]
        )
        sets[name] = data
    return sets


def prepare(hparams):
    """The speaker split of the speech, and the packed training windows."""
    save = Path(hparams["output_folder"])
    prepare_librispeech_trees(hparams["data_folder"], save)
    return pack_utterances(
        save / "train.csv",
        save / "train_packed.csv",
        window=hparams["pack_window"],
        gap=hparams["pack_gap"],
    )


def main(argv):
    """Fine-tune (and compress), decode dev and test, export."""
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    sb.utils.distributed.ddp_init_group(run_opts)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    run_on_main(prepare, args=[hparams])
    sets = dataio_prepare(hparams)
    if hparams["freeze_decoder"]:  # the encoder learns for a fixed decoder
        hparams["whisper"].model.decoder.requires_grad_(False)
    brain = ASR(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.fit(
        hparams["epoch_counter"],
        sets["train"],
        sets["dev"],
        train_loader_kwargs=hparams["train_dataloader_opts"],
        valid_loader_kwargs=hparams["valid_dataloader_opts"],
    )
    train_minutes = brain.train_seconds() / 60
    wers = {}
    for name in ("dev", "test"):
        brain.test_set = name
        brain.evaluate(
            sets[name],
            min_key="loss",
            test_loader_kwargs=hparams["test_dataloader_opts"],
        )
        wers[name] = round(brain.wer, 2)
    if if_main_process():
        exported = export_whisper(
            brain.unwrapped_modules()["whisper"],
            hparams["whisper_folder"],
            hparams["export_folder"],
        )
        train = sets["train"]
        utterances = sum(
            int(train.data[i]["utterances"]) for i in train.data_ids
        )
        results = {
            "WER": wers["test"],
            "valid_WER": wers["dev"],
            "encoder_params": exported["encoder_params"],
            "decoder_params": exported["decoder_params"],
            "epochs": hparams["number_of_epochs"],
            "budget": {
                "utterance_steps": utterances * hparams["number_of_epochs"],
                "cpu_minutes": round(
                    train_minutes * torch.get_num_threads(), 1
                ),
                "train_windows": len(sets["train"]),
                "threads": torch.get_num_threads(),
            },
            "test_utterances": len(sets["test"]),
            "export_folder": exported["folder"],
        }
        with open(hparams["results_file"], "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)
    return brain


if __name__ == "__main__":
    main(sys.argv[1:])
