"""Hostile inputs end in clear errors (a subset of the fuzzer's cases).

``benchmarks/fuzz_inputs.py`` draws structure records and files, CTranslate2
``model.bin`` files and hooks' hparams values; each must be refused by a
ValueError, TypeError or FileNotFoundError naming the key, module or file,
or be accepted as valid.
"""

import sys
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))

import fuzz_inputs  # noqa: E402

#: Inputs of each kind here (the benchmark draws more).
PER_KIND = 40


@pytest.fixture(scope="module")
def results():
    return fuzz_inputs.run(seed=1, per_kind=PER_KIND)


def test_every_hostile_input_ends_in_a_clear_error(results):
    assert results["fuzzed_inputs"] == 4 * PER_KIND
    assert results["failures"] == []
    for row in results["rows"]:
        assert row["refused"] > row["accepted"], row


def test_an_error_that_names_nothing_counts_as_uncaught():
    def unnamed():
        raise ValueError("something is wrong")

    def deep():
        raise RuntimeError("shape '[4, 2]' is invalid for input of size 7")

    def named():
        raise ValueError("structure.json: hidden must be >= 0, got -1")

    for call, expected in [
        (unnamed, "uncaught"),
        (deep, "uncaught"),
        (named, "refused"),
        (lambda: None, "accepted"),
    ]:
        case = fuzz_inputs.Case("test", "case", call, ["structure.json"])
        assert fuzz_inputs.outcome(case)[0] == expected


def test_a_huge_dimension_in_model_bin_is_refused_before_allocating(tmp_path):
    from helpers import write_model_bin

    from sb_prune.importers.ctranslate2 import read_model_bin

    path = tmp_path / "model.bin"
    write_model_bin(path, {"w": [[1.0, 2.0]]})
    blob = bytearray(path.read_bytes())
    at = blob.index(b"w\0") + 2  # rank, then the dimensions
    blob[at + 1 : at + 5] = (2**31).to_bytes(4, "little")
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=r"model.bin: variable w of shape"):
        read_model_bin(path)
