"""The progress bar: silent unless enabled, and every item passes through either way."""

from __future__ import annotations

from dicomlake import progress


def test_silent_unless_enabled(capsys):
    assert list(progress.track(range(3), 3, "work")) == [0, 1, 2]
    assert capsys.readouterr().err == ""


def test_draws_a_bar_when_enabled(capsys):
    progress.enable()
    try:
        assert list(progress.track(iter("abcd"), 4, "work")) == ["a", "b", "c", "d"]
    finally:
        progress.enable(False)
    err = capsys.readouterr().err
    assert err.endswith("\n") and "work [" in err and "4/4" in err
