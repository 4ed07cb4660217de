"""monitor.txt: line 1, ``task_id<TAB>timestamp<TAB>percent<TAB>state<TAB>return_code``, and what it says
of the task's outcome (rules ``monitor.*``)."""

from __future__ import annotations

import dataclasses

from .findings import Collector
from .helpers import parse_float, parse_int, read_text

#: Return codes of a failed task (monitor.txt, 5th field), protocol.md section 3.
KNOWN_FAILURE_CODES: dict[int, str] = {
    300001: "config", 300002: "dataset", 300003: "image format", 300004: "model", 300005: "object_type",
    300101: "CUDA/GPU mismatch", 300102: "no GPU", 300103: "out of memory", 300201: "NaN",
    300301: "network", 160004: "generic (non-zero exit without a code)"}
#: The platform's task states; the protocol has executors write 2 all along and 4 on failure.
STATES = {1: "pending", 2: "running", 3: "done", 4: "error"}
STATE_RUNNING, STATE_DONE, STATE_FAILED = 2, 3, 4
#: Line 1's last field the platform reads: the 6th, an error message (its own writer's state_message).
MESSAGE_FIELD = 6


@dataclasses.dataclass
class _MonitorLine:
    percent: float | None = None
    state: int | None = None
    code: int | None = None
    has_code: bool = False


def check_monitor(collector: Collector, path: str, *, task_id: str | None, expect_failure: bool) -> None:
    """Line 1 of monitor.txt: any parse failure or a missing file marks the task failed on the platform."""
    text = read_text(collector, path, "monitor")
    if text is None:
        return
    if not text.strip():
        collector.error("monitor.empty", path, "is empty: the task never reported (or the last write was torn)")
        return
    fields = _monitor_fields(collector, path, text.split("\n", 1)[0].rstrip())  # the platform strips line 1
    if fields is None:
        return
    parsed = _monitor_values(collector, path, fields, task_id)
    _monitor_outcome(collector, path, parsed, expect_failure)


def _monitor_fields(collector: Collector, path: str, line: str) -> list[str] | None:
    """The TAB-separated fields of line 1, or None when they cannot be told apart. The platform reads the first
    four, a 5th as the return code and a 6th as the error message (what its own writer puts there); more are
    ignored."""
    fields = line.split("\t")
    if len(fields) >= 4:
        if len(fields) == 4:
            collector.warning("monitor.return-code-missing", path,
                              "4 fields: return_code missing (optional, but write it)", 1)
        elif len(fields) > MESSAGE_FIELD:
            collector.warning("monitor.extra-fields", path, f"{len(fields)} TAB-separated fields: the platform "
                              f"reads field 5 as the return code, field 6 as the message, and ignores the rest", 1)
        return fields
    if len(line.split()) in (4, 5) or any(" " in field.strip() for field in fields):
        collector.error("monitor.tabs", path, f"fields must be separated by TABs, not spaces: {line!r}", 1)
    else:
        collector.error("monitor.fields", path, f"{len(fields)} TAB-separated fields, expected "
                        f"task_id, timestamp, percent, state, return_code: {line!r}", 1)
    return None


def _monitor_values(collector: Collector, path: str, fields: list[str], task_id: str | None) -> _MonitorLine:
    """Parse and range-check each field; what fails to parse stays None."""
    parsed = _MonitorLine(has_code=len(fields) >= 5)
    if not fields[0].strip():
        collector.error("monitor.task-id", path, "task_id (field 1) is empty: the platform strips the line, so "
                        "every field moves one place left", 1)
    elif task_id is not None and fields[0].strip() != str(task_id):
        collector.error("monitor.task-id", path, f"task_id {fields[0]!r} is not the task's {str(task_id)!r}", 1)
    timestamp = parse_float(fields[1])
    if timestamp is None:
        collector.error("monitor.timestamp", path, f"timestamp {fields[1]!r} is not a finite float (seconds)", 1)
    elif timestamp > 1e11:
        collector.warning("monitor.timestamp-ms", path, f"timestamp {fields[1]} looks like milliseconds; "
                          "the platform expects seconds", 1)
    parsed.percent = parse_float(fields[2])
    if parsed.percent is None:
        collector.error("monitor.percent", path, f"percent {fields[2]!r} is not a finite float", 1)
    elif not 0.0 <= parsed.percent <= 1.0:
        collector.error("monitor.percent-range", path, f"percent {fields[2]} is outside [0, 1]", 1)
    parsed.state = parse_int(fields[3])
    if parsed.state not in STATES:
        parsed.state = None
        collector.error("monitor.state", path, f"state {fields[3]!r} is not one of "
                        f"{', '.join(f'{k} ({v})' for k, v in STATES.items())}", 1)
    if parsed.has_code:
        parsed.code = parse_int(fields[4])
        if parsed.code is None:
            collector.error("monitor.return-code", path, f"return_code {fields[4]!r} is not an integer", 1)
    return parsed


def _monitor_outcome(collector: Collector, path: str, line: _MonitorLine, expect_failure: bool) -> None:
    """State, code and percent together: a failure needs a known code, a success must end at 1.0 in state 2."""
    if line.state is None:
        return
    _check_return_code(collector, path, line)
    if expect_failure:
        if line.state != STATE_FAILED:
            collector.error("monitor.expected-failure", path, f"the task should have failed but its state is "
                            f"{line.state} ({STATES[line.state]}), not 4 (error)", 1)
        return
    if line.state == STATE_FAILED:
        name = KNOWN_FAILURE_CODES.get(line.code or 0, "unknown")
        collector.error("monitor.failed", path, f"the task reported failure: state 4, code {line.code} ({name})", 1)
        return
    if line.state == STATE_DONE:
        collector.warning("monitor.final-state", path, "state 3 (done): the protocol has the executor keep "
                          "state 2 (running) until the end, including the final 1.0", 1)
    elif line.state != STATE_RUNNING:
        collector.error("monitor.final-state", path, f"a finished task must end in state 2 (running) at 1.0, "
                        f"found state {line.state} ({STATES[line.state]})", 1)
    if line.percent is not None and line.percent != 1.0:
        collector.error("monitor.final-percent", path, f"a finished task must end at percent 1.0, "
                        f"found {line.percent}", 1)


def _check_return_code(collector: Collector, path: str, line: _MonitorLine) -> None:
    if line.state == STATE_FAILED:
        if not line.has_code or line.code == 0:
            collector.error("monitor.failure-code", path, "state 4 (error) needs a non-zero return code "
                            f"(one of {', '.join(map(str, KNOWN_FAILURE_CODES))})", 1)
        elif line.code is not None and line.code not in KNOWN_FAILURE_CODES:
            collector.warning("monitor.unknown-code", path, f"unknown code {line.code}: the platform knows "
                              f"{', '.join(map(str, KNOWN_FAILURE_CODES))}", 1)
    elif line.code not in (None, 0):
        collector.error("monitor.code-without-failure", path, f"return_code {line.code} with state "
                        f"{line.state}: only state 4 (error) carries a non-zero code", 1)
