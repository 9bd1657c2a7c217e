"""Let megatron-core train on a machine without CUDA (gloo backend, CPU tensors).

megatron-core 0.16 assumes a GPU in a handful of places that have nothing to do with the
maths. Instead of forking those call sites, this module makes "cuda" mean "cpu" for the
process, and only when ``torch.cuda.is_available()`` is False:

* a process-wide :class:`torch.overrides.TorchFunctionMode` (:class:`_CudaAsCpuMode`) rewrites
  cuda devices to cpu on every torch call, makes ``Tensor.cuda()`` a no-op, drops pinned
  memory and makes ``Tensor.type()`` answer ``torch.cuda.*``;
* a few ``torch.cuda`` functions that raise on a CPU-only build are replaced
  (``current_device``, ``synchronize``, ``set_device``, the RNG state functions, and streams
  and events);
* ``loss.backward()`` / ``torch.autograd.backward`` run with the mode still active (torch pops
  a mode while its ``__torch_function__`` runs, which would leave the whole backward pass,
  megatron-core's Python autograd functions included, outside it);
* megatron's model-parallel RNG tracker is pointed at the CPU generator, and the MoE token
  dispatcher's host copies of split sizes come back as NumPy arrays as they do from a GPU.

Limitations (by design, documented for callers):

* The mode lives on torch's *per-thread* mode stack. :func:`apply_cpu_compat` enters it in the
  calling thread; a thread of your own that creates tensors on "cuda" must call
  :func:`apply_cpu_compat` itself (cheap and idempotent). Autograd runs CPU backward passes on
  the calling thread inside the mode, so DDP gradient hooks and megatron-core's autograd
  functions are covered. Forked processes (dist_checkpointing's
  file writers) inherit the layer; ``spawn``-ed ones (its persistent async worker, DataLoader
  workers under spawn) start without it.
* On CPU there is one generator, so "cpu" and "cuda" RNG states are the same state.
* ``torch.cuda.Stream``/``Event``/``current_stream``/``stream`` are served by stand-ins that do
  nothing (:class:`_CpuStream`, :class:`_CpuEvent`): on the CPU every operation is already
  synchronous. megatron-core's MoE layer needs them (the alltoall token dispatcher copies its
  split sizes to the host on a side stream and waits for an event; shared-expert overlap runs
  on its own stream). ``nvtx`` and ``reset_peak_memory_stats`` still raise; the paths in use do
  not touch them. ``torch.cuda.memory_allocated`` & co. already return 0 on a CPU build.
* ``torch.cuda.device_count()`` stays 0 and ``is_available()`` stays False, so code can still
  tell it runs on CPU (megatron-core's async checkpoint worker divides by ``device_count()``:
  use synchronous checkpoint saves on CPU).
* Every torch call goes through the mode (~2 us of Python per call; ~45% slower steps on tiny
  models). Fine for tests and demos, not for benchmarks.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any, Callable

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["apply_cpu_compat", "cpu_compat_active"]

_CPU = torch.device("cpu")
_lock = threading.Lock()
_thread_state = threading.local()  # .entered: the mode is on this thread's stack
_patched = False  # process-wide torch.cuda / megatron patches are in place


def _as_cpu(device: Any) -> Any:
    """Map a cuda device spec (``'cuda'``, ``'cuda:1'``, ``torch.device('cuda')``, an int
    index as returned by ``torch.cuda.current_device()``) to cpu; leave anything else as is."""
    if isinstance(device, torch.device):
        return _CPU if device.type == "cuda" else device
    if isinstance(device, str):
        return _CPU if device.startswith("cuda") else device
    if isinstance(device, int) and not isinstance(device, bool):
        return _CPU  # a bare index always names an accelerator
    return device


def _cuda_type_name(tensor: torch.Tensor) -> str:
    """``'torch.FloatTensor'`` -> ``'torch.cuda.FloatTensor'``.

    optimizer/clip_grads.py (clip_grad_by_total_norm_fp32) asserts
    ``param.grad.type() == 'torch.cuda.FloatTensor'``, and optimizer/optimizer.py
    (Float16OptimizerWithFloat16Params) and optimizer/distrib_optimizer.py pick the
    fp32/fp16/bf16 branch by comparing ``.type()`` with ``'torch.cuda.*Tensor'`` strings
    (anything else raises TypeError).
    """
    name = torch._C.TensorBase.type(tensor)
    return "torch.cuda." + name[len("torch.") :] if name.count(".") == 1 else name


class _CudaAsCpuMode(TorchFunctionMode):
    """Rewrite every torch call so that CUDA requests are served on the CPU.

    Call sites this exists for (megatron-core 0.16.1): ``device='cuda'`` in
    optimizer/optimizer.py (found_inf, _scale_one), optimizer/clip_grads.py
    (get_grad_norm_fp32, count_zeros_fp32), pipeline_parallel/schedules.py
    (total_num_tokens) and dist_checkpointing exchange_utils/state_dict_saver;
    ``device=torch.cuda.current_device()`` (an int, see ``_current_device``) in
    utils.GlobalMemoryBuffer, tensor_parallel/layers.py and mappings.py,
    distributed/param_and_grad_buffer.py, distrib_optimizer.py, rotary embeddings and
    pipeline_parallel/p2p_communication.py (shape and receive buffers); ``.cuda()`` in
    models/common/language_module.py (tied embeddings on the last pipeline stage) and
    tensor_parallel/data.py; ``pin_memory=True`` in rope_utils.py and buffer offloading.
    """

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple = (),
        kwargs: dict | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func is _T_BACKWARD or func is _AUTOGRAD_BACKWARD:
            return _backward_under_mode(self, func, args, kwargs)
        if func is _T_CUDA or func is _T_PIN_MEMORY:
            return args[0]  # already "on the device" / pinning needs an accelerator
        if func is _T_TYPE and len(args) == 1 and kwargs.get("dtype") is None:
            return _cuda_type_name(args[0])
        if func is _T_TO and len(args) > 1:
            args = (args[0], _as_cpu(args[1])) + tuple(args[2:])  # t.to('cuda'), t.to(0)
        if "device" in kwargs or "pin_memory" in kwargs:
            kwargs = dict(kwargs)
            if "device" in kwargs:
                kwargs["device"] = _as_cpu(kwargs["device"])
            if kwargs.get("pin_memory"):
                kwargs["pin_memory"] = False
        return func(*args, **kwargs)


def _backward_under_mode(mode: TorchFunctionMode, func: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    """Run ``loss.backward()`` / ``torch.autograd.backward(...)`` with the mode still active.

    torch calls a mode's ``__torch_function__`` with that mode popped off the stack, so calling
    ``func`` here would run the whole backward pass, including Python autograd functions,
    without it. megatron-core allocates on ``torch.cuda.current_device()`` in backward passes
    (tensor_parallel/mappings.py ``_AllToAll``, used by the MoE alltoall dispatcher, and the
    sequence-parallel gathers), which then fails with "Cannot access accelerator device". So the
    engine is called directly (as megatron-core's own ``schedules.custom_backward`` does) with
    the mode pushed back. Default gradients are those of ``torch.autograd.backward``: ones for
    scalar outputs.
    """
    names = ("gradient" if func is _T_BACKWARD else "grad_tensors", "retain_graph", "create_graph", "inputs")
    tensors, rest = args[0], dict(zip(names, args[1:]))
    rest.update(kwargs)
    grads = rest.get(names[0])
    create_graph = bool(rest.get("create_graph"))
    retain_graph = rest.get("retain_graph")
    inputs = rest.get("inputs")
    tensors = (tensors,) if isinstance(tensors, torch.Tensor) else tuple(tensors)
    grads = (grads,) if grads is None or isinstance(grads, torch.Tensor) else tuple(grads)
    if len(grads) == 1 and len(tensors) > 1:
        grads = grads * len(tensors)
    filled = []
    for t, g in zip(tensors, grads):
        if g is None:
            if t.numel() != 1:
                raise RuntimeError("grad can be implicitly created only for scalar outputs")
            g = torch.ones_like(t, memory_format=torch.preserve_format)
        filled.append(g)
    inputs = () if inputs is None else ((inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs))
    with mode:
        torch.autograd.Variable._execution_engine.run_backward(
            tensors, tuple(filled), create_graph if retain_graph is None else retain_graph, create_graph,
            inputs, allow_unreachable=True, accumulate_grad=True,
        )


_T_CUDA = torch.Tensor.cuda
_T_PIN_MEMORY = torch.Tensor.pin_memory
_T_TYPE = torch.Tensor.type
_T_TO = torch.Tensor.to
_T_BACKWARD = torch.Tensor.backward
_AUTOGRAD_BACKWARD = torch.autograd.backward
_MODE = _CudaAsCpuMode()


def _current_device() -> int:
    """Stand-in for ``torch.cuda.current_device`` (which asserts on CPU builds).

    Returns 0 like a one-GPU machine, so call sites that format or compare it keep working;
    the mode maps the int to cpu wherever it is used as a device.
    """
    return 0


def _synchronize(*_args: Any, **_kwargs: Any) -> None:
    """Stand-in for ``torch.cuda.synchronize`` (nothing to wait for)."""


def _set_device(*_args: Any, **_kwargs: Any) -> None:
    """Stand-in for ``torch.cuda.set_device`` (nothing to select).

    A separate function from ``_synchronize`` on purpose: torch._dynamo registers every
    ``torch.cuda`` attribute by identity and asserts ("Duplicate torch object") when one
    function object sits under two names, which breaks importing megatron.core.models.gpt.
    """


def _cpu_get_rng_state(*_args: Any, **_kwargs: Any) -> torch.Tensor:
    """The CPU generator state stands in for the (single) CUDA generator state."""
    return torch.get_rng_state()


def _cpu_set_rng_state(new_state: torch.Tensor, *_args: Any, **_kwargs: Any) -> None:
    """Set the CPU generator; accepts megatron's ``device=``/``graph_safe=`` arguments."""
    torch.set_rng_state(new_state)


def _cpu_manual_seed(seed: int) -> None:
    """Seed the CPU generator. Not ``torch.manual_seed``: that calls
    ``torch.cuda.manual_seed_all`` and would loop back here if that were patched too."""
    torch.default_generator.manual_seed(int(seed))


class _DropRngWarning(logging.Filter):
    """CudaRNGStatesTracker.fork() warns when the CPU RNG state changed inside the fork. On CPU
    the forked ("cuda") generator *is* the CPU generator, so that warning would fire on every
    fork that draws random numbers (weight init, dropout) and means nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "CPU RNG state changed within GPU RNG context" not in record.getMessage()


class _CpuEvent:
    """Stand-in for ``torch.cuda.Event``: CPU work is complete when the call returns."""

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        pass

    def record(self, *_args: Any) -> None:
        """Nothing to mark."""

    def wait(self, *_args: Any) -> None:
        """Nothing to wait for."""

    def synchronize(self) -> None:
        """Nothing to wait for."""

    def query(self) -> bool:
        return True

    def elapsed_time(self, _other: "_CpuEvent") -> float:
        return 0.0


class _CpuStream:
    """Stand-in for ``torch.cuda.Stream``: one implicit in-order "stream", the calling thread.

    Used by megatron-core's MoE alltoall dispatcher (a class-level device-to-host stream,
    created when the first MoE layer is built, plus ``record_event()``/``synchronize()``) and
    by shared-expert overlap (``wait_stream``)."""

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        self.device = _CPU

    def wait_stream(self, _stream: Any) -> None:
        """Nothing to wait for."""

    def wait_event(self, _event: Any) -> None:
        """Nothing to wait for."""

    def record_event(self, event: Any = None) -> Any:
        return event if event is not None else _CpuEvent()

    def synchronize(self) -> None:
        """Nothing to wait for."""

    def query(self) -> bool:
        return True


_CURRENT_STREAM = _CpuStream()


def _current_stream(*_args: Any, **_kwargs: Any) -> _CpuStream:
    """Stand-in for ``torch.cuda.current_stream`` (asserts on CPU builds)."""
    return _CURRENT_STREAM


def _default_stream(*_args: Any, **_kwargs: Any) -> _CpuStream:
    """Stand-in for ``torch.cuda.default_stream``; a separate function object from
    ``_current_stream`` (see ``_set_device`` on why)."""
    return _CURRENT_STREAM


def _stream_context(_stream: Any) -> contextlib.AbstractContextManager:
    """Stand-in for ``torch.cuda.stream(s)``: run on the calling thread, as always."""
    return contextlib.nullcontext()


def _patch_torch_cuda() -> None:
    """Replace the ``torch.cuda`` functions megatron-core calls unconditionally."""
    # Used as a device for buffers/parameters (GlobalMemoryBuffer, GPTModel, TP layers, p2p).
    torch.cuda.current_device = _current_device
    # parallel_state, p2p_communication (use_ring_exchange / batch_p2p_sync),
    # DistributedDataParallel.offload/reload, dist_checkpointing fully_parallel.
    torch.cuda.synchronize = _synchronize
    # Launch code commonly calls set_device(local_rank); AttributeError on CPU builds.
    torch.cuda.set_device = _set_device
    # tensor_parallel/random.py: CudaRNGStatesTracker.add() reads/seeds the CUDA generator,
    # model_parallel_cuda_manual_seed() seeds it for the data-parallel state, and
    # rerun_state_machine saves/restores it. get_rng_state asserts on CPU builds; manual_seed
    # is a silent lazy no-op there, which would leave the default state unseeded.
    torch.cuda.get_rng_state = _cpu_get_rng_state
    torch.cuda.set_rng_state = _cpu_set_rng_state
    torch.cuda.manual_seed = _cpu_manual_seed
    # MoE token dispatchers and shared-expert overlap (see _CpuStream).
    torch.cuda.Stream = _CpuStream
    torch.cuda.Event = _CpuEvent
    torch.cuda.current_stream = _current_stream
    torch.cuda.default_stream = _default_stream
    torch.cuda.stream = _stream_context


def _patch_megatron_rng() -> None:
    """Point megatron's RNG tracker (fork(), activation recompute) at the CPU generator."""
    from megatron.core.tensor_parallel import random as mcore_random

    # fork() and CheckpointFunction use these module-level helpers. _get_cuda_rng_state calls
    # torch.cuda.random.get_rng_state (asserts), and _set_cuda_rng_state goes through
    # torch.cuda._lazy_call, which on a CPU build queues the call forever: the tracker would
    # silently never switch states.
    mcore_random._get_cuda_rng_state = _cpu_get_rng_state
    mcore_random._set_cuda_rng_state = _cpu_set_rng_state
    logging.getLogger(mcore_random.__name__).addFilter(_DropRngWarning())


def _patch_megatron_moe() -> None:
    """Host copies of the alltoall dispatcher's split sizes come back as NumPy arrays.

    ``moe_utils.maybe_move_tensor_to_cpu(t, as_numpy=True)`` converts only tensors that are
    ``is_cuda``; here the "device" tensors already live on the CPU, so it would hand torch
    tensors to ``all_to_all_single(output_split_sizes=...)``, which takes a sequence of ints
    and raises TypeError. The replacement does what the original does for a GPU tensor.
    """
    from megatron.core.transformer.moe import moe_utils, token_dispatcher

    original = moe_utils.maybe_move_tensor_to_cpu

    def maybe_move_tensor_to_cpu(tensor, as_numpy: bool = False, record_stream: bool = False):
        if as_numpy and torch.is_tensor(tensor) and not tensor.is_cuda:
            return tensor.numpy()
        return original(tensor, as_numpy=as_numpy, record_stream=record_stream)

    moe_utils.maybe_move_tensor_to_cpu = maybe_move_tensor_to_cpu
    token_dispatcher.maybe_move_tensor_to_cpu = maybe_move_tensor_to_cpu  # imported by name there


def _enter_mode_in_this_thread() -> None:
    """Push the mode on this thread's torch-function mode stack, once, and keep it there."""
    if not getattr(_thread_state, "entered", False):
        _MODE.__enter__()
        _thread_state.entered = True


def apply_cpu_compat() -> bool:
    """Activate the CPU compatibility layer when CUDA is absent.

    Idempotent: the process-wide patches are applied once; the mode is entered once per
    calling thread. Call it before building models/optimizers (and in any extra thread that
    creates tensors through megatron-core).

    Returns:
        True when the layer is active (no CUDA), False when CUDA is available and nothing
        was changed.
    """
    global _patched
    if torch.cuda.is_available():
        return False
    with _lock:
        if not _patched:
            _patch_torch_cuda()
            _patch_megatron_rng()
            _patch_megatron_moe()
            _patched = True
    _enter_mode_in_this_thread()
    return True


def cpu_compat_active() -> bool:
    """Whether :func:`apply_cpu_compat` has activated the layer in this process."""
    return _patched
