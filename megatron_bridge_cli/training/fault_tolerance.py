"""Surviving a dead or hung rank: heartbeats to nvidia-resiliency-ext's rank monitor (``--ft``),
resuming a restarted job from its own latest checkpoint, and ``--ft.simulate_fault``.

The pieces, and who does what:
- ``ft_launcher`` (nvidia-resiliency-ext's torchrun; ``bridge-train --nproc-per-node N --ft``
  starts it, training/ft_launch.py) runs one rank monitor process per rank. A rank whose
  heartbeats stop for longer than the timeout is killed (SIGKILL) and the launcher restarts the
  worker group, up to --max-restarts times. A dead rank is seen by the launcher directly.
- Each rank (``FaultTolerance`` here) connects a ``RankMonitorClient`` to its monitor and sends
  a heartbeat after setup, after every iteration and after every checkpoint save, so the
  longest silence is one iteration, evaluation or save. With --ft.calc_ft_timeouts the timeouts
  are recomputed from the observed intervals (all ranks agree on the max) at every save and at
  the end, and written to ``ft_state.json`` in --checkpoint.save; a restarted rank loads them
  before connecting, so the learned timeouts survive the restart (the extension's
  ``state_dict``/``load_state_dict``).
- A restarted worker (torchelastic's TORCHELASTIC_RESTART_COUNT > 0, also under plain torchrun
  with --max-restarts) resumes from the latest checkpoint in --checkpoint.save
  (``resume_on_restart``): the job finishes by itself.

The loop calls the module-level hooks (``before_iteration``, ``after_iteration``,
``after_save``); they do nothing unless ``activate`` installed an instance for this run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from typing import Optional

from megatron_bridge_cli.errors import ConfigError

__all__ = ["FaultTolerance", "restart_store", "activate", "deactivate", "started", "resume_on_restart", "restart_count", "check_launcher",
           "before_iteration", "after_iteration", "after_save", "FT_STATE_FILE", "RANK_MONITOR_ENV"]

FT_STATE_FILE = "ft_state.json"
RANK_MONITOR_ENV = "FT_RANK_MONITOR_IPC_SOCKET"  # nvidia_resiliency_ext.fault_tolerance.data: set by ft_launcher
_RESTART_ENV = "TORCHELASTIC_RESTART_COUNT"

_active: Optional["FaultTolerance"] = None
_inprocess_attempt = 0
"""In-process restarts so far (set by training/inprocess.py): a simulated fault fires in attempt 0 only."""
_attempt_store = None
"""The in-process wrapper's store for this attempt's process group (training/inprocess.py)."""


def restart_count() -> int:
    """How many times the launcher (torchrun / ft_launcher) or the in-process wrapper restarted this job."""
    text = os.environ.get(_RESTART_ENV, "0").strip()
    return (int(text) if text.isdigit() else 0) + _inprocess_attempt


def in_attempt() -> bool:
    """True inside an in-process restart attempt (training/inprocess.py)."""
    return _attempt_store is not None


def _rank0() -> bool:
    return os.environ.get("RANK", "0") == "0"


def resume_on_restart(cfg) -> None:
    """On a restarted attempt, resume from the run's own latest checkpoint (--checkpoint.save).

    The first attempt loads what --checkpoint.load says (maybe nothing). A restart must continue
    from where the failed attempt saved last, or it would train the lost iterations from the
    original start again; so when --checkpoint.save holds a checkpoint, it becomes the folder to
    load (a full resume: not --checkpoint.finetune, not a fixed --checkpoint.ckpt_step).
    """
    ck = cfg.checkpoint
    if restart_count() == 0 or not ck.save:
        return
    from megatron_bridge_cli.training.checkpoint_files import read_tracker

    _, latest = read_tracker(ck.save)
    if latest is None:
        return
    if _rank0():
        print(f"restart {restart_count()}: resuming from the latest checkpoint in --checkpoint.save={ck.save} "
              f"(iteration {latest})", flush=True)
    ck.load, ck.finetune, ck.ckpt_step = ck.save, False, None


def restart_store(rank: int, world_size: int, timeout):
    """The store a restarted attempt's default process group rendezvouses on: torchelastic's, with
    keys of this attempt's own (None on a first attempt: init_method env:// as usual).

    torchrun's workers share the agent's TCPStore across restarts, and init_process_group's keys
    (each rank's gloo address, the barrier counters) of the failed attempt are still in it:
    probed with torch 2.13, a restarted gloo job connected to the dead rank's address, or hung in
    the rendezvous. A prefix per attempt gives every attempt a clean namespace.
    """
    if _attempt_store is not None:
        return _attempt_store
    n = os.environ.get(_RESTART_ENV, "0").strip()
    if not n.isdigit() or int(n) == 0:
        return None
    import torch

    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = torch.distributed.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
        is_master=not agent_store and rank == 0, timeout=timeout, multi_tenant=not agent_store,
    )
    return torch.distributed.PrefixStore(f"bridge_train_attempt_{n}", store)


def check_launcher(cfg) -> None:
    """--ft sends heartbeats to ft_launcher's rank monitors: refuse to start without them."""
    ft = cfg.ft
    if ft is None or not ft.enable_ft_package or os.environ.get(RANK_MONITOR_ENV):
        return
    raise ConfigError(
        "--ft: this process was not started by nvidia-resiliency-ext's ft_launcher, so there is no rank monitor "
        "to send heartbeats to (no FT_RANK_MONITOR_IPC_SOCKET in the environment). Start the job with "
        "`bridge-train --nproc-per-node N --ft ...` (it runs ft_launcher's machinery) or `ft_launcher "
        "--nproc-per-node N --max-restarts K -m megatron_bridge_cli --ft ...`; or use --ft.enable_ft_package=false "
        "(the simulated fault only), or --ft=null"
    )


# --------------------------------------------------------------------------- the rank's side of ft
class FaultTolerance:
    """This rank's RankMonitorClient, its heartbeats and its learned timeouts."""

    def __init__(self, cfg):
        self.cfg = cfg
        ck = cfg.checkpoint
        self.state_path = os.path.join(ck.save, FT_STATE_FILE) if ck.save else None
        self.client = None
        self.loaded: Optional[dict] = None
        if cfg.ft.enable_ft_package:
            from nvidia_resiliency_ext.fault_tolerance import RankMonitorClient

            self.client = RankMonitorClient()
            for folder in (ck.save, ck.load):
                path = os.path.join(folder, FT_STATE_FILE) if folder else None
                if path and os.path.isfile(path):
                    with open(path) as f:
                        self.loaded = json.load(f)
                    self.client.load_state_dict(self.loaded)
                    break
            self.client.init_workload_monitoring()
            if self.loaded and _rank0():
                hb = self.loaded.get(self.client.CURRENT_TIMEOUTS_STATE_KEY, {}).get("heartbeat", {})
                print(f"ft: reusing the calculated heartbeat timeouts of {path}: initial {hb.get('initial', 0):.1f}s, "
                      f"subsequent {hb.get('subsequent', 0):.1f}s", flush=True)
        self.fault: Optional[_SimulatedFault] = None
        self.unlearned = 0  # heartbeats since the timeouts were last learned
        self.sent, self.sending_s = 0, 0.0  # what the heartbeats cost this rank (printed at the end)

    def started(self) -> None:
        """Setup is done (all ranks): the first heartbeat; arm the simulated fault of a first attempt."""
        self.heartbeat()
        if self.cfg.ft.simulate_fault and restart_count() == 0:
            self.fault = _SimulatedFault(self.cfg)

    def heartbeat(self) -> None:
        if self.client is not None:
            t0 = time.perf_counter()
            self.client.send_heartbeat()
            self.sent, self.sending_s = self.sent + 1, self.sending_s + time.perf_counter() - t0
            self.unlearned += 1

    def update_timeouts(self) -> None:
        """--ft.calc_ft_timeouts: recompute from what all ranks observed (a collective) and save them."""
        if self.client is None or not self.cfg.ft.calc_ft_timeouts or not self.unlearned:
            return
        if not self.client.calculate_and_set_hb_timeouts(skip_if_not_ready=True):
            return
        self.unlearned = 0
        hb = self.client.hb_timeouts
        if self.state_path and _rank0():
            tmp = self.state_path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(self.client.state_dict(), f)
            os.replace(tmp, self.state_path)  # a kill mid-write leaves the previous file
            print(f"ft: heartbeat timeouts set from observed intervals: initial {hb.initial:.1f}s, subsequent "
                  f"{hb.subsequent:.1f}s (saved to {self.state_path})", flush=True)

    def close(self, finished: bool) -> None:
        if self.client is None:
            return
        if finished:
            self.update_timeouts()
            if _rank0() and self.sent:
                print(f"ft: rank 0 sent {self.sent} heartbeats, {1000 * self.sending_s / self.sent:.3f} ms each "
                      "on average", flush=True)
        self.client.shutdown_workload_monitoring()
        self.client = None


class _SimulatedFault:
    """--ft.simulate_fault: one rank stops (SIGSTOP: hung, only a timeout finds it), dies (SIGKILL), or
    raises (rank_error: a software fault its process survives, what in-process restart recovers from)."""

    def __init__(self, cfg):
        import torch

        ft, world = cfg.ft, torch.distributed.get_world_size()
        rng = random.Random(cfg.rng.seed)  # every rank draws the same
        self.rank = ft.simulated_fault_rank if ft.simulated_fault_rank is not None else rng.randrange(world)
        self.kind = ft.simulated_fault_type if ft.simulated_fault_type != "random" else rng.choice(
            ["rank_hung", "rank_killed"])
        self.iteration = ft.simulated_fault_iteration
        self.mine = torch.distributed.get_rank() == self.rank
        self.due = False  # a rank_error after the delay: raised by the main thread at the next iteration
        if self.mine and self.iteration is None:
            timer = threading.Timer(ft.simulated_fault_base_delay, self.fire, args=(None,))
            timer.daemon = True
            timer.start()

    def fire(self, iteration: Optional[int]) -> None:
        where = f"as iteration {iteration} begins" if iteration is not None else "after the base delay"
        what = {"rank_hung": "hangs (SIGSTOP)", "rank_killed": "dies (SIGKILL)"}.get(self.kind, "raises an error")
        if self.kind == "rank_error" and threading.current_thread() is not threading.main_thread():
            self.due = True
            return
        print(f"ft.simulate_fault: rank {self.rank} {what} {where}", flush=True)
        if self.kind == "rank_error":
            raise RuntimeError(f"ft.simulate_fault: simulated error on rank {self.rank} {where}")
        time.sleep(0.05)  # let the line reach the log
        os.kill(os.getpid(), signal.SIGSTOP if self.kind == "rank_hung" else signal.SIGKILL)


# --------------------------------------------------------------------------- hooks the loop calls
def activate(cfg) -> Optional[FaultTolerance]:
    """Install this run's FaultTolerance (None when --ft is off), before setup: the time to the first
    heartbeat (``started``, after setup and checkpoint load) is what the initial timeout covers."""
    global _active
    _active = FaultTolerance(cfg) if cfg.ft is not None else None
    return _active


def deactivate(finished: bool) -> None:
    global _active
    ft, _active = _active, None
    if ft is not None:
        ft.close(finished)


def started() -> None:
    if _active is not None:
        _active.started()


def before_iteration(iteration: int) -> None:
    """``iteration`` (1-based) is about to train."""
    ft = _active
    fault = ft.fault if ft is not None else None
    if fault is not None and fault.mine and (fault.iteration == iteration or fault.due):
        ft.fault = None  # once
        fault.fire(iteration)


def after_iteration() -> None:
    if _active is not None:
        _active.heartbeat()


def after_save() -> None:
    """A checkpoint was saved (all ranks): heartbeat, and maybe learn and save the timeouts."""
    if _active is not None:
        _active.heartbeat()
        _active.update_timeouts()
