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
        help="also write ctc_encoder.onnx (batch 1, any length), checked "
        "under ONNX Runtime (needs the onnx extra: pip install "
        "sb_prune[onnx])",
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
    )
    print(json.dumps(summary, indent=2))
