"""README block of compressed Whisper in each runtime: measured end-to-end
speed-up against its ideal, and agreement with PyTorch
(``whisper_runtime.json``), the issue's targets as the JSON decides them.

Authors
 * sb_prune developers
"""

from .text import blocks, holds, num, paragraph, span, table

#: the issue's targets
OF_IDEAL, AGREEMENT = 0.8, 0.99


def _met(condition):
    return "met" if condition else "missed"


def main(results):
    """One row per compressed model and runtime, then the targets."""
    figures = results["whisper_runtime"]
    control = "dense (control)"
    compressed = [r for r in figures["rows"] if r["method"] != "dense"]
    rows = [
        [
            row["method"],
            row["runtime"],
            num(row["ideal_e2e"]),
            num(row["e2e_speedup"]),
            num(row["e2e_speedup"] / row["ideal_e2e"]),
            num(row["word_agreement"], 3),
        ]
        for row in compressed
    ]
    faster = [
        r
        for r in compressed
        if r["runtime"].startswith("faster-whisper") and r["method"] != control
    ]
    of_ideal = {
        (r["method"], r["runtime"]): r["e2e_speedup"] / r["ideal_e2e"]
        for r in compressed
    }
    runtimes = sorted({r["runtime"] for r in compressed})
    controls = [r["e2e_speedup"] for r in compressed if r["method"] == control]
    decoder = holds(
        all(
            of_ideal["ours-kd", runtime] < of_ideal["whole-kd", runtime]
            for runtime in runtimes
        ),
        "the model whose decoder is left dense (ours-kd) falls further "
        "short of its ideal than the one with half the decoder layers",
    )
    fp32 = [r for r in faster if r["runtime"].endswith("fp32")]
    speed = "; ".join(
        f"{r['method']} {r['runtime'].rpartition('-')[2]} "
        + _met(r["e2e_speedup"] >= OF_IDEAL * r["ideal_e2e"])
        for r in faster
    )
    agreement = "; ".join(
        f"{r['method']} " + _met(r["word_agreement"] >= AGREEMENT) for r in fp32
    )
    return blocks(
        paragraph(
            "End to end, Whisper tiny.en transcribing "
            f"{figures['utterances']} real test utterances one by one "
            "(greedy, batch 1), each compressed model against dense in the "
            "same runtime, all timed interleaved in one process "
            f"({figures['threads']} thread, medians of "
            f"{figures['repeats']}; {figures['note']}). Ideal = dense MACs "
            "/ its MACs for the tokens each model wrote in that runtime "
            "(encoder, and decoder steps with their cache, attention "
            "products included: `sb_prune.families.whisper.macs`); "
            "agreement = 1 - word edit distance to PyTorch's transcripts of "
            f"the same model (`{figures['command']}`):"
        ),
        table(
            [
                "model",
                "runtime",
                "ideal e2e",
                "measured e2e",
                "of ideal",
                "word agreement",
            ],
            rows,
        ),
        paragraph(
            f"In every runtime {decoder}: decoding a token at batch 1 costs "
            "time that its MACs do not weigh (the whole token table read "
            "from memory to score the vocabulary at each step, the overhead "
            "of each operation), which cutting decoder layers and the "
            "table's rank reduces. "
            + (
                f"The {control} rows time the dense model against itself: "
                f"{span(controls)}, how far apart equal models time on this "
                "machine, so a verdict within that spread is not decided. "
                if controls
                else ""
            )
            + "Targets: faster-whisper "
            f"float32 agreement >= {AGREEMENT}: {agreement}; measured >= "
            f"{OF_IDEAL} x ideal in float32 and int8: {speed}."
        ),
    )
