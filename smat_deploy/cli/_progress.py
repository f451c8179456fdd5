"""Progress bars for the commands whose work reports ``progress(total)`` -> ``tick()`` (bench, parity, ...)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from tqdm import tqdm

ProgressFactory = Callable[[int], Callable[[], None]]


@contextlib.contextmanager
def progress_bars(desc: str, unit: str) -> Iterator[ProgressFactory]:
    """Yield ``progress(total)``: each call opens a bar on stderr and returns its one-step ``tick``.

    Every bar opened is closed on the way out, also when the work fails, so an error line never ends
    up behind a half-drawn bar.
    """
    bars: list[tqdm] = []

    def progress(total: int) -> Callable[[], None]:
        bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False)
        bars.append(bar)
        return lambda: bar.update(1)

    try:
        yield progress
    finally:
        for bar in bars:
            bar.close()
