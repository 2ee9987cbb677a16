"""Preparation of real speech: LibriSpeech-layout trees and FSDD."""

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile

from sb_prune.data.real_speech import (
    prepare_fsdd,
    prepare_librispeech_trees,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def tone(path, seconds=0.5, rate=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    soundfile.write(str(path), 0.1 * np.sin(2 * np.pi * 440 * t), rate)


def chapter(root, tree, speaker, chapter_id, utterances, extra_line=None):
    folder = root / tree / speaker / chapter_id
    lines = []
    for index in range(utterances):
        utt = f"{speaker}-{chapter_id}-{index:04d}"
        tone(folder / f"{utt}.flac")
        lines.append(f"{utt} hello world {index}")
    if extra_line:
        lines.append(extra_line)
    (folder / f"{speaker}-{chapter_id}.trans.txt").write_text(
        "\n".join(lines) + "\n"
    )
    return folder


def rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_trees_anywhere_become_speaker_split_csvs(tmp_path):
    root = tmp_path / "librilight"
    chapter(root, "1h/0/clean", "19", "198", 2, extra_line="19-198-0099 GONE")
    chapter(root, "1h/1/other", "26", "495", 2)
    chapter(root, "9h/other", "32", "21625", 3)
    lonely = chapter(root, "9h/other", "40", "222", 1)
    tone(lonely / "40-222-0007.flac")  # audio without a transcript line
    summary = prepare_librispeech_trees(
        root, tmp_path / "csv", dev_speakers=1, test_speakers=1, seed=3
    )
    assert summary["trees"] == ["1h/0/clean", "1h/1/other", "9h/other"]
    assert summary["skipped"] == {
        "transcript without audio": 1,
        "audio without transcript": 1,
    }
    assert summary["utterances"]["all"] == 8
    everything = rows(tmp_path / "csv" / "all.csv")
    assert everything[0] == {
        "ID": "19-198-0000",
        "duration": "0.500",
        "wav": "$data_root/1h/0/clean/19/198/19-198-0000.flac",
        "spk_id": "19",
        "wrd": "HELLO WORLD 0",
    }
    speakers = {
        name: {row["spk_id"] for row in rows(tmp_path / "csv" / f"{name}.csv")}
        for name in ("train", "dev", "test")
    }
    assert len(speakers["dev"]) == len(speakers["test"]) == 1
    assert not speakers["train"] & (speakers["dev"] | speakers["test"])
    again = prepare_librispeech_trees(
        root, tmp_path / "again", dev_speakers=1, test_speakers=1, seed=3
    )
    assert again == summary
    for name in ("train", "dev", "test"):
        assert rows(tmp_path / "csv" / f"{name}.csv") == rows(
            tmp_path / "again" / f"{name}.csv"
        )


def test_bad_trees_are_refused_by_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="No LibriSpeech-layout tree"):
        prepare_librispeech_trees(tmp_path, tmp_path / "csv")
    folder = chapter(tmp_path, "set", "7", "70", 3)
    tone(folder / "7-70-0001.flac", rate=8000)
    with pytest.raises(ValueError, match="7-70-0001.flac is sampled at 8000"):
        prepare_librispeech_trees(tmp_path, tmp_path / "csv", 0, 0)


def test_fsdd_is_resampled_and_split_by_index(tmp_path):
    recordings = tmp_path / "recordings"
    for name in ("0_george_0", "3_jackson_12", "9_george_7"):
        tone(recordings / f"{name}.wav", seconds=0.25, rate=8000)
    tone(recordings / "readme_extra.wav", rate=8000)
    summary = prepare_fsdd(recordings, tmp_path / "csv", tmp_path / "audio")
    assert summary == {
        "utterances": {"all": 3, "train": 1, "dev": 1, "test": 1},
        "skipped": {"not <digit>_<speaker>_<index>.wav": 1},
    }
    (test,) = rows(tmp_path / "csv" / "test.csv")
    assert (test["keyword"], test["spk_id"]) == ("zero", "george")
    info = soundfile.info(str(tmp_path / "audio" / "0_george_0.wav"))
    assert info.samplerate == 16000 and info.frames == 4000
    assert test["duration"] == "0.250"


@pytest.mark.skipif(
    not (SHARED / "librilight").is_dir(),
    reason="real speech not here: ../shared/data/librilight (CI has it)",
)
def test_real_librilight_trees(tmp_path):
    summary = prepare_librispeech_trees(
        SHARED / "librilight", tmp_path, dev_speakers=2, test_speakers=4
    )
    assert summary["utterances"]["all"] == 842
    assert summary["skipped"] == {}
    assert len(summary["trees"]) == 13  # 1h/0..5/{clean,other}, 9h/other
    speakers = {row["spk_id"] for row in rows(tmp_path / "all.csv")}
    assert len(speakers) == 24
