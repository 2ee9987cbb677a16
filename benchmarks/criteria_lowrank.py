"""Benchmark pruning criteria x schedules, and incremental low rank.

Emili et al. (2023) compare pruning criteria (magnitude vs data-driven),
schedules (one-shot vs incremental) and an incremental low-rank
approximation on Transformer LMs for ASR. This benchmark measures the same
grid on two models, each trained dense once in this run and then compressed
from that dense model by every method with the same fine-tuning budget:

* ``lm``: a character Transformer LM (the LM recipe's architecture) on the
  synthetic grammar's text; quality = perplexity per character on held-out
  sentences;
* ``asr``: a CTC Conformer encoder on the synthetic speech corpus;
  quality = WER of greedy decoding on its test speakers.

Rows (``rows`` in the JSON): the dense model fine-tuned for the same
budget, and the dense model with prunable attention (conversion only);
``{magnitude, taylor, activation} x {one_shot, incremental}`` at each target
sparsity of the FFN hidden units and attention heads (structured:
physically removed); low rank of the FFN layers and attention projections,
``incremental`` (ONE run whose exported stages deliver every target) and
``one_shot`` (one run per target); unstructured magnitude masks at the
middle target (``weights``: zeros in dense tensors, reported honestly: no
speed-up). ``params`` counts the model's parameters (non-zero ones for
masks). ``latency_ratio`` = CPU forward time / the dense model's, both
timed in alternation in this process (median of the preset's repeats).

Fine-tuning budget: ``epochs`` short epochs of ``batches`` batches, the
learning rate decaying linearly from a quarter of the dense one to zero.
One-shot prunes at the end of epoch 1 (data-driven scores come from epoch
1's batches), incremental at the end of epochs 1, 2 and 3 (cubic ramp for
criteria, linear for low rank); all train for the same number of batches.

Usage::

    python benchmarks/criteria_lowrank.py --quick
    python benchmarks/criteria_lowrank.py --json benchmarks/out/cl.json
"""

import argparse
import copy
import json
import logging
import os
import random
import tempfile
import time
from pathlib import Path

import speechbrain as sb
import torch
import torch.nn.functional as F
from common import conformer
from speechbrain.lobes.models.transformer.TransformerLM import (
    TransformerLM,
)
from speechbrain.nnet.schedulers import LinearWarmupScheduler
from speechbrain.utils.epoch_loop import EpochCounter
from speechbrain.utils.metric_stats import ErrorRateStats

from sb_prune import PruningBrain, convert
from sb_prune.core.profiling import measure_latency
from sb_prune.core.saved_model import load_exported
from sb_prune.data.lm_text import prepare_lm_text
from sb_prune.hooks import CriterionPruning, LowRankCompression
from sb_prune.training.schedules import Incremental, OneShot

#: Sizes and budgets, one column per task and preset: LM quick, LM full,
#: ASR quick, ASR full.
SIZES = {
    "d_model": (32, 128, 32, 96),
    "heads": (4, 4, 4, 4),
    "layers": (2, 3, 2, 4),
    "d_ffn": (128, 512, 64, 384),
    "dense_batches": (60, 1000, 40, 1000),
    "batch_size": (32, 32, 8, 16),
    "epochs": (4, 4, 4, 4),
    "batches": (3, 20, 2, 15),
    "lr": (3e-3, 2e-3, 3e-3, 3e-3),
}


def _preset(column, lm, asr, targets, repeats):
    """A preset: ``column`` 0 (quick) or 1 (full) of SIZES, and the rest."""
    sizes = [
        {k: v[2 * task + column] for k, v in SIZES.items()} for task in (0, 1)
    ]
    return {
        "lm": {**lm, **sizes[0]},
        "asr": {**asr, **sizes[1]},
        "targets": targets,
        "repeats": repeats,
    }


PRESETS = {
    "quick": _preset(
        0,
        lm=dict(sentences=1500, test_sentences=200),
        asr=dict(
            corpus=dict(
                train_speakers=4,
                dev_speakers=1,
                test_speakers=2,
                utterances_per_speaker=10,
                seed=20240,
            ),
            test_utterances=20,
        ),
        targets=[0.5],
        repeats=5,
    ),
    "full": _preset(
        1,
        lm=dict(sentences=20000, test_sentences=500),
        asr=dict(corpus=None, test_utterances=300),
        targets=[0.25, 0.5, 0.75],
        repeats=20,
    ),
}
ROOT = Path(__file__).resolve().parents[1]
STRUCTURED = ["ffn", "heads"]
# ASR: FFN only, as the README's rows were measured.
LOW_RANK_POINTS = {"lm": ["ffn", "attention"], "asr": ["ffn"]}
CHARS = " ABCDEFGHIJKLMNOPQRSTUVWXYZ'"
PAD, BOS, EOS = 0, 1, 2  # LM ids; characters follow
RUN_OPTS = {"noprogressbar": True, "device": "cpu", "max_grad_norm": 5.0}


def char_ids(text, offset):
    return [CHARS.index(c) + offset for c in text if c in CHARS]


def count_params(model, nonzero=False):
    if nonzero:
        return int(sum((p != 0).sum() for p in model.parameters()))
    return sum(p.numel() for p in model.parameters())


class _Brain(PruningBrain):
    """Shared training loop: an optional LR schedule per optimizer step."""

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        scheduler = getattr(self, "lr_scheduler", None)
        if should_step and scheduler is not None:
            scheduler(self.optimizer)


class LMBrain(_Brain):
    def compute_forward(self, batch, stage):
        inputs, _, _ = batch
        return self.modules.model(inputs).log_softmax(-1)

    def compute_objectives(self, log_probs, batch, stage):
        _, targets, mask = batch
        nll = -log_probs.gather(-1, targets[..., None])[..., 0]
        return (nll * mask).sum() / mask.sum()


class ASRBrain(_Brain):
    def compute_forward(self, batch, stage):
        feats, lens, _, _ = batch
        return self.modules.model(feats, lens)

    def compute_objectives(self, log_probs, batch, stage):
        _, lens, targets, target_lens = batch
        frames = torch.round(lens * log_probs.shape[1]).long()
        return F.ctc_loss(
            log_probs.transpose(0, 1),
            targets,
            frames,
            target_lens,
            blank=0,
            zero_infinity=True,
        )


class Task:
    """A dense model, its data, training and evaluation."""

    brain_class = None
    metric = None

    def __init__(self, config, out_dir, seed):
        self.config = config
        self.out_dir = Path(out_dir)
        self.seed = seed

    def loader(self, data, batches, seed):
        """A loader of ``batches`` random batches (a short epoch)."""
        size = self.config["batch_size"]
        generator = torch.Generator().manual_seed(seed)
        sampler = torch.utils.data.RandomSampler(
            data, num_samples=batches * size, generator=generator
        )
        return torch.utils.data.DataLoader(
            data, batch_size=size, sampler=sampler, collate_fn=self.collate
        )

    def train(self, model, hooks, epochs, batches, lr, warmup=0, seed=0):
        torch.manual_seed(seed)
        counter = EpochCounter(epochs)
        brain = self.brain_class(
            modules={"model": model},
            opt_class=lambda params: torch.optim.AdamW(
                params, lr=lr, betas=(0.9, 0.98), weight_decay=0.01
            ),
            hparams={"prune_hooks": hooks, "epoch_counter": counter},
            run_opts=dict(RUN_OPTS),
        )
        # Warm-up (dense training) or none (fine-tuning), then linear decay.
        brain.lr_scheduler = LinearWarmupScheduler(lr, warmup, epochs * batches)
        logging.getLogger("speechbrain").setLevel(logging.WARNING)
        brain.fit(counter, self.loader(self.train_data, batches, seed))
        return model.eval()

    def train_dense(self):
        """The dense model: one epoch of the preset's batches, warm-up."""
        c = self.config
        return self.train(
            self.build(),
            [],
            epochs=1,
            batches=c["dense_batches"],
            lr=c["lr"],
            warmup=max(1, c["dense_batches"] // 10),
            seed=self.seed,
        )


class LMTask(Task):
    brain_class = LMBrain
    metric = "ppl"

    def __init__(self, config, out_dir, seed):
        super().__init__(config, out_dir, seed)
        paths = prepare_lm_text(
            str(self.out_dir / "lm_text"),
            train_sentences=config["sentences"],
            valid_sentences=10,
            test_sentences=config["test_sentences"],
            seed=seed,
        )
        self.train_data = self._read(paths["train"])
        self.test_data = self._read(paths["test"])
        self.latency_batch = self.collate(self.test_data[:64])

    @staticmethod
    def _read(csv_path):
        import csv

        with open(csv_path, newline="") as handle:
            return [char_ids(row["wrd"], 3) for row in csv.DictReader(handle)]

    @staticmethod
    def collate(items):
        longest = max(len(ids) for ids in items) + 1
        inputs = torch.full((len(items), longest), PAD)
        targets = torch.full((len(items), longest), PAD)
        mask = torch.zeros(len(items), longest)
        for row, ids in enumerate(items):
            inputs[row, : len(ids) + 1] = torch.tensor([BOS] + ids)
            targets[row, : len(ids) + 1] = torch.tensor(ids + [EOS])
            mask[row, : len(ids) + 1] = 1.0
        return inputs, targets, mask

    def build(self):
        c = self.config
        torch.manual_seed(self.seed)
        return TransformerLM(
            len(CHARS) + 3,
            d_model=c["d_model"],
            nhead=c["heads"],
            num_encoder_layers=c["layers"],
            d_ffn=c["d_ffn"],
            dropout=0.1,
            activation=torch.nn.GELU,
            normalize_before=True,
        )

    @torch.no_grad()
    def evaluate(self, model):
        model.eval()
        total, count = 0.0, 0.0
        for start in range(0, len(self.test_data), 128):
            inputs, targets, mask = self.collate(
                self.test_data[start : start + 128]
            )
            log_probs = model(inputs).log_softmax(-1)
            nll = -log_probs.gather(-1, targets[..., None])[..., 0]
            total += (nll * mask).sum().item()
            count += mask.sum().item()
        return float(torch.tensor(total / count).exp())

    def forward_fn(self, model):
        inputs = self.latency_batch[0]
        return lambda: model(inputs)


class ASRModel(torch.nn.Module):
    """Frame stacking, a Conformer encoder and a CTC output layer."""

    def __init__(self, vocab, d_model, heads, layers, d_ffn, n_mels=80):
        super().__init__()
        self.front = torch.nn.Conv1d(n_mels, d_model, 4, stride=4)
        self.transformer = conformer(
            d_model, heads, layers, d_ffn, tgt_vocab=vocab, dropout=0.1
        )
        self.out = torch.nn.Linear(d_model, vocab)

    def forward(self, feats, lens):
        x = self.front(feats.transpose(1, 2)).transpose(1, 2)
        return self.out(self.transformer.encode(x, lens)).log_softmax(-1)


class ASRTask(Task):
    brain_class = ASRBrain
    metric = "wer"

    def __init__(self, config, out_dir, seed, corpus):
        super().__init__(config, out_dir, seed)
        self.corpus = Path(corpus)
        fbank = sb.lobes.features.Fbank(n_mels=80)
        splits = {}
        for split in ("train-clean-100", "test-clean"):
            splits[split] = self._load(self.corpus / split, fbank)
        self.train_data = splits["train-clean-100"]
        test = splits["test-clean"]
        random.Random(seed).shuffle(test)
        self.test_data = test[: config["test_utterances"]]
        stacked = torch.cat([f for f, _ in self.train_data])
        self.mean, self.std = stacked.mean(0), stacked.std(0) + 1e-5
        self.latency_batch = self.collate(self.test_data[:16])

    @staticmethod
    def _load(split_dir, fbank):
        import soundfile

        items = []
        for trans in sorted(split_dir.rglob("*.trans.txt")):
            for line in trans.read_text().splitlines():
                utt, _, words = line.strip().partition(" ")
                audio, _ = soundfile.read(
                    trans.parent / f"{utt}.flac", dtype="float32"
                )
                with torch.no_grad():
                    feats = fbank(torch.from_numpy(audio)[None])[0]
                items.append((feats, words))
        return items

    def collate(self, items):
        longest = max(f.shape[0] for f, _ in items)
        longest += (-longest) % 4
        feats = torch.zeros(len(items), longest, 80)
        lens = torch.zeros(len(items))
        targets = [torch.tensor(char_ids(w, 1)) for _, w in items]
        for row, (f, _) in enumerate(items):
            feats[row, : f.shape[0]] = (f - self.mean) / self.std
            lens[row] = f.shape[0] / longest
        target_lens = torch.tensor([len(t) for t in targets])
        padded = torch.nn.utils.rnn.pad_sequence(targets, batch_first=True)
        return feats, lens, padded, target_lens

    def build(self):
        c = self.config
        torch.manual_seed(self.seed)
        return ASRModel(
            len(CHARS) + 1, c["d_model"], c["heads"], c["layers"], c["d_ffn"]
        )

    @torch.no_grad()
    def evaluate(self, model):
        model.eval()
        stats = ErrorRateStats()
        for start in range(0, len(self.test_data), 32):
            items = self.test_data[start : start + 32]
            feats, lens, _, _ = self.collate(items)
            log_probs = model(feats, lens)
            hyps = sb.decoders.ctc_greedy_decode(log_probs, lens, blank_id=0)
            words = ["".join(CHARS[i - 1] for i in hyp).split() for hyp in hyps]
            refs = [w.split() for _, w in items]
            ids = [str(start + i) for i in range(len(items))]
            stats.append(ids, words, refs)
        return stats.summarize("error_rate")

    def forward_fn(self, model):
        feats, lens, _, _ = self.latency_batch
        return lambda: model(feats, lens)


class Recorder:
    """Measures compressed models against the dense one; logs each row."""

    def __init__(self, task, name, dense, repeats, log):
        self.task, self.name, self.dense = task, name, dense
        self.repeats, self.log = repeats, log
        self.rows = []

    def __call__(
        self, model, criterion, schedule, target, nonzero=False, note=""
    ):
        task = self.task
        row = {
            "model": self.name,
            "target": target,
            "criterion": criterion,
            "schedule": schedule,
            "params": count_params(model, nonzero),
            "ppl_or_wer": task.evaluate(model),
            "metric": task.metric,
            # Time over dense time (below 1: faster), interleaved medians.
            "latency_ratio": _time_ratio(
                task.forward_fn(self.dense),
                task.forward_fn(model),
                self.repeats,
            ),
        }
        if note:
            row["note"] = note
        self.rows.append(row)
        self.log(_format(row))


def _time_ratio(dense_fn, other_fn, repeats):
    times = measure_latency(
        {"dense": dense_fn, "other": other_fn}, lambda: (), repeats, warmup=1
    )
    return times["other"] / times["dense"]


def _schedule(kind, target):
    if kind == "one_shot":
        return OneShot(target, epoch=1)
    return Incremental(target, steps=3, ramp="cubic", start_epoch=1)


def benchmark_task(task, name, targets, criteria, repeats, log):
    c = task.config
    start = time.time()
    dense = task.train_dense()
    log(f"[{name}] dense trained in {time.time() - start:.0f} s")
    budget = dict(epochs=c["epochs"], batches=c["batches"], lr=c["lr"] / 4)
    record = Recorder(task, name, dense, repeats, log)
    low_rank = {"points": LOW_RANK_POINTS[name]}
    low_rank_note = "+".join(LOW_RANK_POINTS[name])

    def finetune(model, hooks):
        return task.train(model, hooks, seed=task.seed + 1, **budget)

    tuned = finetune(copy.deepcopy(dense), [])
    record(tuned, "none", "none", 0.0, note="dense, fine-tuned like the others")
    converted = convert(copy.deepcopy(dense), prunable_attention={})
    record(
        converted,
        "none",
        "none",
        0.0,
        note="prunable attention, nothing removed (no training)",
    )
    for target in targets:
        for schedule in ("one_shot", "incremental"):
            for criterion in criteria:
                hook = CriterionPruning(
                    criterion, _schedule(schedule, target), groups=STRUCTURED
                )
                model = convert(copy.deepcopy(dense), prunable_attention={})
                model = finetune(model, [hook])
                record(model, criterion, schedule, target)
        # Low rank, one shot: the ranks are cut at the end of epoch 1 too.
        model = convert(copy.deepcopy(dense), low_rank=low_rank)
        model = finetune(model, [LowRankCompression(OneShot(target))])
        record(model, "low_rank", "one_shot", target, note=low_rank_note)
        if target != targets[len(targets) // 2]:
            continue
        # Unstructured masks (no speed-up without sparse kernels).
        hook = CriterionPruning(
            "magnitude", _schedule("incremental", target), groups=["weights"]
        )
        model = finetune(copy.deepcopy(dense), [hook])
        record(
            model,
            "magnitude",
            "incremental",
            target,
            nonzero=True,
            note="unstructured masks: dense kernels, no speed-up",
        )
    _low_rank_incremental(record, targets, budget)
    return record.rows


def _low_rank_incremental(record, targets, budget):
    """One run: ranks drop at the end of epochs 1..n; every stage exported."""
    task, dense = record.task, record.dense
    low_rank = {"points": LOW_RANK_POINTS[record.name]}
    export = tempfile.mkdtemp(prefix="low_rank_", dir=task.out_dir)
    # Evenly spaced targets (25/50/75%) are exactly the linear ramp's steps.
    schedule = Incremental(
        max(targets), steps=len(targets), ramp="linear", start_epoch=1
    )
    hook = LowRankCompression(
        schedule, export_folder=export, export_module="model"
    )
    task.train(
        convert(copy.deepcopy(dense), low_rank=low_rank),
        [hook],
        epochs=max(budget["epochs"], schedule.last_epoch + 1),
        batches=budget["batches"],
        lr=budget["lr"],
        seed=task.seed + 1,
    )
    for stage in sorted(os.listdir(export)):
        fresh = convert(copy.deepcopy(dense), low_rank=low_rank)
        load_exported(fresh, os.path.join(export, stage))
        target = float(stage.split("_")[-1])
        note = "+".join(low_rank["points"]) + "; stages of one run"
        record(fresh.eval(), "low_rank", "incremental", target, note=note)


def _format(row):
    return (
        f"{row['model']:4} {row['target']:5.2f} {row['criterion']:10} "
        f"{row['schedule']:12} {row['params']:9d} "
        f"{row['metric']}={row['ppl_or_wer']:7.3f} "
        f"latency x{row['latency_ratio']:.3f}"
    )


def print_table(rows):
    print()
    header = (
        f"{'model':5} {'target':>6} {'criterion':10} {'schedule':12} "
        f"{'params':>9} {'ppl/wer':>8} {'latency':>8}  note"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['model']:5} {row['target']:6.2f} {row['criterion']:10} "
            f"{row['schedule']:12} {row['params']:9d} "
            f"{row['ppl_or_wer']:8.3f} {row['latency_ratio']:8.3f}  "
            f"{row.get('note', '')}"
        )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny models and budgets (under a minute)",
    )
    parser.add_argument("--json", help="write all figures to this file")
    parser.add_argument(
        "--parts", nargs="+", default=["lm", "asr"], choices=["lm", "asr"]
    )
    parser.add_argument(
        "--criteria",
        nargs="+",
        default=["magnitude", "taylor", "activation"],
        choices=["magnitude", "taylor", "activation", "wanda"],
    )
    parser.add_argument(
        "--targets", nargs="+", type=float, help="sparsities (default: preset)"
    )
    parser.add_argument(
        "--corpus",
        default=str(ROOT / "data/synthetic/LibriSpeech"),
        help="LibriSpeech-format folder for the ASR part "
        "(full mode; synthesised if missing)",
    )
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks/out"), help="work folder"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args(argv)


def asr_corpus(args, preset, out_dir):
    """The ASR part's corpus: the preset's, or --corpus (made if missing)."""
    from sb_prune.data import synthesize_corpus

    options = preset["asr"]["corpus"]
    if options is None:
        corpus = Path(args.corpus)
        if (corpus / "test-clean").exists():
            return corpus
        options = {}
    return synthesize_corpus(str(out_dir / "corpus"), progress=False, **options)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    preset = PRESETS["quick" if args.quick else "full"]
    targets = args.targets or preset["targets"]
    for target in targets:
        if not 0.0 < target < 1.0:
            raise ValueError(f"--targets must be in (0, 1), got {target}")
    out_dir = Path(args.out) / ("quick" if args.quick else "full")
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()

    def log(message):
        print(f"[{time.time() - start:6.0f} s] {message}", flush=True)

    rows = []
    if "lm" in args.parts:
        task = LMTask(preset["lm"], out_dir, args.seed)
        rows += benchmark_task(
            task, "lm", targets, args.criteria, preset["repeats"], log
        )
    if "asr" in args.parts:
        corpus = asr_corpus(args, preset, out_dir)
        task = ASRTask(preset["asr"], out_dir, args.seed, corpus)
        log(f"[asr] {len(task.train_data)} training utterances")
        rows += benchmark_task(
            task, "asr", targets, args.criteria, preset["repeats"], log
        )
    print_table(rows)
    result = {
        "mode": "quick" if args.quick else "full",
        "threads": args.threads,
        "seconds": round(time.time() - start, 1),
        "presets": {k: v for k, v in preset.items()},
        "rows": rows,
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1, default=str)
    print(f"\n{result['seconds']} s")
    return result


if __name__ == "__main__":
    main()
