"""The demo's before/after table: sampled pass@k, the boxed share, accuracy among boxed answers and greedy pass@1."""

from lens_openrlhf.demo import report
from lens_openrlhf.evaluation.passk import ProblemResult, level_table, with_greedy


def _results(c, n=8, b=None):
    """Two problems per level 1 and 4, with ``c[i]`` correct of ``n``."""
    return [
        ProblemResult(id=str(i), level=lv, datasource=f"t_level{lv}", n=n, c=ci, boxed=n if b is None else b)
        for i, (lv, ci) in enumerate(zip((1, 1, 4, 4), c))
    ]


def test_add_greedy_puts_each_groups_greedy_pass1_next_to_the_sampled_one():
    sampled = level_table(_results([4, 2, 0, 0]), ks=(1, 8))
    table = with_greedy(sampled, _results([1, 1, 0, 1], n=1))
    assert table["all"]["pass@1"] == sampled["all"]["pass@1"] == 6 / 32
    assert table["all"]["greedy"] == 0.75 and table["level_1"]["greedy"] == 1.0 and table["level_4"]["greedy"] == 0.5
    assert "greedy" not in sampled["all"]  # a new table; the sampled one is left as it was


def test_the_before_after_table_and_the_one_line_show_greedy_pass1(capsys):
    before = with_greedy(level_table(_results([4, 2, 0, 0]), ks=(1, 8)), _results([1, 1, 0, 0], n=1))
    after = with_greedy(level_table(_results([8, 6, 0, 1]), ks=(1, 8)), _results([1, 1, 0, 1], n=1))
    report.print_before_after(before, after)
    out = capsys.readouterr().out.splitlines()
    header = "pass@1 before after pass@8 before after boxed before after acc|boxed before after greedy before after"
    assert out[1].split() == header.split()
    row = [x for x in out if x.strip().startswith("all levels")][0].split()
    assert row[2:4] == ["0.188", "0.469"] and row[-2:] == ["0.500", "0.750"]
    assert report.one_line(after).endswith("greedy pass@1 0.750")
    plain = level_table(_results([4, 2, 0, 0]), ks=(1, 8))
    report.print_before_after(plain, plain)  # without greedy answers: the four columns of before
    assert "greedy" not in capsys.readouterr().out and "greedy" not in report.one_line(plain)


def test_a_run_too_short_to_evaluate_plots_without_a_warning(tmp_path):
    """Two steps and no held-out table (what `--steps 2` gives): the PNG is written and matplotlib warns of nothing,
    since the demo's console is for a person (a legend with no labelled line prints a UserWarning)."""
    import warnings

    scalars = {"train/reward": {1: 0.2, 2: 0.3}, "train/lens/nonzero_adv_frac": {1: 0.5, 2: 0.6}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = report.plot_run(scalars, tmp_path / "run.png")
    assert path.stat().st_size > 1000
