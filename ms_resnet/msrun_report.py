"""What a data-parallel job says when it fails: the lines each msrun worker writes to its log, and
the one-line summary that scripts/run_distribute_train.sh prints from those logs.

msrun ends the whole job as soon as one worker exits with an error: it SIGKILLs the others, so
they say nothing more. A worker whose partner has died or stalled waits in the next collective
until MindSpore's collective timeout (a fixed 30 s on CPU; NCCL/HCCL have their own) and then
writes `error: rank N stopped at epoch E, step S of T: ...`. msrun.log names the process that
ended first and its exit code; the `rank N of W: process P` line at the top of each worker log
turns that process id into a rank.

This module does not import MindSpore: the launcher runs it after the job, in a second.
"""

from __future__ import annotations

import re
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_COLLECTIVES = ("AllReduce", "AllGather", "ReduceScatter", "Broadcast", "Barrier")
BANNER = re.compile(r"^rank (\d+) of (\d+): process (\d+)")
_FAILED = re.compile(r"^error: (rank \d+ stopped .*)")
_ERROR = re.compile(r"^error: (.*)")
_EXCEPTION = re.compile(r"^(\w+(?:Error|Exception|Interrupt)\b.*)")
_MSRUN_EXIT = re.compile(r"Worker process (\d+) exit with exception\. Error code: (-?\d+)")
_PROGRESS = re.compile(r"epoch (\d+)/\d+:\s+\d+%\|[^|\r\n]*\|\s*(\d+)/(\d+)")
FINISHED = "trainable parameter sha256"


def banner(rank: int, workers: int, pid: int, host: str) -> str:
    """The first line of every worker's log."""
    return f"rank {rank} of {workers}: process {pid} on {host}"


def failure_line(rank: int, epoch: int, step: int, steps: int, evaluating: bool,
                 error_text: str) -> str:
    """Where and why a worker stopped, from the RuntimeError MindSpore raised."""
    lines = [line.strip() for line in error_text.splitlines()
             if line.strip() and not line.strip().startswith("-")]
    what = lines[0] if lines else "RuntimeError"
    if any(name in error_text for name in _COLLECTIVES):
        what = (f"{what}: the other workers did not all join this collective within the "
                "collective timeout (30 s on CPU): one of them stopped, hung or was busy")
    where = (f"at the end of epoch {epoch} (evaluation)" if evaluating
             else f"at epoch {epoch}, step {step + 1} of {steps}")
    return f"rank {rank} stopped {where}: {what}"


@dataclass
class WorkerLog:
    """What one worker_<rank>.log tells."""

    rank: int
    path: Path
    pid: int | None = None
    failure: tuple[int, str] | None = None       # (line number, text) of our failure line
    user_error: tuple[int, str] | None = None    # (line number, text) of another error: line
    exception: tuple[int, str] | None = None     # last line of an uncaught traceback
    progress: tuple[int, int, int] | None = None  # epoch, step, steps of the last progress bar
    finished: bool = False

    @property
    def where(self) -> str:
        return str(self.path)

    def at(self, line: int) -> str:
        return f"{self.path}:{line}"


def read_worker_log(path: Path, rank: int) -> WorkerLog:
    log = WorkerLog(rank, path)
    text = path.read_text(errors="replace")
    in_traceback = False
    for number, line in enumerate(text.splitlines(), 1):
        if match := BANNER.match(line):
            log.pid = int(match.group(3))
        elif match := _FAILED.match(line):
            log.failure = (number, match.group(1))
        elif match := _ERROR.match(line):
            log.user_error = log.user_error or (number, match.group(1))
        elif line.startswith("Traceback (most recent call last)"):
            in_traceback = True
        elif in_traceback and (match := _EXCEPTION.match(line)):
            log.exception, in_traceback = (number, match.group(1)), False
        if FINISHED in line:
            log.finished = True
    progress = _PROGRESS.findall(text)
    if progress:
        log.progress = tuple(int(v) for v in progress[-1])
    return log


def _first_exit(msrun_log: Path) -> tuple[int, int] | None:
    """(process id, exit code) of the first worker msrun saw fail."""
    if not msrun_log.is_file():
        return None
    match = _MSRUN_EXIT.search(msrun_log.read_text(errors="replace"))
    return (int(match.group(1)), int(match.group(2))) if match else None


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _describe(log: WorkerLog, exit_code: int | None, position: str) -> str:
    if log.failure:
        return f"{log.failure[1]} ({log.at(log.failure[0])})"
    if log.exception:
        return f"rank {log.rank} crashed{position}: {log.exception[1]} ({log.at(log.exception[0])})"
    if exit_code is not None and exit_code < 0:
        hint = (" (the out-of-memory killer, or kill -9)"
                if -exit_code == signal.SIGKILL else "")
        return (f"rank {log.rank} was killed by {_signal_name(exit_code)}{hint}{position}; "
                f"read the end of {log.where}")
    code = f" with exit code {exit_code}" if exit_code is not None else ""
    return f"rank {log.rank} stopped{code}{position} without an error message; read the end of " \
           f"{log.where}"


def summarize(log_dir: Path, status: int) -> tuple[str, int]:
    """The one-line reason the job failed, and the exit code to end with (2 for a user error
    such as a bad config, which every worker reports alike)."""
    logs = {}
    for path in sorted(log_dir.glob("worker_*.log")):
        rank = path.stem.removeprefix("worker_")
        if rank.isdigit():
            logs[int(rank)] = read_worker_log(path, int(rank))
    for log in logs.values():
        if log.user_error and not log.failure:
            # A bad config, a refused --resume, a start-up failure: the worker's own line.
            return f"{log.user_error[1]} ({log.at(log.user_error[0])})", 2
    if not logs:
        return f"no worker log in {log_dir}; see {log_dir / 'msrun.log'}", status
    first = _first_exit(log_dir / "msrun.log")
    by_pid = {log.pid: log for log in logs.values() if log.pid is not None}
    culprit = by_pid.get(first[0]) if first else None
    exit_code = first[1] if culprit else None
    if culprit is None:
        # The first to fail ran on another machine, or msrun.log says nothing: prefer a crash,
        # then a worker that reported where it stopped.
        ordered = sorted(logs.values(), key=lambda log: (not log.exception, not log.failure))
        culprit = ordered[0]
    # Only rank 0 shows a progress bar; the ranks move in step, so it says where all were.
    position = ""
    progress = culprit.progress or (logs[0].progress if 0 in logs else None)
    if progress and not culprit.failure:
        epoch, step, steps = progress
        who = "it" if culprit.progress else "rank 0"
        position = f" during epoch {epoch} ({who} had reported step {step} of {steps})"
    reason = _describe(culprit, exit_code, position)
    others = [log for log in logs.values() if log is not culprit and not log.finished]
    waiting = [f"{log.failure[1]} ({log.at(log.failure[0])})" for log in others if log.failure]
    silent = [str(log.rank) for log in others if not (log.failure or log.exception)]
    if waiting:
        reason += "; then " + "; ".join(waiting)
    if silent and culprit.failure:
        ranks = ", ".join(silent)
        reason += (f"; rank {ranks} left no error message (busy, hung or died; msrun then "
                   f"stopped it): read the end of its worker log in {log_dir}")
    return reason, status


def main(argv: Sequence[str] | None = None) -> None:
    """python -m ms_resnet.msrun_report LOG_DIR MSRUN_STATUS RESUME_COMMAND"""
    log_dir, status, resume = (argv if argv is not None else sys.argv[1:])
    reason, code = summarize(Path(log_dir), int(status))
    if code == 2:
        print(f"error: {reason}", file=sys.stderr)
    else:
        print(f"error: distributed training failed (msrun exit code {status}): {reason}. "
              f"Resume from the last finished epoch with: {resume}", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
