"""``sb-prune export``: a recipe run as a SpeechBrain pretrained-model folder.

Authors
 * sb_prune developers
"""

import json

from sb_prune.deploy.pretrained import TORCHSCRIPT, export_pretrained


def add_arguments(parser):
    """Declare the ``sb-prune export`` options."""
    parser.add_argument(
        "--source",
        required=True,
        help="output folder of a finished recipe run (CTC or "
        "encoder-decoder, SpeechBrain LibriSpeech-style hparams, or "
        "SpeechBrain's Whisper recipe: a WhisperASR folder)",
    )
    parser.add_argument("--out", required=True, help="folder to write")
    parser.add_argument(
        "--min-key", default="WER", help="checkpoint metric (default WER)"
    )
    parser.add_argument(
        "--torchscript",
        action="store_true",
        help=f"also write {TORCHSCRIPT} and time it against the model",
    )
    parser.add_argument(
        "--onnx",
        action="store_true",
        help="also write ctc_encoder.onnx (batch 1, any length); Whisper "
        "runs: onnx/, the encoder, the decoder with its key/value cache and "
        "the greedy search's rules for ONNX Runtime; checked under ONNX "
        "Runtime (needs the onnx extra: pip install sb_prune[onnx])",
    )
    parser.add_argument(
        "--ctranslate2",
        nargs="?",
        const="float32",
        default=None,
        metavar="WEIGHTS",
        help="Whisper runs: also write ctranslate2/, the model for "
        "CTranslate2 and faster-whisper, its weights float32 (default) or "
        "int8, float16... (needs the ctranslate2 extra: pip install "
        "sb_prune[ctranslate2])",
    )
    parser.add_argument(
        "--pad-heads",
        action="store_true",
        help="with --ctranslate2: attention blocks of the encoder (or "
        "decoder) that kept different head counts get zero heads up to "
        "the largest (exact; CTranslate2 holds one count per stack)",
    )
    parser.add_argument(
        "--dense-table",
        action="store_true",
        help="with --ctranslate2: a low-rank token table is multiplied "
        "back into a dense one (the same scores; CTranslate2 holds one "
        "dense table, so its saving is lost there)",
    )
    parser.add_argument(
        "--search",
        default=None,
        help="encoder-decoder runs: the hparams key of the beam searcher "
        "to decode with (default: valid_search, else test_search; Whisper "
        "runs: test_search, else valid_search)",
    )


def main(args):
    """Export and print what was written."""
    summary = export_pretrained(
        args.source,
        args.out,
        min_key=args.min_key,
        torchscript=args.torchscript,
        search=args.search,
        onnx=args.onnx,
        ctranslate2=_ctranslate2_options(args),
    )
    print(json.dumps(summary, indent=2))


def _ctranslate2_options(args):
    """``export_ctranslate2``'s options from the command line, or None."""
    if args.ctranslate2 is None:
        for given, option in (
            (args.pad_heads, "--pad-heads"),
            (args.dense_table, "--dense-table"),
        ):
            if given:
                raise ValueError(f"export: {option} goes with --ctranslate2")
        return None
    return {
        "quantization": args.ctranslate2,
        "pad_heads": args.pad_heads,
        "dense_table": args.dense_table,
    }
