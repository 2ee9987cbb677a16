"""``sb-prune report``: a folder of recipe runs as REPORT.md with plots.

Authors
 * sb_prune developers
"""

from sb_prune.reporting.render import render_report


def add_arguments(parser):
    """Declare the ``sb-prune report`` options."""
    parser.add_argument("results_dir", help="folder of recipe runs")
    parser.add_argument("--out", help="report folder (default: results_dir)")
    parser.add_argument(
        "--no-latency",
        action="store_true",
        help="skip loading the models to measure MACs and latency",
    )


def main(args):
    """Render the report and print its path."""
    path = render_report(args.results_dir, args.out, not args.no_latency)
    print(f"Report written to {path}")
