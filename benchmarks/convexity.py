"""Benchmark graph convexity: sb_prune against the nnconvexity reference.

Both implementations score the same embeddings in one run, each in its own
subprocess, so that wall time and peak memory are measured alike:

* wall time: the convexity call only (imports and data loading excluded);
* peak memory: the subprocess's peak resident set size
  (``getrusage(RUSAGE_SELF).ru_maxrss`` at the end), and the part of it
  above the level reached after imports and data loading ("extra").

The reference (``nnconvexity.graph.compute_graph_convexity``) reports the
mean over all sampled paths ("pooled"); sb_prune reports that and the mean
over classes ("score"), so pooled is compared with pooled and the class
means are compared too.  Both sample their pairs independently, so the
scores differ by sampling noise (a few tenths of a point at N = 5,000).

Synthetic data: a Gaussian mixture in a 16-dimensional latent space whose
classes partly overlap, mapped by random sinusoidal features onto a curved
manifold in ``--dims`` dimensions, plus isotropic noise.

Real data (``--states``, repeatable): the pooled hidden states that the
``ConvexityScoring`` hook saves with ``save_states: True`` (for example
``recipes/LibriSpeech/classification/results/.../convexity_states_start.npz``,
arrays ``states [L+1, N, D]`` and ``labels``); every depth is scored by
both implementations, so the whole convexity curve is compared.

Usage::

    python benchmarks/convexity.py --quick
    python benchmarks/convexity.py --json benchmarks/out/convexity.json \
        --states keyword_states.npz --states speaker_states.npz
    python benchmarks/convexity.py --embeddings layer6.npz  # arrays x, y
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np


def synthetic_embeddings(n_points, dims, classes, separation, seed):
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n_points) % classes)
    latent_dims = 16
    centres = separation * rng.standard_normal((classes, latent_dims))
    latent = centres[labels] + rng.standard_normal((n_points, latent_dims))
    mixing = rng.standard_normal((latent_dims, dims)) / np.sqrt(latent_dims)
    phase = rng.uniform(0.0, 2.0 * np.pi, dims)
    points = np.sin(0.7 * latent @ mixing + phase)
    points += 0.05 * rng.standard_normal((n_points, dims))
    return points.astype(np.float32), labels


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_ours(x, y, args):
    import torch

    from sb_prune.analysis import graph_convexity

    torch.set_num_threads(args.threads)
    start_rss = peak_rss_mb()
    start = time.perf_counter()
    result = graph_convexity(
        x,
        y,
        n_neighbors=args.n_neighbors,
        max_pairs=args.max_pairs,
        seed=args.seed,
        device=args.device,
    )
    seconds = time.perf_counter() - start
    return {
        "pooled": result.pooled,
        "class_mean": result.score,
        "n_paths": int(sum(result.n_pairs.values())),
        "seconds": seconds,
        "start_rss_mb": start_rss,
    }


def run_reference(x, y, args):
    from nnconvexity.graph import compute_graph_convexity

    # The package selects class i of set(labels) by labels == i: 0..C-1.
    _, codes = np.unique(y, return_inverse=True)
    np.random.seed(args.seed)
    start_rss = peak_rss_mb()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Couldn't reach some vertices"
        pooled, per_class = compute_graph_convexity(
            x,
            codes,
            n_neighbors=args.n_neighbors,
            max_n_paths=args.max_pairs,
            n_parallel=1,
        )
    seconds = time.perf_counter() - start
    counts = np.bincount(codes)
    return {
        "pooled": float(pooled),
        "class_mean": float(np.mean([float(v) for v in per_class.values()])),
        "n_paths": int(np.minimum(counts * (counts - 1), args.max_pairs).sum()),
        "seconds": seconds,
        "start_rss_mb": start_rss,
    }


def load_points(path, depth=None):
    """Points and labels of an .npz: x and y, or states[depth] and labels."""
    data = np.load(path, allow_pickle=False)
    if depth is None:
        return data["x"], data["y"]
    return data["states"][depth], data["labels"]


def worker(args):
    """Score args.data with one implementation; print a JSON line."""
    x, y = load_points(args.data, args.depth)
    run = run_ours if args.worker == "ours" else run_reference
    figures = run(x, y, args)
    figures["peak_rss_mb"] = peak_rss_mb()
    figures["extra_rss_mb"] = figures["peak_rss_mb"] - figures["start_rss_mb"]
    print(json.dumps(figures))


def measure(name, data_path, args, depth=None):
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        name,
        "--data",
        data_path,
        "--n-neighbors",
        str(args.n_neighbors),
        "--max-pairs",
        str(args.max_pairs),
        "--seed",
        str(args.seed),
        "--threads",
        str(args.threads),
    ]
    if args.device:
        command += ["--device", args.device]
    if depth is not None:
        command += ["--depth", str(depth)]
    print(f"running {name} ...", file=sys.stderr, flush=True)
    output = subprocess.run(
        command, check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def print_table(report):
    ours, ref = report["ours"], report["reference"]
    rows = [
        ("pooled score (%)", ours["pooled"], ref["pooled"]),
        ("class-mean score (%)", ours["class_mean"], ref["class_mean"]),
        ("paths", ours["n_paths"], ref["n_paths"]),
        ("wall time (s)", ours["seconds"], ref["seconds"]),
        ("peak RSS (MiB)", ours["peak_rss_mb"], ref["peak_rss_mb"]),
        ("extra RSS (MiB)", ours["extra_rss_mb"], ref["extra_rss_mb"]),
    ]
    print(
        f"\ngraph convexity, N={report['n_points']}, D={report['dims']}, "
        f"classes={report['classes']}, k={report['n_neighbors']}, "
        f"max_pairs={report['max_pairs']}, data={report['data']}"
    )
    print(f"{'':24}{'sb_prune':>12}{'nnconvexity':>14}")
    for label, mine, theirs in rows:
        digits = 0 if label == "paths" else 2
        print(f"{label:24}{mine:>12.{digits}f}{theirs:>14.{digits}f}")
    print(f"{'speedup_vs_reference':24}{report['speedup_vs_reference']:>12.1f}")
    print(f"{'|pooled difference|':24}{report['abs_diff_pooled']:>12.2f}")
    print(f"{'|class-mean diff.|':24}{report['abs_diff_class_mean']:>12.2f}")


def compare(data_path, args, depth=None):
    """Score one set of points with both implementations, side by side."""
    report = {"ours": measure("ours", data_path, args, depth)}
    if args.skip_reference:
        return report
    report["reference"] = measure("reference", data_path, args, depth)
    ours, ref = report["ours"], report["reference"]
    report.update(
        score_ours=ours["class_mean"],
        pooled_ours=ours["pooled"],
        score_reference=ref["pooled"],
        abs_diff_pooled=abs(ours["pooled"] - ref["pooled"]),
        abs_diff_class_mean=abs(ours["class_mean"] - ref["class_mean"]),
        time_ours_s=ours["seconds"],
        time_reference_s=ref["seconds"],
        speedup_vs_reference=ref["seconds"] / ours["seconds"],
        peak_rss_ours_mb=ours["peak_rss_mb"],
        peak_rss_reference_mb=ref["peak_rss_mb"],
    )
    return report


def compare_states(path, args):
    """Compare the implementations at every depth of saved hidden states."""
    x, y = load_points(path, 0)
    n_depths = np.load(path, allow_pickle=False)["states"].shape[0]
    depths = args.depths or range(n_depths)
    if args.quick and not args.depths:
        depths = sorted({0, n_depths - 1})
    report = {
        "data": path,
        "n_points": int(x.shape[0]),
        "dims": int(x.shape[1]),
        "classes": int(len(np.unique(y))),
        "depths": [],
    }
    for depth in depths:
        print(f"{path}: depth {depth}", file=sys.stderr, flush=True)
        report["depths"].append({"depth": depth, **compare(path, args, depth)})
    if args.skip_reference:
        return report
    rows = report["depths"]
    ours = [row["pooled_ours"] for row in rows]
    ref = [row["score_reference"] for row in rows]
    time_ours = sum(row["time_ours_s"] for row in rows)
    time_ref = sum(row["time_reference_s"] for row in rows)
    report.update(
        scores_ours=[row["score_ours"] for row in rows],
        pooled_ours=ours,
        scores_reference=ref,
        max_abs_diff_pooled=max(row["abs_diff_pooled"] for row in rows),
        max_abs_diff_class_mean=max(row["abs_diff_class_mean"] for row in rows),
        peak_depth_ours=int(rows[int(np.argmax(ours))]["depth"]),
        peak_depth_reference=int(rows[int(np.argmax(ref))]["depth"]),
        time_ours_s=time_ours,
        time_reference_s=time_ref,
        speedup_vs_reference=time_ref / time_ours,
        peak_rss_ours_mb=max(row["peak_rss_ours_mb"] for row in rows),
        peak_rss_reference_mb=max(row["peak_rss_reference_mb"] for row in rows),
    )
    return report


def print_states_table(report):
    print(
        f"\nreal embeddings {report['data']}: N={report['n_points']}, "
        f"D={report['dims']}, classes={report['classes']}"
    )
    print(
        f"{'depth':>6}{'pooled ours':>13}{'pooled ref':>12}{'class ours':>12}"
        f"{'|diff|':>8}{'t ours (s)':>12}{'t ref (s)':>11}"
    )
    for row in report["depths"]:
        print(
            f"{row['depth']:>6}{row['pooled_ours']:>13.2f}"
            f"{row['score_reference']:>12.2f}{row['score_ours']:>12.2f}"
            f"{row['abs_diff_pooled']:>8.2f}{row['time_ours_s']:>12.3f}"
            f"{row['time_reference_s']:>11.3f}"
        )
    print(
        f"peak depth ours/reference: {report['peak_depth_ours']}/"
        f"{report['peak_depth_reference']}, max |pooled diff| "
        f"{report['max_abs_diff_pooled']:.2f}, speedup "
        f"{report['speedup_vs_reference']:.1f}x, peak RSS "
        f"{report['peak_rss_ours_mb']:.0f}/{report['peak_rss_reference_mb']:.0f}"
        " MiB"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=1000")
    parser.add_argument("--json", help="write all figures to this file")
    parser.add_argument("--embeddings", help=".npz with arrays x and y")
    parser.add_argument(
        "--states",
        action="append",
        default=[],
        help=".npz with states [L+1, N, D] and labels (repeatable)",
    )
    parser.add_argument(
        "--depths",
        type=int,
        nargs="+",
        help="depths of --states to score (default: all; --quick: 0, last)",
    )
    parser.add_argument("--n-points", type=int, default=5000)
    parser.add_argument("--dims", type=int, default=768)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--separation", type=float, default=0.7)
    parser.add_argument("--n-neighbors", type=int, default=10)
    parser.add_argument("--max-pairs", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", help="device of our k-NN search")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--worker", choices=["ours", "reference"])
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--depth", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.quick:
        args.n_points, args.max_pairs = 1000, 2000

    with tempfile.TemporaryDirectory() as tmp:
        if args.embeddings:
            data_path, data_name = args.embeddings, args.embeddings
        else:
            x, y = synthetic_embeddings(
                args.n_points, args.dims, args.classes, args.separation, 0
            )
            data_path = os.path.join(tmp, "embeddings.npz")
            np.savez(data_path, x=x, y=y)
            data_name = f"synthetic (separation {args.separation})"
        x, y = load_points(data_path)
        report = {
            "data": data_name,
            "n_points": int(x.shape[0]),
            "dims": int(x.shape[1]),
            "classes": int(len(np.unique(y))),
            "n_neighbors": args.n_neighbors,
            "max_pairs": args.max_pairs,
            "seed": args.seed,
            "cpu_count": os.cpu_count(),
            "load_average_start": os.getloadavg()[0],
            "memory_measure": "subprocess ru_maxrss; extra = above the "
            "level after imports and data loading",
            **compare(data_path, args),
        }
    report["recipe"] = [compare_states(path, args) for path in args.states]
    report["load_average_end"] = os.getloadavg()[0]
    if args.skip_reference:
        print(json.dumps(report, indent=2))
        return report
    print_table(report)
    for states in report["recipe"]:
        print_states_table(states)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
    return report


if __name__ == "__main__":
    main()
