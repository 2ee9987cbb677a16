"""Hostile inputs for the parsers of data files: a seeded fuzzer.

sb_prune reads data that others may have written (README, "Trust model"):
structure records, CTranslate2 ``model.bin`` files, and the hparams values
of its hooks. Each input drawn here must end in a clear error: a
ValueError, TypeError or FileNotFoundError whose message names the key,
the module or the file; or be accepted. Anything else (another exception
type, a message that names nothing, a case running past its time limit)
counts as uncaught.

Kinds of input (a seeded ``random.Random`` draws them):

* ``structure record``: the record of a tiny Conformer (low-rank and
  adaptive-dropout layers included), mutated: keys missing or added,
  sizes negative, huge, of the wrong type, lists of sizes, type names
  unknown, entries that are not mappings; given to ``restore``;
* ``structure file``: an exported folder's ``structure.json``, truncated
  or with bytes changed; loaded by ``load_exported``;
* ``model.bin``: a small CTranslate2 file (``write_model_bin`` of the
  tests), truncated at a random offset, with a huge or wrong dimension,
  byte count, data type code, rank, string length, variable count or
  binary version, or random bytes changed; read by ``read_model_bin``;
* ``hook hparams``: each class of ``sb_prune.hooks`` built with one
  argument replaced by a hostile value, or with an unknown key.

Usage::

    python benchmarks/fuzz_inputs.py
    python benchmarks/fuzz_inputs.py --json benchmarks/results/fuzz_inputs.json

Authors
 * sb_prune developers
"""

import argparse
import copy
import inspect
import json
import random
import signal
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from common import REPO, conformer, provenance

from sb_prune import convert
from sb_prune.core.saved_model import export_model, load_exported
from sb_prune.core.structure import MAX_SIZE, describe, restore
from sb_prune.families.whisper.ctranslate2 import read_model_bin

sys.path.append(str(REPO / "tests"))
from helpers import write_model_bin  # noqa: E402

#: The exception types that count as a clear error.
CLEAR = (ValueError, TypeError, FileNotFoundError)
#: Seconds a case may run.
TIME_LIMIT = 10
#: Sizes a hostile record or file declares.
HUGE = [MAX_SIZE + 1, 2**31 - 1, 2**32 - 1, 2**63, 10**30]
#: Values a hostile YAML gives.
HOSTILE = [
    None,
    True,
    -1,
    0,
    2**63,
    -1e30,
    float("nan"),
    float("inf"),
    0.5,
    "",
    "x",
    "1",
    [],
    [1],
    {},
    {"a": 1},
]


class Case:
    """One hostile input: a call and the names its error must mention."""

    def __init__(self, kind, label, call, names):
        self.kind = kind
        self.label = label
        self.call = call
        self.names = [str(name) for name in names if str(name)]


def tiny_model(seed=0):
    """A one-layer Conformer with low-rank and adaptive-dropout layers."""
    model = conformer(
        d_model=16, nhead=4, num_encoder_layers=1, d_ffn=32, seed=seed
    )
    return convert(model, adaptive_dropout={}, low_rank={"rank": 2})


def _mutate_entry(rng, entry):
    """A hostile copy of one entry of a record, and the key it changes."""
    entry = copy.deepcopy(entry)
    sizes = [key for key in entry if key != "type"]
    key = rng.choice(sizes)
    how = rng.choice(
        ["drop", "extra", "huge", "negative", "wrong", "list", "type"]
    )
    if how == "drop":
        key = rng.choice(sizes + ["type"])
        del entry[key]
    elif how == "extra":
        key = rng.choice(["units", "rank", "hidden", "layers", "zzz"])
        entry[key] = rng.randint(0, 64)
    elif how == "huge":
        entry[key] = rng.choice(HUGE)
    elif how == "negative":
        entry[key] = -rng.randint(1, 2**40)
    elif how == "wrong":
        entry[key] = rng.choice(HOSTILE)
    elif how == "list":
        size = rng.choice([0, 1, 4, MAX_SIZE // 2, MAX_SIZE])
        entry[key] = [size] * rng.randint(0, 64)
    else:
        key = "type"
        entry[key] = rng.choice(
            [
                "Nonexistent",
                "torch.nn.modules.linear.Linear",
                "sb_prune.methods.low_rank.layer.LowRankLinear",
                "sb_prune.methods.adaptive_dropout.layer.AdaptiveDropout",
                "speechbrain.nnet.attention.PositionalwiseFeedForward",
                "a.b.C",
                17,
                None,
            ]
        )
    return entry, key


def structure_record_cases(rng, count):
    """Hostile records for ``restore`` (in memory)."""
    record = describe(tiny_model())
    paths = sorted(record)
    cases = []
    for index in range(count):
        mutated = copy.deepcopy(record)
        choice = rng.random()
        if choice < 0.08:
            mutated = rng.choice([[], "x", 3, None, [record]])
            names = ["structure record"]
        elif choice < 0.16:
            path = rng.choice(paths) + rng.choice([".zzz", "x", ".0.0"])
            mutated[path] = dict(record[rng.choice(paths)])
            names = [path]
        elif choice < 0.24:
            path = rng.choice(paths)
            mutated[path] = rng.choice(HOSTILE[1:] + [None])
            names = [path]
        else:
            path = rng.choice(paths)
            mutated[path], key = _mutate_entry(rng, record[path])
            names = [path, key]

        def call(mutated=mutated):
            restore(tiny_model(), mutated)

        cases.append(Case("structure record", f"{index}", call, names))
    return cases


def structure_file_cases(rng, count, folder):
    """Hostile ``structure.json`` files of an exported folder."""
    source = folder / "exported"
    export_model(tiny_model(), source)
    text = (source / "structure.json").read_bytes()
    cases = []
    for index in range(count):
        out = folder / f"structure_{index}"
        out.mkdir()
        (out / "model.ckpt").write_bytes((source / "model.ckpt").read_bytes())
        data = bytearray(text)
        if rng.random() < 0.5:
            data = data[: rng.randrange(len(data))]
        else:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        (out / "structure.json").write_bytes(bytes(data))

        def call(out=out):
            load_exported(tiny_model(), str(out))

        cases.append(Case("structure file", f"{index}", call, [out]))
    return cases


def _model_bin_variables():
    generator = np.random.default_rng(0)
    return {
        "encoder/conv1/weight": generator.standard_normal((4, 2, 3)),
        "encoder/num_heads": np.array(2, dtype=np.int16),
        "decoder/embeddings/weight": generator.standard_normal((5, 4)),
        "decoder/layer_0/ffn/linear_0/bias": np.arange(6, dtype=np.int32),
    }


def _patch(data, offset, fmt, value):
    size = struct.calcsize(fmt)
    data[offset : offset + size] = struct.pack("<" + fmt, value)


def _mutate_model_bin(rng, blob, names):
    """A hostile copy of a model.bin: one field or some bytes changed."""
    data = bytearray(blob)
    name = rng.choice(names).encode() + b"\0"
    at = blob.index(name)
    after = at + len(name)  # rank (B), dims (I each), code (B), bytes (I)
    rank = data[after]
    how = rng.choice(
        ["truncate", "dim", "bytes", "code", "rank", "string", "count"]
        + ["version", "flip"]
    )
    if how == "truncate":
        data = data[: rng.randrange(len(data))]
    elif how == "dim" and rank:
        value = rng.choice(HUGE[:3] + [0, rng.randint(1, 64)])
        _patch(data, after + 1 + 4 * rng.randrange(rank), "I", value)
    elif how == "bytes":
        value = rng.choice(HUGE[:3] + [0, rng.randint(1, 4096)])
        _patch(data, after + 2 + 4 * rank, "I", value)
    elif how == "code":
        data[after + 1 + 4 * rank] = rng.randint(5, 255)
    elif how == "rank":
        data[after] = rng.randint(0, 255)
    elif how == "string":
        _patch(data, at - 2, "H", rng.randint(0, 2**16 - 1))
    elif how == "count":
        offset = blob.index(b"WhisperSpec\0") + len("WhisperSpec\0") + 4
        _patch(data, offset, "I", rng.choice(HUGE[:3]))
    elif how == "version":
        _patch(data, 0, "I", rng.choice([0, 4, 7, 2**32 - 1]))
    else:
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def model_bin_cases(rng, count, folder):
    """Hostile CTranslate2 ``model.bin`` files."""
    variables = _model_bin_variables()
    valid = folder / "valid.bin"
    write_model_bin(valid, variables)
    blob = valid.read_bytes()
    cases = [
        Case(
            "model.bin",
            "missing",
            lambda: read_model_bin(folder / "none.bin"),
            ["none.bin"],
        )
    ]
    for index in range(count - 1):
        path = folder / f"model_{index}.bin"
        path.write_bytes(_mutate_model_bin(rng, blob, sorted(variables)))
        cases.append(
            Case(
                "model.bin",
                f"{index}",
                lambda path=path: read_model_bin(path),
                [path],
            )
        )
    return cases


def _hooks():
    """``{class name: (class, valid keyword arguments)}``."""
    from sb_prune import hooks
    from sb_prune.schedules import OneShot

    return {
        "ActivationLowRank": (
            hooks.ActivationLowRank,
            dict(compression=0.5, epoch=1),
        ),
        "AdaptiveDropoutPruning": (hooks.AdaptiveDropoutPruning, {}),
        "ConvexityScoring": (
            hooks.ConvexityScoring,
            dict(csv_file="u.csv", label_column="word", output_folder="out"),
        ),
        "CriterionPruning": (
            hooks.CriterionPruning,
            dict(criterion="taylor", schedule=OneShot(0.5)),
        ),
        "Distillation": (
            hooks.Distillation,
            dict(teacher=torch.nn.Linear(2, 2)),
        ),
        "LayerCut": (
            hooks.LayerCut,
            dict(rule="evenly_spaced", n_layers=2, at_epoch=1),
        ),
        "LowRankCompression": (
            hooks.LowRankCompression,
            dict(schedule=OneShot(0.5)),
        ),
        "WeightChangeTracker": (hooks.WeightChangeTracker, {}),
    }


def hook_cases(rng, count):
    """Hook constructors given one hostile value or an unknown key."""
    hooks = _hooks()
    cases = []
    for _ in range(count):
        name = rng.choice(sorted(hooks))
        cls, valid = hooks[name]
        keys = [k for k in inspect.signature(cls).parameters if k != "name"]
        options = dict(valid)
        if rng.random() < 0.1:
            key = rng.choice(["ratio", "epochs", "schedul", "zzz"])
        else:
            key = rng.choice(keys)
        options[key] = rng.choice(HOSTILE)

        def call(cls=cls, options=options):
            cls(**options)

        label = f"{name}({key}={options[key]!r})"
        cases.append(Case("hook hparams", label, call, [key]))
    return cases


class _TimeLimit(Exception):
    pass


def _alarm(signum, frame):
    raise _TimeLimit()


def outcome(case):
    """``("refused" | "accepted" | "uncaught", message)`` of a case."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIME_LIMIT)
    try:
        case.call()
    except _TimeLimit:
        return "uncaught", f"ran past {TIME_LIMIT} s"
    except CLEAR as error:
        message = str(error)
        if any(name in message for name in case.names):
            return "refused", message
        return "uncaught", f"{type(error).__name__} names nothing: {message}"
    except Exception as error:  # noqa: BLE001 - what the fuzzer counts
        return "uncaught", f"{type(error).__name__}: {error}"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return "accepted", ""


def all_cases(seed, per_kind, folder):
    """The cases of every kind, drawn by one seeded generator."""
    rng = random.Random(seed)
    folder = Path(folder)
    return (
        structure_record_cases(rng, per_kind)
        + structure_file_cases(rng, per_kind, folder)
        + model_bin_cases(rng, per_kind, folder)
        + hook_cases(rng, per_kind)
    )


def run(seed=0, per_kind=100):
    """Run every case; return the counts and the uncaught cases.

    Arguments
    ---------
    seed : int
        Seeds the generator of the cases.
    per_kind : int
        Inputs of each kind.

    Returns
    -------
    dict
        ``fuzzed_inputs``, ``uncaught``, ``rows`` (per kind: inputs,
        refused, accepted, uncaught), ``failures`` (the uncaught cases) and
        ``accepted`` (the inputs taken as valid, to read).
    """
    rows, failures, accepted = {}, [], []
    with tempfile.TemporaryDirectory() as folder:
        for case in all_cases(seed, per_kind, folder):
            result, message = outcome(case)
            row = rows.setdefault(
                case.kind,
                {"kind": case.kind, "inputs": 0, "refused": 0}
                | {"accepted": 0, "uncaught": 0},
            )
            row["inputs"] += 1
            row[result] += 1
            if result == "uncaught":
                failures.append(
                    {"kind": case.kind, "case": case.label, "error": message}
                )
            elif result == "accepted":
                accepted.append(f"{case.kind} {case.label}")
    return {
        "fuzzed_inputs": sum(row["inputs"] for row in rows.values()),
        "uncaught": len(failures),
        "rows": list(rows.values()),
        "failures": failures,
        "accepted": accepted,
    }


def table(results):
    """The results as a Markdown table."""
    lines = [
        "| kind | inputs | refused | accepted | uncaught |",
        "|---|---|---|---|---|",
    ]
    for row in results["rows"] + [
        {
            "kind": "all",
            "inputs": results["fuzzed_inputs"],
            "refused": sum(r["refused"] for r in results["rows"]),
            "accepted": sum(r["accepted"] for r in results["rows"]),
            "uncaught": results["uncaught"],
        }
    ]:
        lines.append(
            f"| {row['kind']} | {row['inputs']} | {row['refused']} | "
            f"{row['accepted']} | {row['uncaught']} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-kind", type=int, default=100)
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)
    results = run(args.seed, args.per_kind)
    print(table(results))
    for failure in results["failures"]:
        print(f"{failure['kind']} {failure['case']}: {failure['error']}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({**provenance(), **results}, indent=1) + "\n"
        )
    return 1 if results["uncaught"] else 0


if __name__ == "__main__":
    sys.exit(main())
