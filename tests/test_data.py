"""Tests of the synthetic LibriSpeech-format corpus (sb_prune.data)."""

import collections
import os
import random
import re

import pytest
import soundfile as sf
from speechbrain.dataio.dataio import read_audio

from sb_prune import cli
from sb_prune.data import (
    KEYWORDS,
    LABEL_COLUMNS,
    SPLITS,
    TEMPLATES,
    VOCABULARY,
    read_labels,
    summarize_labels,
    synthesize_corpus,
)
from sb_prune.data import synthesize as synth
from sb_prune.data.espeak import Espeak
from sb_prune.data.grammar import MAX_WORDS, MIN_WORDS, sample_sentences

SMALL = dict(
    train_speakers=2, dev_speakers=1, test_speakers=1, utterances_per_speaker=3
)


def corpus_files(root):
    """Relative path -> bytes of every file under a corpus folder."""
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as file:
                files[os.path.relpath(path, root)] = file.read()
    return files


def flac_paths(root):
    return sorted(
        os.path.join(folder, name)
        for folder, _, names in os.walk(root)
        for name in names
        if name.endswith(".flac")
    )


def test_layout_and_transcripts(tiny_corpus, tiny_corpus_config):
    assert tiny_corpus.name == "LibriSpeech"
    assert sorted(
        p.name for p in tiny_corpus.iterdir() if p.is_dir()
    ) == sorted(SPLITS)
    per_speaker = tiny_corpus_config["utterances_per_speaker"]
    n_utterances = 0
    for split in SPLITS:
        for speaker in (tiny_corpus / split).iterdir():
            assert speaker.name.isdigit()
            chapters = sorted(speaker.iterdir())
            assert len(chapters) == 2
            n_speaker = 0
            for chapter in chapters:
                prefix = f"{speaker.name}-{chapter.name}"
                trans = chapter / f"{prefix}.trans.txt"
                lines = trans.read_text(encoding="utf-8").splitlines()
                ids = [line.split(" ", 1)[0] for line in lines]
                assert ids == [f"{prefix}-{i:04d}" for i in range(len(lines))]
                flacs = sorted(p.name for p in chapter.glob("*.flac"))
                assert flacs == [f"{uid}.flac" for uid in ids]
                assert {p.name for p in chapter.iterdir()} == set(flacs) | {
                    trans.name
                }
                for line in lines:
                    words = line.split(" ")[1:]
                    assert re.fullmatch(r"[A-Z ]+", " ".join(words))
                    assert MIN_WORDS <= len(words) <= MAX_WORDS
                n_speaker += len(lines)
            assert n_speaker == per_speaker
            n_utterances += n_speaker
    assert n_utterances == len(read_labels(tiny_corpus))


def test_audio_is_16k_mono_flac(tiny_corpus):
    paths = flac_paths(tiny_corpus)
    for path in paths[:: max(1, len(paths) // 10)]:
        info = sf.info(path)
        assert (info.format, info.subtype) == ("FLAC", "PCM_16")
        assert (info.samplerate, info.channels) == (16000, 1)
        audio = read_audio(path)
        assert audio.dim() == 1
        assert 0.5 < len(audio) / 16000 < 6
        assert 0.01 < audio.abs().max() <= 1


def test_labels_match_corpus(tiny_corpus):
    labels = read_labels(tiny_corpus)
    assert set(labels) == {
        os.path.basename(p)[: -len(".flac")] for p in flac_paths(tiny_corpus)
    }
    for uid, row in labels.items():
        assert tuple(row) == LABEL_COLUMNS
        speaker, chapter, _ = uid.split("-")
        assert (row["speaker"], row["chapter"]) == (speaker, chapter)
        path = tiny_corpus / row["split"] / speaker / chapter
        assert (path / f"{uid}.flac").exists()
        words = row["transcript"].split()
        assert row["n_words"] == len(words)
        assert words.count(row["keyword"].upper()) == 1
        assert row["template"] in TEMPLATES
        assert row["kind"] == TEMPLATES[row["template"]][0]
        assert 135 <= row["rate"] <= 195
        assert 15 <= row["snr_db"] <= 35
        assert row["voice"].split("+")[1] not in ("Andrea", "Alicia")
        assert sf.info(str(path / f"{uid}.flac")).duration == pytest.approx(
            row["duration_s"], abs=1e-3
        )


def test_transcripts_match_labels(tiny_corpus):
    labels = read_labels(tiny_corpus)
    for trans in tiny_corpus.glob("*/*/*/*.trans.txt"):
        for line in trans.read_text(encoding="utf-8").splitlines():
            uid, text = line.split(" ", 1)
            assert labels[uid]["transcript"] == text


def test_speakers_disjoint_across_splits(tiny_corpus, tiny_corpus_config):
    speakers = collections.defaultdict(set)
    voices = collections.defaultdict(set)
    for row in read_labels(tiny_corpus).values():
        speakers[row["split"]].add(row["speaker"])
        voices[row["split"], row["speaker"]].add(
            (row["voice"], row["rate"], row["pitch"], row["pitch_range"])
        )
    assert len(speakers["train-clean-100"]) == 4
    assert len(speakers["dev-clean"]) == len(speakers["test-clean"]) == 2
    for first in SPLITS:
        for second in SPLITS:
            if first != second:
                assert not speakers[first] & speakers[second]
    on_disk = {
        split: {p.name for p in (tiny_corpus / split).iterdir()}
        for split in SPLITS
    }
    assert on_disk == dict(speakers)
    # One voice per speaker, all speakers different.
    assert all(len(v) == 1 for v in voices.values())
    assert len({next(iter(v)) for v in voices.values()}) == len(voices)


def test_keywords_and_templates_balanced(tiny_corpus):
    rows = list(read_labels(tiny_corpus).values())
    for split in SPLITS:
        in_split = [row for row in rows if row["split"] == split]
        for column, names in (("keyword", KEYWORDS), ("template", TEMPLATES)):
            counts = collections.Counter(row[column] for row in in_split)
            full = [counts[name] for name in names]
            assert max(full) - min(full) <= 1, (split, column, counts)


def test_grammar_vocabulary_and_variety():
    assert 150 <= len(VOCABULARY) <= 250
    assert len(set(KEYWORDS)) == 10
    sentences = sample_sentences(random.Random(0), 3000)
    for sentence in sentences:
        assert set(sentence.words) <= set(VOCABULARY)
        assert sum(word in KEYWORDS for word in sentence.words) == 1
        assert MIN_WORDS <= len(sentence.words) <= MAX_WORDS
    assert len({s.words for s in sentences}) > 0.9 * len(sentences)
    assert {s.kind for s in sentences} == {"statement", "question", "command"}


def test_same_seed_same_bytes(tiny_corpus, tiny_corpus_config, tmp_path):
    # Loading espeak-ng in this process must not leak into the workers.
    Espeak().synthesize("some other text first", voice="en+f2")
    again = synthesize_corpus(
        tmp_path, processes=1, progress=False, **tiny_corpus_config
    )
    assert corpus_files(again) == corpus_files(tiny_corpus)


def test_different_seed_different_corpus(tmp_path):
    first = corpus_files(
        synthesize_corpus(tmp_path / "a", seed=1, progress=False, **SMALL)
    )
    second = corpus_files(
        synthesize_corpus(tmp_path / "b", seed=2, progress=False, **SMALL)
    )
    assert first.keys() != second.keys()
    first_audio = sorted(v for k, v in first.items() if k.endswith(".flac"))
    second_audio = sorted(v for k, v in second.items() if k.endswith(".flac"))
    assert not set(first_audio) & set(second_audio)


def test_cache_hit_rewrites_nothing(
    tiny_corpus, tiny_corpus_config, monkeypatch
):
    def fail(*args, **kwargs):
        raise AssertionError("a cached corpus was synthesised again")

    monkeypatch.setattr(synth, "_run_workers", fail)
    monkeypatch.setattr(synth, "find_espeak", fail)
    stamps = {
        path: os.stat(path).st_mtime_ns for path in flac_paths(tiny_corpus)
    }
    root = synthesize_corpus(tiny_corpus.parent, **tiny_corpus_config)
    assert root == str(tiny_corpus)
    assert stamps == {path: os.stat(path).st_mtime_ns for path in stamps}


def test_partial_or_different_corpus_is_regenerated(tmp_path):
    root = synthesize_corpus(tmp_path, progress=False, **SMALL)
    reference = corpus_files(root)
    os.remove(os.path.join(root, synth.DONE_FILE))
    os.remove(flac_paths(root)[0])
    synthesize_corpus(tmp_path, progress=False, **SMALL)
    assert corpus_files(root) == reference

    bigger = dict(SMALL, train_speakers=3)
    synthesize_corpus(tmp_path, progress=False, **bigger)
    labels = read_labels(root)
    assert len(labels) == 5 * 3
    assert set(labels) == {
        os.path.basename(p)[: -len(".flac")] for p in flac_paths(root)
    }


def test_foreign_folder_is_not_overwritten(tmp_path):
    (tmp_path / "LibriSpeech" / "train-clean-100").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="did not write"):
        synthesize_corpus(tmp_path, progress=False, **SMALL)
    assert (tmp_path / "LibriSpeech" / "train-clean-100").is_dir()


@pytest.mark.parametrize(
    "argument, value",
    [
        ("train_speakers", 0),
        ("dev_speakers", -1),
        ("test_speakers", 1.5),
        ("utterances_per_speaker", 0),
        ("processes", 0),
        ("seed", "x"),
    ],
)
def test_bad_arguments_name_the_argument(tmp_path, argument, value):
    with pytest.raises(ValueError, match=argument):
        synthesize_corpus(tmp_path, **dict(SMALL, **{argument: value}))
    assert not (tmp_path / "LibriSpeech").exists()


def test_unwritable_output_names_the_path(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError, match="a_file"):
        synthesize_corpus(blocker / "corpus", progress=False, **SMALL)


def test_missing_library_says_how_to_install(tmp_path, monkeypatch):
    import espeakng_loader

    missing = str(tmp_path / "nowhere" / "libespeak-ng.so")
    monkeypatch.setattr(espeakng_loader, "get_library_path", lambda: missing)
    with pytest.raises(OSError, match="pip install espeakng-loader") as error:
        synthesize_corpus(tmp_path / "out", progress=False, **SMALL)
    assert missing in str(error.value)
    with pytest.raises(OSError, match="pip install espeakng-loader"):
        Espeak()


def test_unloadable_library_says_how_to_install(tmp_path):
    fake = tmp_path / "libespeak-ng.so"
    fake.write_bytes(b"not a shared library")
    with pytest.raises(OSError, match="pip install espeakng-loader") as error:
        Espeak(library_path=str(fake))
    assert str(fake) in str(error.value)


def test_unknown_voices_are_rejected():
    engine = Espeak()
    with pytest.raises(ValueError, match="Alexx"):
        engine.synthesize("hello", voice="en-us+Alexx")
    with pytest.raises(ValueError, match="xx-yy"):
        engine.synthesize("hello", voice="xx-yy")


def test_summary_counts(tiny_corpus):
    summary = summarize_labels(read_labels(tiny_corpus))
    assert summary["utterances"] == 80
    assert summary["train-clean-100_utterances"] == 40
    assert 0 <= summary["test_sentences_in_train"] <= 2
    assert summary["distinct_sentences"] >= 75
    assert 1 < summary["minutes"] < 10


def test_cli_reports_cached_corpus(tiny_corpus, tiny_corpus_config, capsys):
    config = tiny_corpus_config
    status = cli.main(
        [
            "synth",
            "--out",
            str(tiny_corpus.parent),
            "--train-speakers",
            str(config["train_speakers"]),
            "--dev-speakers",
            str(config["dev_speakers"]),
            "--test-speakers",
            str(config["test_speakers"]),
            "--utterances-per-speaker",
            str(config["utterances_per_speaker"]),
            "--seed",
            str(config["seed"]),
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert str(tiny_corpus) in out
    assert "cached" in out


def test_cli_generates_and_reports_speed(tmp_path, capsys):
    args = ["synth", "--out", str(tmp_path), "--train-speakers", "1"]
    args += ["--dev-speakers", "1", "--test-speakers", "1"]
    args += ["--utterances-per-speaker", "2", "--processes", "1"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "utterances/s" in out
    assert len(read_labels(tmp_path / "LibriSpeech")) == 6
