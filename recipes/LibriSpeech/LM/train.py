#!/usr/bin/env python3
"""Recipe for training (and pruning) a character Transformer LM.

By default the text comes from the grammar of sb_prune's synthetic speech
corpus (sampled with its own seed, held-out sentences unseen in training);
point ``--lm_text_file`` at LibriSpeech's ``librispeech-lm-norm.txt`` for
real LM text. Tokens are characters of a SentencePiece model, as in the
ASR recipe (``--tokenizer_file`` shares the ASR recipe's model), so the LM
can rescore the ASR recipe's hypotheses. Perplexity is measured per token
(end of sentence included) on the held-out text.

The Brain is an ``sb_prune.PruningBrain``: the hooks listed under
``prune_hooks`` prune during training, and the final (smallest) model is
exported to ``<output_folder>/lm`` (``model.ckpt``, ``structure.json``,
``tokenizer.model``) for the ASR recipe's LM rescoring.

To run this recipe, do the following:
> python train.py hparams/transformer_lm.yaml
> python train.py hparams/transformer_lm_incremental.yaml --criterion=taylor
> python train.py hparams/transformer_lm_one_shot.yaml --criterion=magnitude
> python train.py hparams/transformer_lm_low_rank.yaml

Authors
 * sb_prune developers
"""

import json
import math
import shutil
import sys
import time
from pathlib import Path

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import if_main_process, run_on_main

import sb_prune
from sb_prune.core.saved_model import export_model
from sb_prune.data.lm_text import prepare_lm_text
from sb_prune.data.tokenizer import train_tokenizer
from sb_prune.reporting.summary import count_parameters


def token_nll(log_probs, targets, lengths):
    """Sum of the per-token negative log-likelihoods, and the token count.

    Arguments
    ---------
    log_probs : torch.Tensor
        ``[B, T, vocab]`` log-probabilities.
    targets : torch.Tensor
        ``[B, T]`` token ids.
    lengths : torch.Tensor
        ``[B]`` relative lengths (SpeechBrain convention).

    Returns
    -------
    tuple of float
        ``(sum of -log p, number of tokens)``.
    """
    steps = targets.shape[1]
    counts = torch.round(lengths * steps).long()
    mask = torch.arange(steps, device=targets.device)[None] < counts[:, None]
    picked = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return -(picked * mask).sum().item(), mask.sum().item()


class LM(sb_prune.PruningBrain):
    """Next-character prediction with a TransformerLM."""

    def compute_forward(self, batch, stage):
        """Tokens with a leading <bos> -> next-token log-probabilities."""
        batch = batch.to(self.device)
        tokens_bos, _ = batch.tokens_bos
        return self.hparams.log_softmax(self.modules.model(tokens_bos))

    def compute_objectives(self, predictions, batch, stage):
        """Mean token NLL; exact token sums outside training."""
        tokens_eos, tokens_len = batch.tokens_eos
        loss = self.hparams.compute_cost(
            predictions, tokens_eos, length=tokens_len
        )
        if stage != sb.Stage.TRAIN:
            total, count = token_nll(predictions, tokens_eos, tokens_len)
            self.nll_sum += total
            self.token_count += count
        return loss

    def on_stage_start(self, stage, epoch):
        """Reset the token NLL sums."""
        self.nll_sum, self.token_count = 0.0, 0

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Anneal the learning rate after every optimizer step."""
        if should_step:
            self.hparams.lr_annealing(self.optimizer)

    def on_stage_end(self, stage, stage_loss, epoch):
        """Log perplexities; checkpoint after validation."""
        if stage == sb.Stage.TRAIN:
            self.train_stats = {"loss": stage_loss}
            return
        nll = self.nll_sum / max(self.token_count, 1)
        stats = {"loss": nll, "ppl": math.exp(nll)}
        params = count_parameters(self.modules)
        if stage == sb.Stage.VALID:
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
                meta={"loss": nll, "epoch": epoch},
                min_keys=["loss"],
                num_to_keep=self.hparams.keep_checkpoints,
            )
        else:
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current},
                test_stats=stats,
            )
            self.test_stats = stats


def dataio_prepare(hparams, tokenizer):
    """Build the train, valid and test datasets of the LM text."""
    bos, eos = hparams["bos_index"], hparams["eos_index"]

    @sb.utils.data_pipeline.takes("wrd")
    @sb.utils.data_pipeline.provides("tokens_bos", "tokens_eos")
    def text_pipeline(wrd):
        ids = tokenizer.sp.encode_as_ids(wrd)
        yield torch.LongTensor([bos] + ids)
        yield torch.LongTensor(ids + [eos])

    datasets = {}
    for split in ("train", "valid", "test"):
        data = sb.dataio.dataset.DynamicItemDataset.from_csv(
            csv_path=hparams[f"{split}_csv"]
        )
        if split != "train":
            data = data.filtered_sorted(sort_key="chars")
        datasets[split] = data
    sb.dataio.dataset.add_dynamic_item(list(datasets.values()), text_pipeline)
    sb.dataio.dataset.set_output_keys(
        list(datasets.values()), ["id", "tokens_bos", "tokens_eos"]
    )
    return datasets


def prepare_tokenizer(hparams):
    """Train (or load, or copy from the ASR recipe) the character model."""
    model_file = (
        Path(hparams["save_folder"])
        / f"{hparams['output_neurons']}_{hparams['token_type']}.model"
    )
    if hparams["tokenizer_file"] and not model_file.exists():
        model_file.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(hparams["tokenizer_file"], model_file)
    tokenizer = train_tokenizer(hparams)
    return tokenizer, model_file


def main(argv):
    """Train, evaluate and export the LM; returns the Brain."""
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
        prepare_lm_text,
        kwargs={
            "save_folder": hparams["output_folder"],
            "train_sentences": hparams["train_sentences"],
            "valid_sentences": hparams["valid_sentences"],
            "test_sentences": hparams["test_sentences"],
            "seed": hparams["text_seed"],
            "text_file": hparams["lm_text_file"],
            "exclude_csv": hparams["exclude_csv"],
        },
    )
    tokenizer, tokenizer_file = prepare_tokenizer(hparams)
    datasets = dataio_prepare(hparams, tokenizer)

    lm_brain = LM(
        modules={"model": hparams["model"]},
        opt_class=hparams["model_opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    train_loader = lm_brain.make_dataloader(
        datasets["train"], stage=sb.Stage.TRAIN, **hparams["train_loader"]
    )
    hparams["lr_annealing"].num_training_steps = (
        len(train_loader) * hparams["number_of_epochs"]
    )
    lm_brain.fit(
        hparams["epoch_counter"],
        train_loader,
        datasets["valid"],
        valid_loader_kwargs=hparams["eval_loader"],
    )
    train_seconds = time.time() - start

    results = {"train_seconds": round(train_seconds, 1)}
    for split in ("valid", "test"):
        lm_brain.evaluate(
            datasets[split],
            min_key="loss",
            test_loader_kwargs=hparams["eval_loader"],
        )
        results[f"{split}_ppl"] = lm_brain.test_stats["ppl"]
    model = lm_brain.unwrapped_modules()["model"]
    results["params"] = count_parameters(model)
    results["history"] = [hook.state_dict() for hook in lm_brain.prune_hooks]
    if if_main_process():
        export = export_model(model, hparams["export_folder"])
        shutil.copy(tokenizer_file, Path(export) / "tokenizer.model")
        with open(hparams["results_file"], "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)
    return lm_brain


if __name__ == "__main__":
    main(sys.argv[1:])
