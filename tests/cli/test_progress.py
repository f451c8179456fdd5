"""The shared progress-bar factory of the long-running commands."""

import pytest

from smat_deploy.cli import _progress


def test_every_bar_counts_its_ticks_and_is_closed_even_when_the_work_fails(monkeypatch):
    opened = []

    class Recorder:
        def __init__(self, total, **kwargs):
            self.total, self.count, self.closed, self.kwargs = total, 0, False, kwargs
            opened.append(self)

        def update(self, steps):
            self.count += steps

        def close(self):
            self.closed = True

    monkeypatch.setattr(_progress, "tqdm", Recorder)
    with pytest.raises(RuntimeError), _progress.progress_bars("bench", "call") as progress:
        first, second = progress(3), progress(2)
        first(), first(), second()
        raise RuntimeError("the work failed")
    assert [(bar.total, bar.count, bar.closed) for bar in opened] == [(3, 2, True), (2, 1, True)]
    assert opened[0].kwargs["desc"] == "bench" and opened[0].kwargs["unit"] == "call"
