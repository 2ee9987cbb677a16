"""Kill training runs at random instants; resumed runs must end as whole ones.

For each structural method's recipe (adaptive dropout, criteria with an
incremental schedule, low rank, I3D, layer cut: the ASR recipe at its test
size, on the embedded synthetic corpus), the federated recipe and a
two-process DDP run (gloo), this harness:

1. runs the configuration once without interruption (the reference);
2. runs it again in another folder, sending SIGKILL at seeded random
   instants, each time restarting the same command, which resumes from
   what the killed process left; the kill points are: inside a training
   step (after the backward pass, before the optimizer step), while a
   checkpoint file is being written (half of its bytes are on disk), after
   a structural change and before its checkpoint, at a random time, and
   while ``sb-prune export`` writes the exported folder;
3. after each kill, looks for partial outputs a reader would accept: a
   checkpoint folder SpeechBrain lists (it holds ``CKPT.yaml``) with a file
   missing or truncated, a seed model file that does not load, an exported
   folder present but not loadable;
4. lets the last restart finish and compares it with the reference: the
   structure record, every parameter of the final checkpoint (within
   ``TOLERANCE``; the largest difference is reported) and the test WER
   and CER (the exported model's parameters for the export kills).

A kill counts as ``resumed_identical`` when the chain of restarts it
belongs to ends as the reference did, as ``lost`` when the restart after
it fails. Each case's chain holds several kills; a wrong resume at any of
them would show in the end state (the random generators are restored from
checkpoints, so an identical end is expected, not approximate).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/faults.py \\
        --json benchmarks/results/faults.json

(``--child`` is the mode in which the harness runs each process it kills.)

Authors
 * sb_prune developers
"""

import argparse
import io
import json
import os
import random
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import torch
from common import REPO, provenance, write_json

ASR = REPO / "recipes" / "LibriSpeech" / "ASR"
FEDERATED = REPO / "recipes" / "LibriSpeech" / "federated"
TESTS = REPO / "tests"
#: The largest parameter difference still counted as identical.
TOLERANCE = 1e-6
#: The ASR recipe at test size (tests/recipe_runs.py reads the same file).
TINY = dict(
    number_of_epochs=2,
    batch_size=4,
    d_model=32,
    nhead=2,
    num_encoder_layers=2,
    d_ffn=64,
    conv_kernel_size=7,
    token_type="char",
    output_neurons=32,
    frame_stack=4,
    warmup_steps=5,
    lr=0.003,
    avg_checkpoints=2,
)
#: Per method: its hparams file and the overrides that make it change
#: structure within the run.
METHODS = {
    "adaptive_dropout": ("conformer_ctc_adaptive_dropout.yaml", {}),
    "criteria_incremental": (
        "conformer_ctc_criteria.yaml",
        {"number_of_epochs": 3, "prune_steps": 2},
    ),
    "low_rank": (
        "conformer_ctc_low_rank.yaml",
        {"number_of_epochs": 3, "prune_steps": 2},
    ),
    "i3d": ("conformer_ctc_i3d_global.yaml", {}),
    "layer_cut": (
        "conformer_ctc_static_layer_pruning.yaml",
        {"number_of_epochs": 3, "static_remove_layers": 1},
    ),
}
#: Kill points of one recipe chain, in order (the numbers are drawn);
#: I3D changes no structure in training (its gates skip layers).
RECIPE_KILLS = [
    "structure",
    "save",
    "step",
    "timer",
    "save",
    "step",
    "structure",
    "save",
    "step",
]


# --- the child process: install one fault, then run the script ----------


#: The file a child writes just before it kills itself (its path is given
#: in this environment variable).
MARKER = "SB_PRUNE_FAULTS_MARKER"


def _die():
    Path(os.environ[MARKER]).write_text(str(os.getpid()))
    os.kill(os.getpid(), signal.SIGKILL)


def _on_nth(count, action):
    """A callable that runs ``action`` on its ``count``-th call."""
    calls = [0]

    def tick():
        calls[0] += 1
        if calls[0] == count:
            action()

    return tick


def install_fault(kind, value):
    """Arrange for this process to SIGKILL itself at a kill point.

    Arguments
    ---------
    kind : str
        ``step``, ``save``, ``export``, ``structure``, ``timer`` or
        ``none``.
    value : str
        The count of the event (or the seconds, for ``timer``).
    """
    if kind == "timer":
        timer = threading.Timer(float(value), _die)
        timer.daemon = True
        timer.start()
    elif kind == "step":
        import speechbrain as sb

        step = sb.Brain.optimizers_step
        tick = _on_nth(int(value), _die)

        def optimizers_step(self, *args, **kwargs):
            tick()  # after the backward pass, before the update
            return step(self, *args, **kwargs)

        sb.Brain.optimizers_step = optimizers_step
    elif kind in ("save", "export"):
        marks = ("CKPT+", "seed_") if kind == "save" else (".partial-",)
        save = torch.save
        calls = [0]

        def half_save(obj, f, *args, **kwargs):
            if isinstance(f, (str, os.PathLike)) and any(
                mark in str(f) for mark in marks
            ):
                calls[0] += 1
                if calls[0] == int(value):
                    buffer = io.BytesIO()
                    save(obj, buffer, *args, **kwargs)
                    data = buffer.getvalue()
                    Path(f).write_bytes(data[: len(data) // 2])
                    _die()
            return save(obj, f, *args, **kwargs)

        torch.save = half_save
    elif kind == "structure":
        from sb_prune.core.structure import describe
        from sb_prune.training.brain import PruningBrain

        run_hooks = PruningBrain._run_hooks
        tick = _on_nth(int(value), _die)

        def hooks_then_kill(self, *args, **kwargs):
            before = describe(self.unwrapped_modules())
            changed = run_hooks(self, *args, **kwargs)
            if describe(self.unwrapped_modules()) != before:
                tick()  # pruned, not yet saved
            return changed

        PruningBrain._run_hooks = hooks_then_kill
    elif kind != "none":
        raise ValueError(f"unknown kill point {kind}")


def child(spec, rank, argv):
    """Run ``argv`` (a script and its arguments, or ``-m module ...``)."""
    kind, _, value = spec.partition(":")
    if rank is None or os.environ.get("RANK", "0") == str(rank):
        install_fault(kind, value)
    if argv[0] == "-m":
        sys.argv = argv[1:]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.path.insert(0, str(Path(argv[0]).resolve().parent))
        sys.argv = argv
        runpy.run_path(argv[0], run_name="__main__")


# --- the harness ----------------------------------------------------------


def launch(argv, spec="none", cwd=REPO, log=None):
    """Run ``argv`` under a kill point.

    Returns
    -------
    tuple
        The return code, the seconds it ran and whether a kill point was
        reached (by any process it started).
    """
    command = [sys.executable, str(Path(__file__).resolve()), "--child"]
    marker = Path(tempfile.gettempdir()) / f"sb_prune_faults_{os.getpid()}"
    marker.unlink(missing_ok=True)
    env = dict(
        os.environ,
        PYTHONPATH=f"{REPO}:{REPO / 'benchmarks'}:{TESTS}",
        **{MARKER: str(marker)},
    )
    start = time.time()
    with open(log or os.devnull, "a") as handle:
        done = subprocess.run(
            [*command, spec, "--", *argv],
            cwd=cwd,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            timeout=900,
        )
    killed = marker.exists()
    marker.unlink(missing_ok=True)
    return done.returncode, time.time() - start, killed


def failed(what, log):
    """Raise RuntimeError with the end of the log of what failed."""
    raise RuntimeError(f"{what} failed: {Path(log).read_text()[-1500:]}")


def torchrun(argv):
    """``argv`` as the worker of two local gloo processes."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return [
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={port}",
        str(Path(__file__).resolve()),
        *argv,
    ]


def draw(kind, rng, seconds):
    """The event count (or time) of a kill point."""
    if kind == "step":
        return str(rng.randint(1, 8))
    if kind == "save":
        return str(rng.randint(1, 4))
    if kind == "export":
        return str(rng.randint(1, 2))
    if kind == "timer":
        return f"{rng.uniform(0.35, 0.8) * seconds:.2f}"
    return "1"


def zip_ok(path):
    """Whether a ``torch.save`` file is whole (its archive checks)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return archive.testzip() is None


def bad_checkpoints(save, reference):
    """Listed checkpoints of ``save`` with a file missing or truncated."""
    names = {p.name: zip_ok(p) for p in reference.iterdir()}
    bad = []
    for folder in save.glob("CKPT+*"):
        if not (folder / "CKPT.yaml").is_file():
            continue  # not a checkpoint for SpeechBrain
        for name, is_zip in names.items():
            path = folder / name
            whole = path.is_file() and (
                zip_ok(path) if is_zip else path.stat().st_size > 0
            )
            if not whole:
                bad.append(f"{folder.name}/{name}")
    return bad


def final_checkpoint(save):
    """The checkpoint folder of the last epoch (the counter's largest)."""
    folders = [f for f in save.glob("CKPT+*") if (f / "CKPT.yaml").is_file()]
    return max(folders, key=lambda f: int((f / "counter.ckpt").read_text()))


def max_difference(first, second):
    """Largest absolute difference of two state dicts (inf: other keys)."""
    if first.keys() != second.keys():
        return float("inf")
    worst = 0.0
    for key, value in first.items():
        other = second[key]
        if not torch.is_tensor(value):
            continue
        if value.shape != other.shape:
            return float("inf")
        if value.numel():
            diff = (value.double() - other.double()).abs().max().item()
            worst = max(worst, diff)
    return worst


def load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def compare_recipe(reference, resumed):
    """Structure, parameters and test scores of two ASR runs' ends."""
    ref, new = (
        final_checkpoint(reference / "save"),
        final_checkpoint(resumed / "save"),
    )
    structure = "sb_prune_structure.ckpt"
    same_structure = (ref / structure).read_text() == (
        new / structure
    ).read_text()
    diff = max_difference(load(ref / "model.ckpt"), load(new / "model.ckpt"))
    scores = [
        json.loads((run / "results.json").read_text())["test-clean"]
        for run in (reference, resumed)
    ]
    return {
        "same_structure": same_structure,
        "max_param_diff": diff,
        "test_wer": [s["WER"] for s in scores],
        "test_cer": [s["CER"] for s in scores],
        "identical": same_structure
        and diff <= TOLERANCE
        and scores[0] == scores[1],
    }


def recipe_argv(hparams, corpus, out, overrides):
    options = {**TINY, **overrides}
    return [
        "train.py",
        f"hparams/{hparams}",
        *[f"--{key}={value}" for key, value in options.items()],
        "--valid_dataloader_opts={batch_size: 8}",
        "--test_dataloader_opts={batch_size: 8}",
        f"--data_folder={corpus}",
        f"--output_folder={out}",
        "--noprogressbar",
    ]


class Tally:
    """The kills, their outcomes and the partial outputs found."""

    def __init__(self):
        self.rows = []
        self.partial_outputs_accepted = 0

    def chain(self, case, kills, run, check_partial, compare, folder):
        """Run one case's kills, restarting after each; add a row per kill.

        When a process ends without reaching its kill point (the run was
        done), or at the end, the chain of kills since the last fresh start
        is compared with the reference, and ``folder`` is deleted (the next
        kill starts a fresh run).

        Arguments
        ---------
        case : str
            The case's name.
        kills : list of str
            Kill specs, ``kind:value``.
        run : callable
            ``run(spec) -> (return code, seconds, killed)``.
        check_partial : callable
            ``() -> list`` of partial outputs a reader would accept.
        compare : callable
            ``() -> dict`` with ``identical``, after a chain's end.
        folder : pathlib.Path
            The interrupted run's folder.

        Returns
        -------
        list of dict
            Each chain's outcome.
        """
        outcomes, pending = [], []
        for spec in [*kills, None]:
            code, seconds, killed = run(spec or "none")
            if killed:
                partial = check_partial()
                self.partial_outputs_accepted += len(partial)
                pending.append(
                    {
                        "case": case,
                        "kill": spec,
                        "killed": True,
                        "seconds_before_kill": round(seconds, 1),
                        "partial_outputs": partial,
                    }
                )
                if spec is not None:
                    continue
            if spec is not None and code == 0 and not pending:
                self.rows.append({"case": case, "kill": spec, "killed": False})
                shutil.rmtree(folder, ignore_errors=True)
                continue
            outcome = {"kills": len(pending), "return_code": code}
            if code == 0:
                outcome.update(compare())
            for row in pending:
                row["lost"] = code != 0
                row["resumed_identical"] = code == 0 and outcome["identical"]
            if spec is not None:  # the kill point did not come
                outcome["finished_before"] = spec
            print(case, json.dumps(outcome), flush=True)
            outcomes.append(outcome)
            self.rows += pending
            pending = []
            shutil.rmtree(folder, ignore_errors=True)
        return outcomes


def recipe_case(tally, name, corpus, work, rng):
    """One method: reference, kill chain, export kill; return its rows."""
    hparams, overrides = METHODS[name]
    reference, resumed = work / f"{name}_ref", work / f"{name}_killed"
    log = work / f"{name}.log"
    code, seconds, _ = launch(
        recipe_argv(hparams, corpus, reference, overrides), cwd=ASR, log=log
    )
    if code != 0:
        failed(f"{name}: the reference run", log)
    kinds = [
        "step" if kind == "structure" and name == "i3d" else kind
        for kind in RECIPE_KILLS
    ]
    specs = [f"{k}:{draw(k, rng, seconds)}" for k in kinds]
    ref_ckpt = final_checkpoint(reference / "save")

    def run(spec):
        argv = recipe_argv(hparams, corpus, resumed, overrides)
        return launch(argv, spec, cwd=ASR, log=log)

    chains = tally.chain(
        name,
        specs,
        run,
        lambda: bad_checkpoints(resumed / "save", ref_ckpt),
        lambda: compare_recipe(reference, resumed),
        resumed,
    )
    return {
        "reference_seconds": round(seconds, 1),
        "chains": chains,
        "export": export_case(tally, name, reference, rng),
    }


def export_case(tally, name, reference, rng):
    """Kill ``sb-prune export`` while it writes; the rerun must match."""
    log = reference.parent / f"{name}.log"
    ref_out, out = reference / "exported", reference / "exported_killed"

    def export(run_folder, folder, spec="none"):
        argv = ["-m", "sb_prune.cli.__init__", "export"]
        argv += ["--source", str(run_folder), "--out", str(folder)]
        return launch(argv, spec, log=log)

    if export(reference, ref_out)[0] != 0:
        failed(f"{name}: the reference export", log)

    def partial():
        if not out.exists():
            return []
        return [] if same_export(ref_out, out) else [str(out)]

    return tally.chain(
        f"{name}_export",
        [f"export:{draw('export', rng, 0)}"],
        lambda spec: export(reference, out, spec),
        partial,
        lambda: {"identical": same_export(ref_out, out)},
        out,
    )


def same_export(first, second):
    """Whether two exported folders hold the same weights (all files)."""
    names = sorted(p.name for p in first.glob("*.ckpt"))
    if names != sorted(p.name for p in second.glob("*.ckpt")):
        return False
    for name in names:
        if name == "tokenizer.ckpt":
            continue
        try:
            diff = max_difference(load(first / name), load(second / name))
        except Exception:  # a truncated file  # noqa: BLE001
            return False
        if diff > TOLERANCE:
            return False
    return True


def federated_case(tally, corpus, work, rng):
    """The federated recipe: seed training, then one strategy's rounds."""
    import yaml

    overrides = yaml.safe_load(
        (FEDERATED / "hparams" / "quick_overrides.yaml").read_text()
    )
    overrides.update(num_rounds=2, strategies="[importance]")

    def argv(out):
        return [
            "federated.py",
            "hparams/federated_dropout.yaml",
            f"--data_folder={corpus}",
            f"--output_folder={out}",
            "--noprogressbar",
            *[f"--{key}={value}" for key, value in overrides.items()],
        ]

    reference, resumed = work / "federated_ref", work / "federated_killed"
    log = work / "federated.log"
    code, seconds, _ = launch(argv(reference), cwd=FEDERATED, log=log)
    if code != 0:
        failed("federated: the reference run", log)
    kinds = ["save", "step", "step", "save", "timer", "step", "save", "step"]
    specs = [
        f"{k}:{rng.randint(1, 2) if k == 'save' else draw(k, rng, seconds)}"
        for k in kinds
    ]

    def partial():
        bad = []
        for path in (resumed / "save").glob("seed_*.pt"):
            if not zip_ok(path):
                bad.append(str(path))
        return bad

    def compare():
        rows = []
        for run in (reference, resumed):
            results = json.loads((run / "results.json").read_text())
            rows.append(
                [
                    {k: v for k, v in row.items() if k != "minutes"}
                    for row in results["rows"]
                ]
            )
        diff = max_difference(
            load(reference / "save" / "seed_model.pt"),
            load(resumed / "save" / "seed_model.pt"),
        )
        return {
            "max_param_diff": diff,
            "test_wer": [run[0]["wer"] for run in rows],
            "identical": diff <= TOLERANCE and rows[0] == rows[1],
        }

    chains = tally.chain(
        "federated",
        specs,
        lambda spec: launch(argv(resumed), spec, cwd=FEDERATED, log=log),
        partial,
        compare,
        resumed,
    )
    return {"reference_seconds": round(seconds, 1), "chains": chains}


def ddp_case(tally, work, rng):
    """Two gloo processes (tests/toy_brain.py); rank 1 is killed."""
    reference, resumed = work / "ddp_ref", work / "ddp_killed"
    log = work / "ddp.log"
    script = str(TESTS / "toy_brain.py")
    code, seconds, _ = launch(
        torchrun(["--child", "none", "--", script, str(reference)]), log=log
    )
    if code != 0:
        failed("ddp: the reference run", log)
    kinds = ["step", "save", "structure", "step", "save", "step", "timer"]
    specs = [f"{k}:{draw(k, rng, seconds)}" for k in kinds]

    def run(spec):
        worker = ["--child", spec, "--rank", "1", "--", script, str(resumed)]
        return launch(torchrun(worker), log=log)

    def compare():
        result = {}
        for rank in (0, 1):
            ref_record, ref_params = load(reference / f"rank{rank}.pt")
            record, params = load(resumed / f"rank{rank}.pt")
            result[f"rank{rank}_same_structure"] = record == ref_record
            result[f"rank{rank}_max_param_diff"] = max_difference(
                ref_params, params
            )
        result["identical"] = all(
            value is True or (value is not False and value <= TOLERANCE)
            for value in result.values()
        )
        return result

    ref_ckpt = final_checkpoint(reference / "ckpt")
    chains = tally.chain(
        "ddp",
        specs,
        run,
        lambda: bad_checkpoints(resumed / "ckpt", ref_ckpt),
        compare,
        resumed,
    )
    return {"reference_seconds": round(seconds, 1), "chains": chains}


def main():
    """Run every case; print and write the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cases",
        nargs="+",
        default=[*METHODS, "federated", "ddp"],
        help="the cases to run (default: all)",
    )
    args = parser.parse_args()
    rng = random.Random(args.seed)
    start = time.time()
    tally, outcomes = Tally(), {}
    with tempfile.TemporaryDirectory(prefix="sb_prune_faults_") as tmp:
        work = Path(tmp)
        from sb_prune.data import synthesize_corpus

        corpus = synthesize_corpus(
            work / "corpus",
            progress=False,
            train_speakers=4,
            dev_speakers=2,
            test_speakers=2,
            utterances_per_speaker=10,
            seed=20240,
        )
        for case in args.cases:
            try:
                if case in METHODS:
                    outcome = recipe_case(tally, case, corpus, work, rng)
                elif case == "federated":
                    outcome = federated_case(tally, corpus, work, rng)
                else:
                    outcome = ddp_case(tally, work, rng)
            except RuntimeError as error:  # a reference run failed
                outcome = {"error": str(error)}
                print(case, outcome, flush=True)
            outcomes[case] = outcome
    killed = [row for row in tally.rows if row.get("killed")]
    fuzz = json.loads(
        (REPO / "benchmarks" / "results" / "fuzz_inputs.json").read_text()
    )
    figures = {
        **provenance(),
        "kills": len(killed),
        "resumed_identical": sum(r["resumed_identical"] for r in killed),
        "lost": sum(r["lost"] for r in killed),
        "fuzzed_inputs": fuzz["fuzzed_inputs"],
        "uncaught": fuzz["uncaught"],
        "partial_outputs_accepted": tally.partial_outputs_accepted,
        "minutes": round((time.time() - start) / 60, 1),
        "tolerance": TOLERANCE,
        "outcomes": outcomes,
        "cases": tally.rows,
    }
    summary = {
        k: v for k, v in figures.items() if k not in ("cases", "outcomes")
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        write_json(args.json, figures)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        separator = sys.argv.index("--")
        options = sys.argv[2:separator]
        rank = None
        if "--rank" in options:
            rank = options[options.index("--rank") + 1]
        child(options[0], rank, sys.argv[separator + 1 :])
    else:
        main()
