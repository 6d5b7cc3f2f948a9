"""Progress display for training runs, and a plain text table for final metrics.

`Progress` is driven by the trainer: `start(total, initial)` once, `update(step, losses,
epoch, lr)` after every step, `note(text)` for interleaved messages (evaluation results,
checkpoints) and `finish()` at the end. On a terminal it redraws one line (a bar, step/total,
the epoch, the running loss as an exponential average, the learning rate, steps per second and
the time left) at most `refresh` times per second; on a pipe or file it prints the same as
plain lines, about `lines` per run (or every `every` steps: the run's `log_every`); `quiet`
prints nothing at all.

    step 120/200  epoch 2.50  loss 0.3412  lr 0.001  85.3 steps/s  ETA 0:01
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TextIO

__all__ = ["Progress", "format_table"]

_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?%?$|^[-+]?(nan|inf)$")


def _fmt_loss(v: float) -> str:
    if not math.isfinite(v):
        return str(v)
    a = abs(v)
    return f"{v:.4g}" if a != 0 and (a < 1e-3 or a >= 1e5) else f"{v:.4f}"


def _fmt_duration(seconds: float) -> str:
    """`0:07`, `12:30`, `2:05:00`: minutes and seconds, hours when there are some."""
    s = int(math.ceil(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


class Progress:
    """One-line progress bar on a TTY, periodic plain lines otherwise, nothing when quiet."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False,
                 tty: bool | None = None, every: int | None = None, lines: int = 10,
                 refresh: float = 10.0, smoothing: float = 0.1, width: int = 24,
                 label: str = "") -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty()) if callable(isatty) else False
        self.tty = tty
        self.every = every if every and every > 0 else None
        self.lines = max(1, lines)
        self.min_interval = 1.0 / refresh if refresh > 0 else 0.0
        self.smoothing = smoothing
        self.width = width
        self.label = label
        self.total: int | None = None
        self.initial = 0
        self.step = 0
        self.ema: dict[str, float] = {}
        self.epoch: float | None = None
        self.lr: dict[str, float] = {}
        self._t0 = 0.0
        self._last_draw = -math.inf
        self._line_len = 0
        self._every = 1
        self._printed_step = -1

    # -- driven by the trainer
    def start(self, total: int | None, initial: int = 0, every: int | None = None) -> None:
        """Begin a run of `total` steps (None: unknown) that starts after step `initial`;
        `every`: print plain lines every that many steps (else the constructor's)."""
        self.total = total
        self.initial = self.step = initial
        self.ema = {}
        self.epoch = None
        self.lr = {}
        self._t0 = time.monotonic()
        self._last_draw = -math.inf
        self._printed_step = -1
        todo = (total - initial) if total is not None else 0
        every = every if every and every > 0 else self.every
        self._every = every or max(1, math.ceil(todo / self.lines) if todo > 0 else 100)

    def update(self, step: int, losses: Mapping[str, float], epoch: float | None = None,
               lr: Mapping[str, float] | None = None) -> None:
        """Record step `step` (1-based, global) with its losses, the epochs completed and the
        learning rate(s) of the step."""
        self.step = step
        self.epoch = epoch
        if lr:
            self.lr = dict(lr)
        a = self.smoothing
        ema = self.ema
        for k, v in losses.items():
            old = ema.get(k)
            if old is None or not math.isfinite(old):
                ema[k] = v
            else:
                ema[k] = old + a * (v - old)
        if self.quiet:
            return
        if self.tty:
            now = time.monotonic()
            if now - self._last_draw >= self.min_interval:
                self._last_draw = now
                self._draw(now)
        elif step % self._every == 0 or step == self.total:
            self._print_line()

    def note(self, text: str) -> None:
        """Print a message on its own line without garbling the bar."""
        if self.quiet:
            return
        if self.tty and self._line_len:
            self.stream.write("\r" + " " * self._line_len + "\r")
            self._line_len = 0
        self.stream.write(text + "\n")
        self.stream.flush()
        if self.tty and self.step > self.initial:
            self._draw(time.monotonic())

    def finish(self) -> None:
        """Draw the final state and end the line."""
        if self.quiet:
            return
        if self.tty:
            if self.step > self.initial or self._line_len:
                self._draw(time.monotonic())
                self.stream.write("\n")
                self._line_len = 0
        elif self.step > self.initial and self._printed_step != self.step:
            self._print_line()
        self.stream.flush()

    # -- rendering
    def rate(self, now: float | None = None) -> float:
        """Steps per second since `start`."""
        dt = (time.monotonic() if now is None else now) - self._t0
        return (self.step - self.initial) / dt if dt > 0 else 0.0

    def _status(self, now: float) -> str:
        if self.total:
            count = f"{self.step}/{self.total}"
        else:
            count = f"{self.step}"
        parts = [f"{self.label} " if self.label else "", f"step {count}"]
        if self.epoch is not None:
            parts.append(f"  epoch {self.epoch:.2f}")
        if len(self.ema) == 1:
            parts.append(f"  loss {_fmt_loss(next(iter(self.ema.values())))}")
        else:
            parts.extend(f"  {k} {_fmt_loss(v)}" for k, v in self.ema.items())
        parts.extend(f"  {k} {v:.3g}" for k, v in self.lr.items())
        rate = self.rate(now)
        parts.append(f"  {rate:.1f} steps/s")
        if self.total and rate > 0 and self.step < self.total:
            parts.append(f"  ETA {_fmt_duration((self.total - self.step) / rate)}")
        return "".join(parts)

    def _draw(self, now: float) -> None:
        status = self._status(now)
        if self.total:
            frac = min(1.0, max(0.0, self.step / self.total))
            filled = int(round(frac * self.width))
            bar = "[" + "#" * filled + "." * (self.width - filled) + f"] {frac * 100:3.0f}% "
        else:
            bar = ""
        line = bar + status
        pad = max(0, self._line_len - len(line))
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._line_len = len(line)

    def _print_line(self) -> None:
        self._printed_step = self.step
        self.stream.write(self._status(time.monotonic()) + "\n")
        self.stream.flush()


def format_table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    """An aligned plain text table: header, a rule, one line per row; cells that look like
    numbers are right-aligned, others left-aligned. Short rows are padded with blanks."""
    ncol = max([len(headers)] + [len(r) for r in rows])
    head = [str(h) for h in headers] + [""] * (ncol - len(headers))
    body = [[str(c) for c in r] + [""] * (ncol - len(r)) for r in rows]
    widths = [max([len(head[i])] + [len(r[i]) for r in body]) for i in range(ncol)]
    numeric = [bool(body) and all(_NUMBER.match(r[i].strip()) or not r[i].strip() for r in body)
               and any(r[i].strip() for r in body) for i in range(ncol)]

    def line(cells: list[str]) -> str:
        out = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)]
        return "  ".join(out).rstrip()

    parts = [line(head), "  ".join("-" * w for w in widths)]
    parts += [line(r) for r in body]
    return "\n".join(parts) + "\n"
