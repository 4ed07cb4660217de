"""Findings: one problem each (:class:`Finding`), the :class:`Report` of one verification, the
:class:`Collector` the checkers report to (at most :data:`FINDINGS_PER_RULE` findings per rule and file) and the
:class:`UsageError` of a bad request."""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Any

ERROR = "error"
WARNING = "warning"
FINDINGS_PER_RULE = 20


class UsageError(ValueError):
    """A problem with what verify was asked to check (not with the /out tree): exit code 2."""


@dataclasses.dataclass(frozen=True)
class Finding:
    """One problem: ``path`` is relative to OUT_DIR when inside it; ``line`` is 1-based or None."""

    severity: str
    rule: str
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{self.severity.upper()} {self.rule} {where}: {self.message}"


@dataclasses.dataclass
class Report:
    """The findings of one verification, with the files that were checked."""

    out_dir: str
    tasks: tuple[str, ...]
    findings: list[Finding] = dataclasses.field(default_factory=list)
    checked: list[str] = dataclasses.field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        """The findings of severity error."""
        return [finding for finding in self.findings if finding.severity == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        """The findings of severity warning."""
        return [finding for finding in self.findings if finding.severity == WARNING]

    @property
    def ok(self) -> bool:
        """No errors (warnings allowed): what exit code 0 means."""
        return not self.errors

    def rules(self, severity: str | None = None) -> set[str]:
        """The rule ids found (of one severity when given): handy in tests and scripts."""
        return {finding.rule for finding in self.findings if severity in (None, finding.severity)}

    def summary(self) -> str:
        """One line: OK or FAILED, the counts, the folder, the task kinds and the files checked."""
        verdict = "OK" if self.ok else "FAILED"
        return (f"{verdict}: {_plural(len(self.errors), 'error')}, {_plural(len(self.warnings), 'warning')} "
                f"in {self.out_dir} (tasks: {', '.join(self.tasks)}; checked: {', '.join(self.checked) or '-'})")

    def to_text(self) -> str:
        """One line per finding, then the summary: the command's plain output."""
        return "\n".join([str(finding) for finding in self.findings] + [self.summary()])

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data: the command's ``--json`` output."""
        return {"ok": self.ok, "out_dir": self.out_dir, "tasks": list(self.tasks), "checked": self.checked,
                "errors": len(self.errors), "warnings": len(self.warnings),
                "findings": [dataclasses.asdict(finding) for finding in self.findings]}


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


class Collector:
    """Gathers findings, with paths relative to OUT_DIR and a cap per (rule, file) against floods."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.findings: list[Finding] = []
        self._counts: collections.Counter[tuple[str, str, str]] = collections.Counter()

    def rel(self, path: str) -> str:
        """``path`` relative to OUT_DIR when inside it, else unchanged."""
        relative = os.path.relpath(path, self.out_dir)
        return path if relative.startswith("..") else relative

    def add(self, severity: str, rule: str, path: str, message: str, line: int | None = None) -> None:
        """Record one finding, unless its (rule, file) already has :data:`FINDINGS_PER_RULE`."""
        key = (severity, rule, self.rel(path))
        self._counts[key] += 1
        if self._counts[key] <= FINDINGS_PER_RULE:
            self.findings.append(Finding(severity, rule, key[2], line, message))

    def error(self, rule: str, path: str, message: str, line: int | None = None) -> None:
        """Record an error."""
        self.add(ERROR, rule, path, message, line)

    def warning(self, rule: str, path: str, message: str, line: int | None = None) -> None:
        """Record a warning."""
        self.add(WARNING, rule, path, message, line)

    def finish(self) -> list[Finding]:
        """The findings, plus one line per capped rule saying how many were left out."""
        for (severity, rule, path), count in self._counts.items():
            if count > FINDINGS_PER_RULE:
                self.findings.append(Finding(severity, rule, path, None,
                                             f"... and {count - FINDINGS_PER_RULE} more like the above"))
        return self.findings
