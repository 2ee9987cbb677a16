#!/usr/bin/env python3
"""Federated CTC Conformer with importance-targeted federated dropout.

1. The server trains a seed model centrally on its own speakers
   (``server_speakers``) and measures which of its modules are ambient:
   each FFN and attention module is reset to its initial weights and the
   validation WER increase is its score (or the scores come from an
   ``ambient.py`` report, ``importance_file``).
2. The other training speakers are the clients (one per speaker). From
   the seed model, Flower runs ``num_rounds`` rounds of federated
   training (``clients_per_round`` clients, ``local_epochs`` each) for
   every strategy of ``strategies``:

   * ``none``: clients train the full model (FedAvg);
   * ``uniform``: federated dropout, the same rate in every FFN and
     attention module;
   * ``importance``: federated dropout targeted at the most ambient
     modules first, at the same client size (``client_size``).

   Clients receive physically smaller sub-models (sb_prune surgery) and
   the server merges their updates element by element (see
   :mod:`sb_prune.federated`). The ServerApp and ClientApp are Flower's;
   they run in this process (Flower's simulation engine needs Ray).
3. Writes ``results.json`` (rows of strategy, client_params,
   bytes_per_round, wer...) and prints the comparison table.

To run this recipe, do the following:
> python federated.py hparams/federated_dropout.yaml
> python federated.py hparams/federated_dropout.yaml --num_rounds=20

Authors
 * sb_prune developers
"""

import copy
import json
import logging
import sys
import time
from pathlib import Path

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.epoch_loop import EpochCounter

from sb_prune.analysis import BrainEvaluator
from sb_prune.analysis.importance.units import snapshot
from sb_prune.asr.brain import ASR
from sb_prune.asr.data import dataio_prepare, prepare_data
from sb_prune.core.atomic import write_file
from sb_prune.data.tokenizer import train_tokenizer
from sb_prune.federated import (
    DropoutPolicy,
    FederatedDropout,
    load_parameter_record,
    make_client_app,
    make_server_app,
    parameter_record,
    run_inprocess,
)
from sb_prune.federated.dropout import read_scores, scores_from_report
from sb_prune.federated.partition import partition_by_speaker, speaker_of
from sb_prune.reporting.summary import count_parameters

logger = logging.getLogger(__name__)


class ConstantLR:
    """Stands in for the recipe's scheduler: the client LR stays fixed."""

    def __call__(self, optimizer):
        """Leave the learning rate as it is."""


class Federation:
    """The data, the models and the Brains of one federated experiment."""

    def __init__(self, hparams, run_opts):
        self.hparams = hparams
        self.run_opts = {**run_opts, "noprogressbar": True}
        prepare_data(hparams)
        self.tokenizer = train_tokenizer(hparams)
        train, self.valid, tests = dataio_prepare(hparams, self.tokenizer)
        self.test = next(iter(tests.values()))
        speakers = {
            uid: speaker_of(row["spk_id"]) for uid, row in train.data.items()
        }
        names = sorted(set(speakers.values()))
        server = names[: hparams["server_speakers"]]
        if len(server) == len(names):
            raise ValueError(
                f"server_speakers ({hparams['server_speakers']}) leaves no "
                f"client: the corpus has {len(names)} training speakers"
            )
        self.server_set = self._subset(
            train, [u for u, s in speakers.items() if s in server]
        )
        self.clients = partition_by_speaker(
            speakers, hparams["speakers_per_client"], exclude=server
        )
        self.client_sets = [self._subset(train, c["ids"]) for c in self.clients]
        self.model = hparams["model"]
        self.template = copy.deepcopy(self.model)

    @staticmethod
    def _subset(dataset, ids):
        wanted = set(ids)
        return dataset.filtered_sorted(key_test={"id": wanted.__contains__})

    def brain(self, model, opt_class=None, epochs=1, hparams=None):
        """An ASR Brain around ``model`` (a [CNN, Transformer, ctc_lin])."""
        modules = {
            "CNN": model[0],
            "Transformer": model[1],
            "ctc_lin": model[2],
            "normalize": self.hparams["normalize"],
        }
        brain = ASR(
            modules=modules,
            opt_class=opt_class or self.hparams["model_opt_class"],
            hparams={
                **self.hparams,
                "epoch_counter": EpochCounter(epochs),
                **(hparams or {}),
            },
            run_opts=self.run_opts,
        )
        brain.tokenizer = self.tokenizer
        return brain

    def evaluator(self, brain, dataset, batches):
        """Mean loss, WER and CER of ``brain`` on ``dataset``."""
        return BrainEvaluator(
            brain,
            dataset,
            loader_kwargs=self.hparams["valid_dataloader_opts"],
            max_batches=batches,
        )

    def train_seed(self):
        """Train the seed model on the server's speakers (or reload it)."""
        folder = Path(self.hparams["save_folder"])
        folder.mkdir(parents=True, exist_ok=True)
        seed_file, init_file = folder / "seed_model.pt", folder / "seed_init.pt"
        if init_file.exists():
            initial = torch.load(init_file)
        else:
            # A copy: state_dict() tensors are the live parameters, which
            # the seed training below would change.
            initial = {
                k: v.detach().clone()
                for k, v in self.model.state_dict().items()
            }
            write_file(init_file, lambda tmp: torch.save(initial, tmp))
        if seed_file.exists():
            self.model.load_state_dict(torch.load(seed_file))
            return initial
        epochs = self.hparams["seed_epochs"]
        brain = self.brain(self.model, epochs=epochs)
        loader_opts = self.hparams["train_dataloader_opts"]
        steps = -(-len(self.server_set) // loader_opts["batch_size"])
        self.hparams["lr_annealing"].num_training_steps = steps * epochs
        brain.fit(
            brain.hparams.epoch_counter,
            self.server_set,
            train_loader_kwargs=loader_opts,
        )
        state = self.model.state_dict()
        write_file(seed_file, lambda tmp: torch.save(state, tmp))
        return initial

    def importance_scores(self, initial):
        """Per-module scores: WER increase when reset to theta_0."""
        path = self.hparams.get("importance_file")
        if path:
            return read_scores(path), None
        importance = self.hparams["importance"]
        theta0 = copy.deepcopy(self.model)
        theta0.load_state_dict(initial)
        units = importance.units(self.model)
        references = {"init": snapshot(theta0, units)}
        brain = self.brain(self.model)
        evaluate = self.evaluator(
            brain, self.valid, self.hparams["eval_batches"]
        )
        report = importance.run(self.model, evaluate, references)
        return scores_from_report(report), report

    def train_fn(self, model, partition, config):
        """ClientApp training: local epochs on the client's speaker."""
        dataset = self.client_sets[partition]
        if len(dataset) == 0:
            raise ValueError(f"client {partition} has no training data")
        epochs = int(config.get("local-epochs", 1))
        brain = self.brain(
            model,
            opt_class=self.hparams["client_opt_class"],
            epochs=epochs,
            hparams={"lr_annealing": ConstantLR()},
        )
        brain.fit(
            brain.hparams.epoch_counter,
            dataset,
            train_loader_kwargs=self.hparams["train_dataloader_opts"],
        )
        return len(dataset), {"train_loss": brain.train_stats["loss"]}

    def build_model(self):
        """A fresh full model for a ClientApp (weights are received)."""
        return copy.deepcopy(self.template)

    def run_strategy(self, mode, scores, seed_state):
        """Federated training from the seed model with one policy."""
        hp = self.hparams
        # The same random numbers for every strategy, whatever ran before
        # (a seed model trained now or reloaded after an interruption).
        sb.utils.seed_everything(hp["seed"], verbose=False)
        policy = DropoutPolicy(
            mode,
            client_size=hp["client_size"],
            importance=scores,
            max_rate=hp["max_rate"],
            dropped_units=hp["dropped_units"],
            seed=hp["seed"],
            compensate=hp["compensate"],
        )
        server_model = self.build_model()
        server_model.load_state_dict(seed_state)
        strategy = FederatedDropout(
            server_model,
            policy,
            clients_per_round=hp["clients_per_round"],
            seed=hp["seed"],
        )
        eval_model = self.build_model()
        evaluate = self.evaluator(
            self.brain(eval_model), self.valid, hp["eval_batches"]
        )
        history = {}

        def evaluate_fn(server_round, arrays):
            every = hp["eval_every"]
            if not every or server_round == 0 or server_round % every:
                return None
            load_parameter_record(eval_model, arrays)
            history[server_round] = evaluate()
            return None

        app = make_server_app(
            strategy,
            parameter_record(server_model),
            hp["num_rounds"],
            train_config={"local-epochs": hp["local_epochs"]},
            evaluate_fn=evaluate_fn,
        )
        client_app = make_client_app(self.build_model, self.train_fn)
        start = time.time()
        context, grid = run_inprocess(app, client_app, len(self.clients))
        minutes = (time.time() - start) / 60
        load_parameter_record(eval_model, context.state["arrays"])
        test = self.evaluator(self.brain(eval_model), self.test, None)()
        sizes = [s for r in strategy.history for s in r["client_params"]]
        rounds = len(grid.traffic)
        down = sum(t["down"] for t in grid.traffic) / rounds
        up = sum(t["up"] for t in grid.traffic) / rounds
        full = count_parameters(server_model)
        return {
            "strategy": mode,
            "compensate": policy.compensate,
            "client_params": round(sum(sizes) / len(sizes)),
            "client_params_fraction": sum(sizes) / len(sizes) / full,
            "bytes_per_round": round(down + up),
            "bytes_down_per_round": round(down),
            "bytes_up_per_round": round(up),
            "wer": test["WER"],
            "cer": test["CER"],
            "dev_wer": {r: m["WER"] for r, m in history.items()},
            "rates": policy.rates,
            "coverage": [r.get("coverage") for r in strategy.history],
            "minutes": minutes,
        }


def format_table(rows, full_params):
    """Render the comparison as a Markdown table.

    Arguments
    ---------
    rows : list of dict
        From :meth:`Federation.run_strategy`.
    full_params : int
        Parameters of the full model.

    Returns
    -------
    str
        The table.

    Example
    -------
    >>> print(format_table([{"strategy": "none", "client_params": 100,
    ...     "bytes_per_round": 2048, "wer": 12.345, "cer": 3.0}], 100))
    | strategy | client params | vs full | MB per round | test WER | test CER |
    |---|---|---|---|---|---|
    | none | 100 | +0.0% | 0.002 | 12.35 | 3.00 |
    """
    lines = [
        "| strategy | client params | vs full | MB per round | test WER "
        "| test CER |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        change = row["client_params"] / full_params - 1
        lines.append(
            f"| {row['strategy']} | {row['client_params']:,} | {change:+.1%} "
            f"| {row['bytes_per_round'] / 2**20:.3f} | {row['wer']:.2f} "
            f"| {row['cer']:.2f} |"
        )
    return "\n".join(lines)


def main(argv):
    """Run the experiment; return the results written to results.json."""
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    logging.getLogger("flwr").setLevel(logging.WARNING)
    federation = Federation(hparams, run_opts)
    start = time.time()
    initial = federation.train_seed()
    seed_state = copy.deepcopy(federation.model.state_dict())
    seed_eval = federation.evaluator(
        federation.brain(federation.model), federation.test, None
    )()
    scores, report = federation.importance_scores(initial)
    rows = [
        federation.run_strategy(mode, scores, seed_state)
        for mode in hparams["strategies"]
    ]
    full = count_parameters(federation.model)
    table = format_table(rows, full)
    results = {
        "full_params": full,
        "clients": len(federation.clients),
        "rounds": hparams["num_rounds"],
        "seed_model": {"wer": seed_eval["WER"], "cer": seed_eval["CER"]},
        "importance_scores": dict(scores),
        "importance_report": report,
        "rows": rows,
        "minutes": (time.time() - start) / 60,
    }
    with open(hparams["results_file"], "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1)
    (Path(hparams["output_folder"]) / "results.md").write_text(table + "\n")
    print(f"seed model test WER {seed_eval['WER']:.2f}\n{table}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
