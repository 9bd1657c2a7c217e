"""``bridge-train --nproc-per-node N``: start N local workers through torch's elastic launcher.

No launcher of our own: the arguments go through torchrun's own parser and ``config_from_args``
and the job runs under ``elastic_launch``, so rendezvous, worker monitoring and failure handling
are torchrun's (one failing worker ends the job: torchrun stops the others and reports it).

Why the workers are forked, not fresh interpreters: the parent has already imported torch and
megatron-core (~3-4 s on CPU) to resolve and validate the config, so that a config mistake
fails once, in the parent, before any worker exists. A worker started as ``python -m
megatron_bridge_cli`` pays that import again: a 20-iteration tiny job took ~1.3x the wall time
of the same megatron-core script under plain torchrun (11.1 s vs 8.4 s on 2 CPU cores;
``scripts/bench_train.py --only job``), 0.83x with forked workers. Forked workers inherit the
imported modules; each runs ``main(argv)`` with torch's RANK/LOCAL_RANK/WORLD_SIZE/MASTER_*
variables, re-resolves the (already valid) config in a fraction of a second and trains.

Why forking is safe here, and where it is not (``_start_method`` picks):
- CUDA: once a process has initialized the CUDA driver (``torch.cuda.is_available()`` does, and
  finalize calls it), a forked child cannot use CUDA. So where CUDA is available the workers
  are fresh interpreters as before; the fork path is for CPU (gloo) jobs.
- OpenMP: libgomp's thread pool does not survive fork; a child that asks for more than one
  intra-op thread hangs if the parent ever ran a parallel region. The parent only parses and
  validates (no tensor math: it has the threads of torch's import and no more), and each child
  sets its thread count from OMP_NUM_THREADS as a fresh interpreter would (torchrun sets 1
  per worker when N > 1). A recipe that does tensor math while it builds the config, run with
  more than one thread per worker, would hang its workers: use ``exec`` below for it.
- Signals: the elastic agent's SIGTERM/SIGINT/SIGHUP/SIGQUIT handlers would be inherited;
  the child puts back what exec would have given it (the default, or SIG_IGN where the
  launcher was started with the signal ignored), so SIGTERM kills a worker or reaches the
  training loop's own exit-signal handler exactly as in a fresh interpreter.
- Output: the children write to the inherited stdout/stderr, line-buffered like torchrun's
  ``python -u`` workers, so logs appear as lines are written.
``BRIDGE_TRAIN_START_METHOD=exec`` forces fresh interpreters (``fork`` forces forking).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import traceback
import uuid
from typing import Optional, Sequence

from megatron_bridge_cli.errors import ConfigError

__all__ = ["launch_workers", "torchrun_args", "die_with_launcher", "take_descendants_along", "START_METHOD_ENV",
           "LAUNCHER_PID_ENV"]

START_METHOD_ENV = "BRIDGE_TRAIN_START_METHOD"
_PROG = "bridge-train"
_PCONTEXT_MODULE = "torch.distributed.elastic.multiprocessing.api"
_AGENT_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT")  # torch's TORCHELASTIC_SIGNALS_TO_HANDLE default
_ignored_by_caller: frozenset[str] = frozenset()
"""Signals the launcher was started with ignored (exec keeps SIG_IGN); recorded before torch's
agent installs its handlers, read by the forked workers."""


def torchrun_args(*, nproc_per_node: int, nnodes: int = 1, node_rank: int = 0, master_addr: Optional[str] = None,
                  master_port: Optional[int] = None, max_restarts: int = 0, argv: Sequence[str] = ()) -> list[str]:
    """The torchrun command line (without ``torchrun``) for these settings."""
    args = [f"--nproc-per-node={nproc_per_node}", f"--nnodes={nnodes}", f"--node-rank={node_rank}"]
    if max_restarts:
        args.append(f"--max-restarts={max_restarts}")
    if nnodes == 1 and master_addr is None and master_port is None:
        args.append("--standalone")  # a free local port, no clash with other jobs on the machine
    else:
        args += [f"--master-addr={master_addr or '127.0.0.1'}", f"--master-port={master_port or 29500}"]
    return args + ["--module", "megatron_bridge_cli", *argv]


def _start_method() -> str:
    """'fork' (workers inherit this process's imports) or 'exec' (fresh interpreters)."""
    choice = os.environ.get(START_METHOD_ENV, "").strip().lower()
    if choice in ("fork", "exec"):
        return choice
    if choice:
        raise ConfigError(f"{START_METHOD_ENV}={choice!r}: use 'fork' or 'exec' (or leave it unset)")
    import torch

    return "exec" if torch.cuda.is_available() else "fork"


# --------------------------------------------------------------------------- in each forked worker
LAUNCHER_PID_ENV = "BRIDGE_TRAIN_LAUNCHER_PID"


def die_with_launcher() -> None:
    """Make this worker die when the launcher that started it dies, even by SIGKILL.

    Workers sit in sessions of their own, so killing the launcher alone left them training on,
    orphaned; a resubmitted job would then race a ghost writing into the same checkpoint
    directory. Linux's parent-death signal (prctl PR_SET_PDEATHSIG) ends them with it. Called
    first thing in a worker (forked or exec'd) whose parent is the launcher named by
    BRIDGE_TRAIN_LAUNCHER_PID; a launcher already gone by then means exit now.
    """
    launcher = os.environ.get(LAUNCHER_PID_ENV, "")
    if not launcher.isdigit() or not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != int(launcher):  # it died before the signal was armed
        os._exit(1)
    take_descendants_along()


# Run as `python -I -S -c _REAPER WORKER_PID GROUP`: waits for the worker to die (its parent-death
# signal) and then SIGKILLs the worker's process group, itself included.
_REAPER = """
import ctypes, os, signal, sys
worker, group = int(sys.argv[1]), int(sys.argv[2])
def reap(*_):
    os.killpg(group, signal.SIGKILL)
    os._exit(0)
signal.signal(signal.SIGUSR1, reap)
ctypes.CDLL(None).prctl(1, signal.SIGUSR1, 0, 0, 0)
if os.getppid() != worker:
    reap()
while True:
    signal.pause()
"""
_reaper = None


def take_descendants_along(regroup: bool = True) -> None:
    """Make every process this worker starts die with it, even when it is SIGKILLed.

    A parent-death signal is not inherited across fork, and megatron-core's checkpoint writer
    forks writer processes per save and spawns a multiprocessing Manager (plus Python's resource
    tracker) that outlive a killed worker: probed, a kill -9 of a job during a save left six
    processes behind, the forked writers blocked forever with the checkpoint folder open.
    So the worker leads a process group of its own (exec'd workers already do: torchrun starts
    them in new sessions; forked ones shared the launcher's) and starts a tiny reaper process:
    when the worker dies, however, the kernel signals the reaper, which SIGKILLs the group.
    ``regroup=False`` does nothing unless this process already leads its group (a process in
    the terminal's foreground group must stay there, or Ctrl-C would no longer reach it).
    """
    global _reaper
    import subprocess

    if os.getpgid(0) != os.getpid():
        if not regroup:
            return
        try:
            os.setpgid(0, 0)
        except OSError:
            return  # not ours to regroup; the group would hold the launcher too
    _reaper = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", _REAPER, str(os.getpid()), str(os.getpid())],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True,
    )


def _fresh_interpreter_state() -> None:
    """Undo what a fresh interpreter would not have inherited from the launching process."""
    for name in _AGENT_SIGNALS:
        if name in _ignored_by_caller:
            handler = signal.SIG_IGN
        else:
            handler = signal.default_int_handler if name == "SIGINT" else signal.SIG_DFL
        signal.signal(getattr(signal, name), handler)
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=True)  # torchrun's workers run `python -u`
    threads = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if threads.isdigit() and int(threads) > 0:
        import torch

        torch.set_num_threads(int(threads))  # libgomp read OMP_NUM_THREADS in the parent, before torchrun set it


def _do_not_wait_for_the_agent() -> None:
    """Let this worker exit right after torch's ``_wrap`` has queued its return value.

    After queuing it, ``_wrap`` waits on an event that the elastic agent sets once every worker
    has returned. When the agent is shutting down on a signal it never sets it: it sent its
    SIGTERM once (the training loop's exit-signal handler took it, saved, and returned) and then
    waits 30 s and SIGKILLs, where a fresh-interpreter worker would simply have exited. The
    wait only exists to keep a multiprocessing.Queue's feeder thread alive until the agent reads
    a large value; torch uses a SimpleQueue (written synchronously, no feeder) and the value is
    an int, so setting the event from here loses nothing. It must be set, not skipped: a process
    that dies inside Event.wait makes the agent's later set() wait for it forever. Where the
    frame is not the expected one (another torch version), torch's own protocol runs unchanged.
    """
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "_wrap" and frame.f_globals.get("__name__") == _PCONTEXT_MODULE:
            event = frame.f_locals.get("queue_finished_reading_event")
            if callable(getattr(event, "set", None)):
                event.set()
            return
        frame = frame.f_back


def _worker(argv: list[str]) -> int:
    """What each forked worker runs: bridge-train's main, its return code as the exit code.

    0 is returned (torch's elastic layer waits for a return value from every worker); any
    other code leaves through SystemExit, which multiprocessing turns into the exit status,
    so torchrun sees the failure and stops the other workers. An exception is printed here,
    as a fresh interpreter would print it, instead of travelling to the launcher.
    """
    die_with_launcher()
    _fresh_interpreter_state()
    try:
        from megatron_bridge_cli.cli.main import main

        rc = main(argv)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt:
        rc = 128 + signal.SIGINT
    except BaseException:  # noqa: BLE001 - the worker's own traceback, then a failing exit
        traceback.print_exc()
        rc = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more to say
            pass
    if rc:
        raise SystemExit(rc)
    _do_not_wait_for_the_agent()
    return 0


# --------------------------------------------------------------------------- in the launching process
class _NoLauncherTraceback(logging.Filter):
    """torch's fork context logs a failed worker ("failed (exitcode: 2) local_rank: 0 ...") with
    the traceback of its own join(); the worker already printed what went wrong and
    launch_workers says which rank failed, in one line: drop the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text = None, None
        return not str(record.msg).startswith("failed (exitcode")


def failure_message(rank: int, code, restarts: Optional[int] = None) -> tuple[str, int]:
    """The line a failed job prints and its exit code, from the first failed worker's exit status;
    ``restarts``: the --max-restarts that were used up (ft_launcher's jobs say so)."""
    used_up = f" and --max-restarts ({restarts}) restarts are used up" if restarts is not None else ""
    if isinstance(code, int) and code < 0:  # killed by a signal; 128+N would read as `timeout`'s codes
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"{_PROG}: worker rank {rank} was killed by {name}{used_up}; the job stopped", 1
    if isinstance(code, int) and code > 0:
        return f"{_PROG}: worker rank {rank} failed with exit code {code}{used_up}; the job stopped", code
    return f"{_PROG}: worker rank {rank} failed (exit status {code!r}){used_up}; the job stopped", 1


@contextlib.contextmanager
def launcher_pid():
    """LAUNCHER_PID_ENV names this process for the workers started inside (die_with_launcher),
    restored after: the caller (a test, an embedding script) goes on, and its later children
    are not our workers."""
    previous_pid = os.environ.get(LAUNCHER_PID_ENV)
    os.environ[LAUNCHER_PID_ENV] = str(os.getpid())  # inherited by forked and exec'd workers alike
    try:
        yield
    finally:
        if previous_pid is None:
            os.environ.pop(LAUNCHER_PID_ENV, None)
        else:
            os.environ[LAUNCHER_PID_ENV] = previous_pid


def _elastic_config(args, start_method: str):
    """torchrun's own ``run()`` up to the launch, with the worker start method set."""
    from torch.distributed import run as torchrun

    if args.standalone:  # as torchrun.run(): a local c10d store on a free port
        args.rdzv_backend, args.rdzv_endpoint, args.rdzv_id = "c10d", "localhost:0", str(uuid.uuid4())
    if args.master_port is None:
        args.master_port = 29500
    config, cmd, cmd_args = torchrun.config_from_args(args)
    config.start_method = start_method
    return config, cmd, cmd_args


def launch_workers(*, nproc_per_node: int, nnodes: int = 1, node_rank: int = 0, master_addr: Optional[str] = None,
                   master_port: Optional[int] = None, max_restarts: int = 0, argv: Sequence[str] = ()) -> int:
    """Run the job; return its exit code (0, or the first failed worker's non-zero code).

    ``max_restarts`` (--max-restarts): torchrun's elastic agent restarts the whole worker group
    that many times when a worker fails; the restarted workers see TORCHELASTIC_RESTART_COUNT
    and resume from the latest checkpoint (training/fault_tolerance.resume_on_restart)."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch

    global _ignored_by_caller
    method = _start_method()
    _ignored_by_caller = frozenset(n for n in _AGENT_SIGNALS if signal.getsignal(getattr(signal, n)) == signal.SIG_IGN)
    args = torchrun.parse_args(torchrun_args(
        nproc_per_node=nproc_per_node, nnodes=nnodes, node_rank=node_rank,
        master_addr=master_addr, master_port=master_port, max_restarts=max_restarts, argv=list(argv),
    ))
    quiet = _NoLauncherTraceback()
    pcontext_log = logging.getLogger(_PCONTEXT_MODULE)
    pcontext_log.addFilter(quiet)
    try:
        with launcher_pid():
            if method == "fork":
                config, _, _ = _elastic_config(args, "fork")
                elastic_launch(config, _worker)(list(argv))
            else:
                torchrun.run(args)
        return 0
    except ChildFailedError as e:
        rank, first = e.get_first_failure()
        message, code = failure_message(rank, first.exitcode)
        sys.stdout.flush()
        print(message, file=sys.stderr, flush=True)
        return code
    except SignalException as e:
        # torchrun forwarded the signal to the workers and stopped them.
        return 128 + int(getattr(e, "sigval", signal.SIGTERM))
    finally:
        pcontext_log.removeFilter(quiet)
