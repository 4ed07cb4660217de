"""A tqdm progress bar that stays readable in a log file: every refresh is one log line, no carriage returns.

The platform appends stdout/stderr to /out/ymir-executor-out.log, where tqdm's in-place '\\r' updates would
pile up on one unreadable line.
"""

from __future__ import annotations

import logging

from tqdm import tqdm


class _LogLines:
    """A file-like object for tqdm: each non-empty write becomes one log record."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            self.logger.info(line)

    def flush(self) -> None:
        pass


class LogProgressBar:
    """``update(n, postfix)`` logs ``<bar> n/total [elapsed<remaining] postfix``, once per call."""

    def __init__(self, logger: logging.Logger, total: int, unit: str, desc: str = "training") -> None:
        # ncols=None: no terminal to fit, so tqdm never truncates the postfix (the epoch summary).
        self._bar = tqdm(total=total, unit=unit, desc=desc, file=_LogLines(logger), ascii=True, mininterval=0,
                         miniters=1, ncols=None, leave=False,
                         bar_format="{desc} {n_fmt}/{total_fmt} {unit}s |{bar:20}| [{elapsed}<{remaining}]{postfix}")

    def update(self, done: int, postfix: str) -> None:
        self._bar.set_postfix_str(postfix, refresh=False)
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        self._bar.close()
