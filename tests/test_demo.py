"""The demo's own pieces (the runs it chains are tested elsewhere)."""

import csv

import pytest

from sb_prune.cli.demo import subset_csv


def test_subset_csv_keeps_order_and_is_seeded(tmp_path):
    source = tmp_path / "all.csv"
    with open(source, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ID", "wrd"])
        writer.writerows([f"u{i:02d}", f"WORD {i}"] for i in range(30))
    first = subset_csv(source, tmp_path / "a.csv", 10, seed=3)
    again = subset_csv(source, tmp_path / "b.csv", 10, seed=3)
    other = subset_csv(source, tmp_path / "c.csv", 10, seed=4)
    rows = list(csv.DictReader(open(first)))
    assert len(rows) == 10 and list(rows[0]) == ["ID", "wrd"]
    ids = [r["ID"] for r in rows]
    assert ids == sorted(ids)
    assert first.read_text() == again.read_text() != other.read_text()
    everything = subset_csv(source, tmp_path / "d.csv", 100)
    assert everything.read_text() == source.read_text()


def test_demo_rejects_unknown_methods(tmp_path):
    from sb_prune.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--output", str(tmp_path), "--methods", "magic"])
    assert exit_info.value.code == 2
