"""What keeps a run directory safe: one writer at a time (a lock file), a divergence rule
that stops a run which has gone wrong before it writes a bad checkpoint, and the errors a
run stops with (each one line, saying what was kept).

- :class:`RunLock`: ``run_dir/.lock``, held with ``flock`` for the whole run, holding the
  owner's pid and host. The kernel releases it when the owner dies, even by SIGKILL, so a
  lock left by a dead run never blocks its resume. Where the file system has no ``flock``
  the pid is checked instead (a lock whose pid is dead on this host is taken over).
- :class:`DivergenceMonitor`: stops after ``divergence_skips`` consecutive skipped steps,
  or when a step's loss exceeds the median of the previous finite losses by more than
  ``divergence_loss``.
- :class:`StopSignals`: SIGTERM (what schedulers send before pre-empting a job) and SIGINT
  ask the run to stop after its current step; the loop then saves a checkpoint of that
  step and raises :class:`TrainingStopped`.
"""

from __future__ import annotations

import collections
import errno
import fcntl
import math
import os
import signal
import socket
import statistics
import threading

LOCK_FILE = ".lock"


class TrainingError(RuntimeError):
    """A run stopped: it diverged, could not write, or its directory is in use."""


class RunLockedError(TrainingError):
    """Another live process is writing to the run directory."""


class DivergenceError(TrainingError):
    """The divergence rule stopped the run (no checkpoint of the diverged state was written)."""


class RunWriteError(TrainingError):
    """Writing a run's files failed (disk full, I/O error); says what was kept."""


class TrainingStopped(TrainingError):
    """A signal stopped the run after a step, whose checkpoint was saved: ``signum``, the
    ``step`` and the checkpoint's ``path``; :attr:`exit_code` is the shell's code of a
    process killed by the signal (143 for SIGTERM, 130 for SIGINT)."""

    def __init__(self, message: str, *, signum: int, step: int, path: str):
        super().__init__(message)
        self.signum, self.step, self.path = int(signum), int(step), path

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopSignals:
    """While held (a context manager), SIGTERM and SIGINT ask the run to stop instead of
    ending it: the first one is recorded (:meth:`requested`) and the loop stops at the end
    of its current step, after saving it. A second signal stops at once, as without this
    (SIGINT: ``KeyboardInterrupt``; SIGTERM: ``SystemExit(143)``), for a step that hangs.

    With several processes (``multi_process``) the processes must stop after the same step,
    or the checkpoint they write together would wait forever for the ones that went on. So
    SIGTERM is left to JAX's pre-emption service, which ``jax.distributed.initialize``
    starts with a SIGTERM handler of its own: :meth:`requested` asks it whether every
    process has reached the step it agreed on after one of them received SIGTERM
    (``multihost_utils.reached_preemption_sync_point``, a call every step). SIGINT keeps
    Python's default there (``KeyboardInterrupt``; the checkpoints already written are kept).

    Outside the main thread (where Python cannot install handlers) nothing is installed.
    """

    def __init__(self, *, multi_process: bool = False):
        self.multi_process = bool(multi_process)
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in () if self.multi_process else (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.received is None:
            self.received = signum
            return
        self.__exit__()  # a second signal: what it did before
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    def requested(self, step: int) -> int | None:
        """The signal that asks to stop after ``step``, or ``None``. With several processes,
        call it once after every step, in every process (it is the pre-emption sync point)."""
        if self.multi_process:
            from jax.experimental import multihost_utils

            return signal.SIGTERM if multihost_utils.reached_preemption_sync_point(step) else None
        return self.received


_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG, errno.EACCES, errno.EPERM}


def is_write_error(e: BaseException) -> bool:
    """An error of the disk or file system while writing (full, read-only, I/O, permissions)."""
    from flowjax_res.train.checkpoint import CheckpointWriteError

    return isinstance(e, CheckpointWriteError) or (isinstance(e, OSError) and e.errno in _WRITE_ERRNOS)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


class RunLock:
    """The one-writer lock of a run directory (``run_dir/.lock``); use as a context manager
    or :meth:`acquire` / :meth:`release`. The file is left in place (empty) when released:
    removing it would let two processes hold locks on two different files."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, LOCK_FILE)
        self._fd: int | None = None

    def _owner(self) -> str:
        try:
            with open(self.path) as f:
                return f.read().strip()
        except OSError:
            return ""

    def _refuse(self, owner: str) -> RunLockedError:
        return RunLockedError(
            f"run directory {self.run_dir!r} is in use by another run ({owner or 'owner unknown'}, lock file "
            f"{self.path!r}); wait for it to finish or stop it first"
        )

    def acquire(self) -> "RunLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self._refuse(self._owner()) from None
        except OSError as e:  # no flock on this file system: trust the pid in the file
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                os.close(fd)
                raise
            owner = self._owner()
            parts = owner.split()  # "pid <pid> on <host>"
            if len(parts) == 4 and parts[0] == "pid" and parts[2] == "on" and parts[1].isdigit():
                pid, host = int(parts[1]), parts[3]
                if pid != os.getpid() and (host != socket.gethostname() or _pid_alive(pid)):
                    os.close(fd)
                    raise self._refuse(owner) from None
        try:  # who holds it, for the message of a refused second writer (the flock is what counts)
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
            os.fsync(fd)
        except OSError:  # a full disk: the run will say so at its first real write
            pass
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        finally:
            os.close(self._fd)  # releases the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _steps(n: int) -> str:
    return f"{n} step" if n == 1 else f"{n} steps"


class DivergenceMonitor:
    """Sees every step's ``(step, loss, ok)`` in order; :meth:`update` returns why the run
    has diverged, or ``None``.

    - ``max_skips`` (> 0): that many consecutive skipped steps (``ok`` false).
    - ``loss_margin`` (> 0): a finite loss above ``median + max(loss_margin, |median|)``, the
      median of the previous (up to ``window``) finite losses of applied steps, once
      ``min_known`` are known: far above in absolute terms and, for losses in the hundreds or
      thousands (an untrained image model's first bits/dim), more than double the median.
      The margin is absolute (nats or bits/dim) and large, so one known loss is enough: a
      first update that blows the weights up is caught at the next step, before its loss
      enters the median.

    Its memory starts empty when a run is resumed (it is not part of the checkpoint).
    """

    def __init__(self, max_skips: int, loss_margin: float, *, window: int = 100, min_known: int = 1):
        self.max_skips = int(max_skips)
        self.loss_margin = float(loss_margin)
        self.min_known = int(min_known)
        self._losses: collections.deque[float] = collections.deque(maxlen=int(window))
        self._streak = 0

    def update(self, step: int, loss: float, ok: bool) -> str | None:
        if not ok:
            self._streak += 1
            if self.max_skips > 0 and self._streak >= self.max_skips:
                return (f"the {self._streak} steps up to step {step} were all skipped (non-finite loss, gradients "
                        f"or update; divergence_skips = {self.max_skips})")
            return None
        self._streak = 0
        loss = float(loss)
        if not math.isfinite(loss):
            return None
        if self.loss_margin > 0 and len(self._losses) >= self.min_known:
            median = statistics.median(self._losses)
            if loss > median + max(self.loss_margin, abs(median)):
                return (f"the loss of step {step} ({loss:.4g}) exceeds the median {median:.4g} of the "
                        f"{_steps(len(self._losses))} before by more than divergence_loss = {self.loss_margin:g} "
                        f"and more than the median's size")
        self._losses.append(loss)
        return None
