"""A ``flowjax-res`` process with one injected fault, for tests/train/test_faults.py.

``python -m tests.train.fault_child FAULT [CLI ARGS...]`` runs ``flowjax_res.cli.main``
with the tiny Gaussian model (tests/train/tiny.py) after installing ``FAULT``:

- ``none``: no fault.
- ``kill-in-ckpt-write:K``: SIGKILL while checkpoint ``K`` is written, after Orbax has
  written every file into its temporary directory and before it renames it.
- ``enospc-in-ckpt-write:K``: Orbax's writes of checkpoint ``K``'s files raise ENOSPC, as
  they did on a full tmpfs (``async_path.write_text``).
- ``kill-in-delete``: SIGKILL in the middle of removing an old checkpoint (beyond
  ``--keep-ckpts``), after part of its files are gone.
- ``kill-after-save:K``: SIGKILL right after checkpoint ``K`` is complete.
- ``stop-after-save:K``: SIGSTOP right after checkpoint ``K`` (the process stays alive,
  holding its run directory, until the test kills it); prints ``STOPPED`` first.
- ``wait-in-step:K``: inside step ``K`` (after its update, before the loop sees it) prints
  ``IN STEP K`` and waits for a line on stdin, so that a test can send a signal while the
  step runs.
"""

from __future__ import annotations

import os
import signal
import sys


def _kill(sig=signal.SIGKILL):
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), sig)


def install(fault: str) -> None:
    import flowjax_res.train.checkpoint as ck
    import flowjax_res.train.loop as loop
    from tests.train.tiny import tiny_model_fn

    loop.make_model = tiny_model_fn
    kind, _, arg = fault.partition(":")
    if kind == "none":
        return
    if kind == "kill-in-ckpt-write":
        from orbax.checkpoint._src.path import atomicity

        orig = atomicity.AtomicRenameTemporaryPath.finalize

        async def finalize(self, *a, **k):
            if self.get_final().name == arg:
                _kill()
            return await orig(self, *a, **k)

        atomicity.AtomicRenameTemporaryPath.finalize = finalize
        return
    if kind == "enospc-in-ckpt-write":
        import errno

        from orbax.checkpoint._src.path import async_path

        orig_write = async_path.write_text

        async def write_text(path, text):
            if f"{arg}.orbax-checkpoint-tmp" in str(path):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return await orig_write(path, text)

        async_path.write_text = write_text
        return
    if kind == "kill-in-delete":
        orig_rmtree = ck.shutil.rmtree

        def rmtree(path, *a, **k):
            if os.path.basename(path) == ck._DELETING and os.path.isdir(path) and os.listdir(path):
                for root, _, files in os.walk(path):  # remove part of the files, then die
                    for f in sorted(files)[: max(1, len(files) // 2)]:
                        os.remove(os.path.join(root, f))
                    if files:
                        _kill()
            return orig_rmtree(path, *a, **k)

        ck.shutil.rmtree = rmtree
        return
    if kind in ("kill-after-save", "stop-after-save"):
        orig_save = ck.Checkpointer.save

        def save(self, state, meta, **k):
            out = orig_save(self, state, meta, **k)
            if int(state.step) == int(arg):
                if kind == "kill-after-save":
                    _kill()
                print("STOPPED", flush=True)
                _kill(signal.SIGSTOP)
            return out

        ck.Checkpointer.save = save
        return
    if kind == "wait-in-step":
        orig_run_step = loop.run_step

        def run_step(*a, **k):
            step_fn, put = orig_run_step(*a, **k)

            def waiting_step(state, batch, key):
                state, m = step_fn(state, batch, key)
                if int(state.step) == int(arg):
                    print(f"IN STEP {arg}", flush=True)
                    sys.stdin.readline()
                return state, m

            return waiting_step, put

        loop.run_step = run_step
        return
    raise ValueError(f"unknown fault {fault!r}")


def main() -> int:
    install(sys.argv[1])
    from flowjax_res.cli import main as cli_main

    return cli_main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
