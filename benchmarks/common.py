"""Helpers shared by the benchmarks.

The benchmarks run as scripts (``python benchmarks/<name>.py``), which puts
this folder first on ``sys.path``: they ``import common``.

Authors
 * sb_prune developers
"""

import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

import torch
from speechbrain.lobes.models.transformer.TransformerASR import TransformerASR

from sb_prune.methods.adaptive_dropout.convert import masked_layers

REPO = Path(__file__).resolve().parents[1]
#: The ASR recipe's hparams files, and the synthetic corpus its relative
#: default (``../data/synthetic``, from the recipe folder) stands for.
ASR_HPARAMS = REPO / "recipes" / "LibriSpeech" / "ASR" / "hparams"
SYNTHETIC_FOLDER = REPO / "recipes" / "LibriSpeech" / "data" / "synthetic"
#: The Whisper compression recipe.
WHISPER_RECIPE = REPO / "recipes" / "LibriSpeech" / "whisper"

#: The conformer-large-sized encoder of the speed benchmarks.
LARGE = dict(d_model=256, nhead=4, num_encoder_layers=18, d_ffn=1024)
#: 10 s of 10 ms frames, stacked by 4.
FRAMES_10S = 250
#: Adaptive-dropout keep ratios used without a trained model: roughly what
#: training learns on the recipe's model, FFNs pruned most.
QUICK_RATIOS = {"ffn1": [0.35], "ffn2": [0.4], "query": [0.6], "value": [0.7]}


def conformer(
    d_model,
    nhead,
    num_encoder_layers,
    d_ffn,
    tgt_vocab=32,
    dropout=0.0,
    seed=None,
):
    """A CTC Conformer encoder (TransformerASR, no decoder) like the recipe's.

    Arguments
    ---------
    d_model, nhead, num_encoder_layers, d_ffn : int
        The encoder's sizes (its input size is ``d_model``).
    tgt_vocab : int
        Output vocabulary of the TransformerASR.
    dropout : float
        Dropout of the encoder layers.
    seed : int, optional
        Seeds torch's generator before the weights are drawn.

    Returns
    -------
    TransformerASR
        A new model, in training mode.
    """
    if seed is not None:
        torch.manual_seed(seed)
    return TransformerASR(
        tgt_vocab=tgt_vocab,
        input_size=d_model,
        d_model=d_model,
        nhead=nhead,
        num_encoder_layers=num_encoder_layers,
        num_decoder_layers=0,
        d_ffn=d_ffn,
        dropout=dropout,
        encoder_module="conformer",
        attention_type="RelPosMHAXL",
        normalize_before=True,
        causal=False,
    )


def encode(model):
    """``(x, lens) -> encoder output`` of a TransformerASR."""
    return lambda x, lens: model.encode(x, lens)


def apply_keep_ratios(model, ratios, seed=0):
    """Set adaptive-dropout logits so each layer keeps the given ratios.

    Layer ``j`` of ``model`` uses the ratios of the small model's layer
    ``j * L_small // L_model``; points without ratios keep everything.
    """
    generator = torch.Generator().manual_seed(seed)
    layers = masked_layers(model)
    for j, (_, masks) in enumerate(layers):
        for point, adl in masks.items():
            per_layer = ratios.get(point, [1.0])
            ratio = per_layer[j * len(per_layer) // len(layers)]
            logits = torch.full((adl.n_units,), -4.0)
            order = torch.randperm(adl.n_units, generator=generator)
            logits[order[: max(1, round(ratio * adl.n_units))]] = 4.0
            adl.set_logits(logits)


def run_recipe(
    hparams,
    output,
    common,
    script="compress.py",
    log=None,
    threads=None,
    **overrides,
):
    """Run a script of the Whisper recipe; return its results.json.

    Arguments
    ---------
    hparams : str
        A file of the recipe's ``hparams/``.
    output : str or pathlib.Path
        Its ``output_folder``.
    common, overrides : dict
        Command-line overrides (``overrides`` win).
    script : str
        ``compress.py`` (the encoder) or ``train.py`` (the whole model).
    log : str or pathlib.Path, optional
        Write the run's output there as it runs (default: kept in memory,
        its end in the error of a failed run).
    threads : int, optional
        The run's ``OMP_NUM_THREADS``.

    Returns
    -------
    dict
        The run's ``results.json`` (or its ``results_file``).
    """
    options = {**common, **overrides, "output_folder": output}
    command = [
        sys.executable,
        script,
        f"hparams/{hparams}",
        "--noprogressbar",
        *[f"--{key}={value}" for key, value in options.items()],
    ]
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    if log is None:
        done = subprocess.run(
            command, cwd=WHISPER_RECIPE, env=env, capture_output=True, text=True
        )
        failure = done.stderr[-3000:]
    else:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w", encoding="utf-8") as handle:
            done = subprocess.run(
                command,
                cwd=WHISPER_RECIPE,
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        failure = f"{script} failed: see {log}"
    if done.returncode != 0:
        raise RuntimeError(failure)
    results_file = options.get("results_file", Path(output) / "results.json")
    return json.loads(Path(results_file).read_text())


def provenance():
    """The command, commit and machine of a benchmark, for its JSON."""
    git = ["git", "-C", str(REPO)]
    commit = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    changed = subprocess.run(
        [*git, "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "command": shlex.join(["python", *sys.argv]),
        "commit": commit + ("+uncommitted changes" if changed else ""),
        "machine": f"{platform.node()}: {platform.machine()}, "
        f"{torch.get_num_threads()} threads",
    }


def spread(values):
    """Mean, standard deviation, minimum and maximum over seeds.

    Arguments
    ---------
    values : list of float
        One value per seed (at least one).

    Returns
    -------
    dict
        ``seeds``, ``mean``, ``sd`` (0 for one seed), ``min``, ``max``.

    Example
    -------
    >>> figures = spread([30.0, 34.0])
    >>> figures["mean"], round(figures["sd"], 3), figures["seeds"]
    (32.0, 2.828, 2)
    """
    return {
        "seeds": len(values),
        "mean": statistics.mean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def group_rows(rows, key):
    """Rows grouped by ``key(row)``, groups in the order first seen.

    Arguments
    ---------
    rows : list of dict
        One per run (e.g. per setting and seed).
    key : callable
        ``row -> hashable``: what the runs of one group share.

    Returns
    -------
    dict
        ``{key: [rows]}``.

    Example
    -------
    >>> rows = [{"k": "b", "v": 1}, {"k": "a", "v": 2}, {"k": "b", "v": 3}]
    >>> group_rows(rows, lambda row: row["k"])
    {'b': [{'k': 'b', 'v': 1}, {'k': 'b', 'v': 3}], 'a': [{'k': 'a', 'v': 2}]}
    """
    groups = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    return groups


def write_json(path, figures):
    """Write a benchmark's figures to ``path`` (its folder made if needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=1, default=str))


def run_asr_recipe(hparams, output, **overrides):
    """Train and test one run of the ASR recipe, in process.

    What ``recipes/LibriSpeech/ASR/train.py`` runs (``sb_prune.asr.recipe``)
    on one of its hparams files, with ``--key=value`` overrides.

    Arguments
    ---------
    hparams : str
        A file of ``recipes/LibriSpeech/ASR/hparams``.
    output : pathlib.Path
        The run folder.
    **overrides
        Recipe keys (values read as YAML, as on the command line).

    Returns
    -------
    dict
        The run's ``results.json``.
    """
    from sb_prune.asr.recipe import main

    overrides = {"synthetic_folder": SYNTHETIC_FOLDER, **overrides}
    main(
        [
            str(ASR_HPARAMS / hparams),
            f"--output_folder={output}",
            "--noprogressbar",
            *(f"--{key}={value}" for key, value in overrides.items()),
        ]
    )
    return json.loads((Path(output) / "results.json").read_text())
