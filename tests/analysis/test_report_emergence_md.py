"""The report's emergence section: flagged curves first, shots merged, flat curves in a line."""

from analysis.markdown import emergence_md


def _curve(task, metric, shots, verdict, reason, family="demo"):
    return dict(
        task=task, metric=metric, shots=shots, family=family, verdict=verdict, reason=reason
    )


def test_flagged_first_same_reason_curves_share_a_row_and_flat_ones_are_one_line():
    flat = "no scale's 95% CI lower bound exceeds the chance level 0.1"
    summary = [
        _curve("add2", "logprob", k, "smooth", "no significant departure") for k in (0, 1, 4)
    ]
    summary += [_curve("add2", "exact_match", k, "flat_at_chance", flat) for k in (0, 1, 4)]
    summary += [
        _curve("add3", "token_acc", 1, "insufficient_resolution", "z=0.8"),
        _curve("add3", "token_acc", 4, "insufficient_resolution", "z=0.9"),
        _curve("kv", "exact_match", 4, "emergent", "jump of 0.4, z=5.1"),
    ]
    md = emergence_md(summary).splitlines()
    assert md[0].startswith("9 curves (task x metric x shots): 3 smooth, 3 flat_at_chance, ")
    table = [x for x in md if x.startswith("| ") and not x.startswith("| task")]
    assert table == [
        "| kv | exact_match | 4 | demo | emergent | jump of 0.4, z=5.1 |",
        "| add3 | token_acc | 1 | demo | insufficient_resolution | z=0.8 |",
        "| add3 | token_acc | 4 | demo | insufficient_resolution | z=0.9 |",  # reasons differ
        "| add2 | logprob | 0, 1, 4 | demo | smooth | no significant departure |",
    ]
    assert md[-1].startswith("Flat at chance (3 curves: ")
    assert md[-1].endswith(": add2 exact_match (shots 0, 1, 4).")


def test_several_families_are_named_in_the_flat_line_and_an_all_flat_study_has_no_table():
    summary = [_curve("mmlu", "acc", 5, "flat_at_chance", "at chance", family=f) for f in "ab"]
    md = emergence_md(summary)
    assert "| task |" not in md
    assert md.endswith(": mmlu acc (shots 5; a); mmlu acc (shots 5; b).")


def test_untested_continuous_curves_are_a_line_and_warnings_name_their_curves():
    summary = [
        _curve("add2", "logprob", k, "not_tested", "continuous metric") | {"warnings": w}
        for k, w in ((0, ["single_seed"]), (1, ["single_seed", "jump_between_adjacent_scales"]))
    ]
    summary.append(_curve("add2", "token_acc", 0, "smooth", "above chance") | {"warnings": []})
    md = emergence_md(summary).splitlines()
    assert [x for x in md if x.startswith("| add2")] == [
        "| add2 | token_acc | 0 | demo | smooth | above chance |"
    ]  # the untested curves are not in the table of tested ones
    line = next(x for x in md if x.startswith("Not tested for a jump (2 curves: "))
    assert line.endswith(": add2 logprob (shots 0, 1).")
    assert md[-3:] == [
        "Warnings:",
        "- `single_seed`: add2 logprob 0, add2 logprob 1",
        "- `jump_between_adjacent_scales`: add2 logprob 1",
    ]
