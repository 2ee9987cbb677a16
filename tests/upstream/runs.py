"""Run the recipes of this folder as users run theirs, and read their logs.

* :func:`logged_tests`: the ``test`` lines of a run's ``train_log.txt``;
  :func:`newest_structure`: the structure record of its newest checkpoint.
* :func:`write_whisper_recipe`: a Whisper recipe (by default
  ``train_with_whisper.py`` and ``hparams/train_hf_whisper.yaml``) copied
  into a folder of its own, as it is (the dense run) or with the README's
  edits: the Brain's base class becomes ``sb_prune.PruningBrain``,
  ``freeze_encoder`` becomes False and a fragment, such as
  :func:`distillation_fragment`, is appended.
* :func:`whisper_data`: CSVs of a few real utterances of each split
  (Libri-Light, split by speaker), as the recipe's overrides.
* :func:`run_whisper`: run the copied recipe.

The tests and ``benchmarks/upstream_whisper.py`` use them.
"""

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
WHISPER_SCRIPT = HERE / "train_with_whisper.py"
WHISPER_HPARAMS = HERE / "hparams" / "train_hf_whisper.yaml"
CTC_SCRIPT = HERE / "train_ctc_with_whisper.py"
CTC_HPARAMS = HERE / "hparams" / "train_hf_whisper_encoder.yaml"
FRAGMENT = HERE.parents[1] / "hparams" / "distillation.yaml"

#: The README's edits: (original, edited) text, each there exactly once.
SCRIPT_EDITS = (
    (
        "import speechbrain as sb\n",
        "import sb_prune\nimport speechbrain as sb\n",
    ),
    ("class ASR(sb.Brain):", "class ASR(sb_prune.PruningBrain):"),
)
HPARAMS_EDITS = (("freeze_encoder: True", "freeze_encoder: False"),)


def logged_tests(output):
    """The ``test`` lines of the run's train log, as dicts of floats."""
    lines = Path(output, "train_log.txt").read_text().splitlines()
    found = []
    for line in lines:
        if "test loss" in line:
            pairs = re.findall(r"test (\w+): ([0-9.e+-]+)", line)
            found.append({key: float(value) for key, value in pairs})
    return found


def newest_structure(output):
    """The structure record of the run's newest checkpoint."""
    from speechbrain.utils.checkpoints import Checkpointer

    from sb_prune.core.checkpoints import read_structure

    checkpointer = Checkpointer(Path(output) / "save")
    return read_structure(checkpointer.find_checkpoint())


def _edit(text, edits, name):
    for old, new in edits:
        assert text.count(old) == 1, f"{name}: {old!r} is not there once"
        text = text.replace(old, new)
    return text


def distillation_fragment(substitutions=()):
    """``hparams/distillation.yaml``, with ``(regex, replacement)`` pairs
    applied (each must match)."""
    fragment = FRAGMENT.read_text()
    for old, new in substitutions:
        assert re.search(old, fragment), old
        fragment = re.sub(old, new, fragment)
    return fragment


def write_whisper_recipe(
    folder,
    fragment=None,
    script=WHISPER_SCRIPT,
    hparams=WHISPER_HPARAMS,
    hparams_edits=HPARAMS_EDITS,
):
    """Copy a Whisper recipe of this folder into ``folder``.

    ``script`` goes with ``train_with_whisper.py`` (whose steps the CTC
    recipe uses), ``hparams`` as ``hparams.yaml``. With a ``fragment``
    (YAML text), the README's edits: the script's Brain becomes a
    PruningBrain, ``hparams_edits`` change the hparams file, the fragment
    is appended. Returns the copied script's path.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for path in {WHISPER_SCRIPT, script}:
        text = path.read_text()
        if fragment is not None and path == script:
            text = _edit(text, SCRIPT_EDITS, path.name)
        (folder / path.name).write_text(text)
    text = hparams.read_text()
    if fragment is not None:
        text = _edit(text, hparams_edits, hparams.name) + "\n" + fragment
    (folder / "hparams.yaml").write_text(text)
    return folder / script.name


def whisper_data(root, folder, train, dev, test):
    """CSVs of ``train``, ``dev`` and ``test`` utterances under ``root``.

    The LibriSpeech-layout trees under ``root`` are split by speaker as
    the recipe splits them (its default ``dev_speakers``,
    ``test_speakers`` and ``split_seed``); each CSV holds evenly spaced
    rows of its split (so several speakers). Returns the recipe's
    overrides for them (``data_folder``, ``train_csv``, ``valid_csv``,
    ``test_csv``, ``skip_prep``).
    """
    from sb_prune.data.real_speech import prepare_librispeech_trees

    folder = Path(folder)
    prepare_librispeech_trees(root, folder)
    paths = {}
    for split, count in (("train", train), ("dev", dev), ("test", test)):
        with open(folder / f"{split}.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        chosen = [rows[i * len(rows) // count] for i in range(count)]
        paths[split] = folder / f"{split}_{count}.csv"
        with open(paths[split], "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(chosen)
    return {
        "data_folder": str(root),
        "train_csv": str(paths["train"]),
        "valid_csv": str(paths["dev"]),
        "test_csv": [str(paths["test"])],
        "skip_prep": "True",
    }


def _override(value):
    if isinstance(value, list):
        return "[" + ",".join(value) + "]"
    return value


def run_whisper(script, whisper, output, data, *args, threads=None):
    """Run a copied Whisper recipe on a Whisper folder and ``data``.

    ``data`` is :func:`whisper_data`'s overrides, ``args`` more of them;
    ``threads`` its ``OMP_NUM_THREADS`` (default: this process's).
    The run must succeed; what it prints goes to ``stdout.txt`` in
    ``output``.
    """
    script, output = Path(script), Path(output)
    command = [
        sys.executable,
        script.name,
        "hparams.yaml",
        f"--whisper_hub={whisper}",
        f"--output_folder={output}",
        *(f"--{key}={_override(value)}" for key, value in data.items()),
        "--noprogressbar",
        *args,
    ]
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    output.mkdir(parents=True, exist_ok=True)
    log = output / "stdout.txt"
    with open(log, "w") as handle:
        done = subprocess.run(
            command,
            cwd=script.parent,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    assert done.returncode == 0, log.read_text()[-4000:]
