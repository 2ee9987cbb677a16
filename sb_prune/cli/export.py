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
        help="output folder of a finished recipes/LibriSpeech/ASR run",
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


def main(args):
    """Export and print what was written."""
    summary = export_pretrained(
        args.source,
        args.out,
        min_key=args.min_key,
        torchscript=args.torchscript,
    )
    print(json.dumps(summary, indent=2))
