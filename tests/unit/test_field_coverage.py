"""No field is silently ignored: every flag of the config tree changes what a run does, or
validation refuses a value of it that would change nothing.

``test_every_field_acts_or_is_refused`` walks every flag path of the generated flag table
(every class a section can hold, sections that are off by default switched on) and needs one
of these proofs for each; a path with none fails the test, named:

(a) handed to megatron-core whole: a field of megatron-core's TransformerConfig,
    OptimizerConfig or DistributedDataParallelConfig (sections model, optimizer, ddp) that
    megatron-core's training code reads: an attribute access ``.field`` in its sources outside
    the config modules and outside code bridge-train never runs (inference, Megatron FSDP,
    export). ``test_config_objects_are_handed_to_megatron_core_whole`` proves the objects
    themselves reach megatron-core (identity inside the built model, DDP and optimizer).
(b) read by bridge-train's run code: an attribute access ``.field`` on that section's object
    (``cfg.dataset.pin_memory``, ``d.pin_memory`` after ``d = cfg.dataset``, ``self.field`` in
    the section's own methods, a parameter annotated with the section's class) in the package
    outside cli/ and outside check functions (a check that reads a field does not make it act).
(c) derived by finalize: a non-default value changes the finalized container elsewhere
    (--mixed_precision.* and --comm_overlap.* set model/optimizer/ddp fields; megatron-core
    derives init_method from init_method_std, ...).
(d) refused: finalize() with a non-default value raises a ConfigError that names the flag.
    No section is refused as a whole any more: every section the container has is driven.

The fields the issue named (logger.timing_log_level, logger.log_params_norm,
dataset.pin_memory, mixed_precision.autocast_enabled, rerun_state_machine.check_for_nan_in_loss)
also have effect tests: tests/integration/test_field_effects.py and the unit tests below.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import enum
import functools
import importlib
import logging
import sys
import typing
from pathlib import Path

import pytest
import torch
from megatron_bridge_cli.recipes import RECIPES

from megatron_bridge_cli import typeinfo
from megatron_bridge_cli.cli.flags import build_table, kind_class
from megatron_bridge_cli.config import SECTION_KINDS, finalize
from megatron_bridge_cli.errors import ConfigError
from tests.unit.test_recipes import single_rank  # noqa: F401  (fixture)

PACKAGE = Path(__file__).resolve().parents[2] / "megatron_bridge_cli"
WHOLESALE = ("model", "optimizer", "ddp")
CHECK_WORDS = {"check", "problem", "problems", "validate"}  # words of functions that only judge a config
MCORE_CONFIG_MODULES = {"transformer/transformer_config.py", "model_parallel_config.py",
                        "optimizer/optimizer_config.py", "distributed/distributed_data_parallel_config.py"}
MCORE_NOT_RUN = ("inference/", "distributed/fsdp/", "distributed/torch_fully_sharded", "export/",
                 "post_training/", "models/retro", "models/multimodal", "models/vision", "models/mimo",
                 "models/huggingface", "models/bert")
"""megatron-core code bridge-train never runs: a field read only there is not acted on."""


# ----------------------------------------------------------------------------- (a) megatron-core reads
@functools.lru_cache(maxsize=None)
def megatron_core_reads() -> frozenset:
    import megatron.core

    root = Path(megatron.core.__file__).parent
    names = set()
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).as_posix()
        if rel in MCORE_CONFIG_MODULES or rel.startswith(MCORE_NOT_RUN):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                names.add(node.attr)
            elif (isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("getattr", "hasattr")
                  and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)):
                names.add(node.args[1].value)
    return frozenset(names)


def mcore_class(section: str):
    from megatron.core.distributed import DistributedDataParallelConfig
    from megatron.core.optimizer import OptimizerConfig
    from megatron.core.transformer.transformer_config import TransformerConfig

    return {"model": TransformerConfig, "optimizer": OptimizerConfig, "ddp": DistributedDataParallelConfig}[section]


# ----------------------------------------------------------------------------- (b) bridge-train reads
class _SectionReads(ast.NodeVisitor):
    """Attribute reads whose receiver is a known section: {section: {field, ...}}."""

    def __init__(self, sections: set, classes: dict, bound_params: dict):
        self.sections, self.classes = sections, classes  # classes: class name -> sections holding it
        self.bound_params = bound_params  # function name -> {parameter: sections} seen at call sites
        self.reads: dict[str, set] = {s: set() for s in sections}
        self.scopes: list[dict] = [{}]  # name -> sections, per function
        self.self_sections: list[set] = [set()]
        self.params: dict[str, list[str]] = {}  # function name -> parameter names
        self.calls: list[tuple[str, int | str, set]] = []  # (function, position or keyword, sections)

    def _receiver_sections(self, node) -> set:
        if isinstance(node, ast.Attribute) and node.attr in self.sections:
            return {node.attr}
        if isinstance(node, ast.Name):
            if node.id == "self":
                return self.self_sections[-1]
            for scope in reversed(self.scopes):
                if node.id in scope:
                    return scope[node.id]
        return set()

    def _bind(self, target, value) -> None:
        if isinstance(target, ast.Name):
            found = self._receiver_sections(value)
            if found:
                self.scopes[-1][target.id] = found
        elif isinstance(target, (ast.Tuple, ast.List)) and isinstance(value, (ast.Tuple, ast.List)):
            for t, v in zip(target.elts, value.elts):
                self._bind(t, v)

    def visit_ClassDef(self, node):
        self.self_sections.append(set(self.classes.get(node.name, ())))
        self.generic_visit(node)
        self.self_sections.pop()

    def visit_FunctionDef(self, node):
        if CHECK_WORDS & set(node.name.strip("_").split("_")):
            return  # reading a field to judge it is not acting on it
        self.params[node.name] = [a.arg for a in node.args.args if a.arg != "self"]
        scope = {k: set(v) for k, v in self.bound_params.get(node.name, {}).items()}
        for arg in node.args.args + node.args.kwonlyargs:
            ann = ast.unparse(arg.annotation) if arg.annotation is not None else ""
            held = {s for name, secs in self.classes.items() if ann.strip("'\"") == name for s in secs}
            if held:
                scope[arg.arg] = held
        self.scopes.append(scope)
        self.generic_visit(node)
        self.scopes.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Assign(self, node):
        self.generic_visit(node)
        for target in node.targets:
            self._bind(target, node.value)

    def visit_Attribute(self, node):
        if isinstance(node.ctx, ast.Load):  # setting a field is not acting on it
            for section in self._receiver_sections(node.value):
                self.reads[section].add(node.attr)
        self.generic_visit(node)

    def visit_Call(self, node):
        constant_getattr = len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
        if getattr(node.func, "id", None) == "getattr" and constant_getattr:
            for section in self._receiver_sections(node.args[0]):
                self.reads[section].add(node.args[1].value)
        func = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
        if func:  # a section passed to a function binds its parameter (resolved in a second pass)
            for i, arg in enumerate(node.args):
                if self._receiver_sections(arg):
                    self.calls.append((func, i, self._receiver_sections(arg)))
            for kw in node.keywords:
                if kw.arg and self._receiver_sections(kw.value):
                    self.calls.append((func, kw.arg, self._receiver_sections(kw.value)))
        self.generic_visit(node)


@functools.lru_cache(maxsize=None)
def bridge_reads() -> dict:
    table = build_table()
    classes: dict[str, set] = {}
    for section in table.sections.values():
        for cls in section.classes:
            for klass in cls.__mro__:  # methods inherited from a base (ModelProviderBase) read self too
                if dataclasses.is_dataclass(klass) and klass.__module__.startswith("megatron_bridge_cli"):
                    classes.setdefault(klass.__name__, set()).add(section.path)
    trees = [ast.parse(path.read_text()) for path in sorted(PACKAGE.rglob("*.py"))
             if not _judging_module(path.relative_to(PACKAGE).as_posix())]
    bound: dict[str, dict[str, set]] = {}
    for _ in range(3):  # call-site bindings reach functions called from functions they bind
        visitor = _SectionReads(set(table.sections), classes, bound)
        for tree in trees:
            visitor.visit(tree)
        for func, where, sections in visitor.calls:
            params = visitor.params.get(func, [])
            name = params[where] if isinstance(where, int) and where < len(params) else where
            if isinstance(name, str):
                bound.setdefault(func, {}).setdefault(name, set()).update(sections)
    return visitor.reads


def _judging_module(rel: str) -> bool:
    """cli/ (parsing, help, dry-run estimates) and the validation modules judge a config; they do not run it."""
    return rel.startswith("cli/") or rel.endswith("_checks.py") or rel in ("config/validation.py", "data/checks.py",
                                                                          "training/preflight.py")


# ----------------------------------------------------------------------------- (c)/(d) finalize
def _tiny():
    return RECIPES["gpt_cpu_tiny"]()


def _tiny_bf16():
    from megatron_bridge_cli.config.precision import bf16_mixed

    cfg = _tiny()
    cfg.mixed_precision = bf16_mixed()
    return cfg


def _tiny_moe():
    cfg = _tiny()
    m = cfg.model
    m.num_moe_experts, m.moe_router_topk, m.moe_ffn_hidden_size = 4, 2, 128
    m.moe_token_dispatcher_type = "allgather"
    return cfg


def _t5():
    return RECIPES["t5_220m"]()


BASES = (_tiny, _tiny_bf16, _tiny_moe)
"""Containers a field's effect is looked for in: some fields act only with bf16 or MoE on."""


def base_configs(section: str, cls: type):
    """Small containers whose ``section`` holds an instance of ``cls``."""
    for make in ((_t5,) if cls.__name__.startswith("T5") else BASES):
        cfg = make()
        if getattr(cfg, section) is None or type(getattr(cfg, section)) is not cls:
            kinds = SECTION_KINDS.get(section, {})
            factory = next((f for f in kinds.values() if kind_class(f) is cls), cls)
            setattr(cfg, section, factory())
        yield cfg


def other_values(hint, current) -> list:
    """Valid values of type ``hint`` other than ``current`` (one or two per kind of type)."""
    inner, _ = typeinfo.unwrap_optional(hint)
    found = []
    for member in typeinfo.members(inner):
        if member is bool:
            found += [v for v in (True, False) if v != current]
        elif typeinfo.origin(member) is typing.Literal:
            found += [c for c in typing.get_args(member) if c != current][:2]
        elif isinstance(member, type) and issubclass(member, enum.Enum):
            found += [c for c in member if c != current][:2]
        elif typeinfo.is_dtype(member):
            found += [d for d in (torch.bfloat16, torch.float16) if d != current]
        elif member is int:
            found += [2 if current in (None, 0, 1) else current + 1]
        elif member is float:
            found += [0.5 if current in (None, 0.0, 1.0) else current * 2]
        elif member is str:
            found += ["x"]
        elif typeinfo.origin(member) in (list, tuple):
            item = (typing.get_args(member) or (str,))[0]
            found += [[v] for v in other_values(item, None)[:1]]
    return found


def single_valued(hint) -> bool:
    """The type admits one value only (``Literal["torch_dist"]``): flags and YAML refuse any other."""
    inner, optional = typeinfo.unwrap_optional(hint)
    return not optional and typeinfo.origin(inner) is typing.Literal and len(typing.get_args(inner)) == 1


def _plain(value):
    """Comparable form of a config value (functools.partial and functions by what they do)."""
    if isinstance(value, functools.partial):
        return ("partial", _plain(value.func), tuple(_plain(a) for a in value.args),
                tuple(sorted((k, _plain(v)) for k, v in value.keywords.items())))
    if callable(value) and hasattr(value, "__qualname__"):
        return ("callable", getattr(value, "__module__", ""), value.__qualname__)
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    return value


def snapshot(cfg) -> dict:
    """Every dataclass field of every section (derived ones too), comparable, and the torch
    switch megatron-core's __post_init__ sets (disable_bf16_reduced_precision_matmul)."""
    out = {"torch.allow_bf16_reduced_precision_reduction":
           torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction}
    for f in dataclasses.fields(cfg):
        obj = getattr(cfg, f.name)
        if dataclasses.is_dataclass(obj):
            for g in dataclasses.fields(obj):
                out[f"{f.name}.{g.name}"] = _plain(getattr(obj, g.name))
    return out


def try_finalize(cfg):
    """(finalized, None) or (None, error text); with the snapshot of torch switches taken inside."""
    matmul = torch.backends.cuda.matmul
    saved = matmul.allow_bf16_reduced_precision_reduction
    logging.disable(logging.WARNING)  # precision presets warn about explicit values: not this test's subject
    try:
        final = finalize(cfg, 1)
        return snapshot(final), None
    except ConfigError as e:
        return None, str(e)
    finally:
        logging.disable(logging.NOTSET)
        matmul.allow_bf16_reduced_precision_reduction = saved


def finalize_proof(path: str, flag) -> str | None:
    """'derived' or 'refused' when setting ``path`` to a non-default value shows in finalize():
    the finalized container differs elsewhere, or the error names the flag (or, for a value a
    section hands on, like --comm_overlap.X -> --model.X, the field)."""
    section, name = flag.section, flag.name
    for cls in flag.owners:
        for cfg in base_configs(section, cls):
            obj = getattr(cfg, section)
            before, error = try_finalize(cfg)
            if error is not None:
                continue  # this kind cannot run here at all (Mamba without mamba-ssm): no baseline
            for value in other_values(typeinfo.field_type_hints(type(obj))[name], getattr(obj, name)):
                changed = copy.deepcopy(cfg)
                setattr(getattr(changed, section), name, value)
                changed.explicit_paths.add(path)
                after, error = try_finalize(changed)
                if error is not None:
                    if f"--{path}" in error:
                        return "refused"
                    continue
                if any(before.get(k) != v for k, v in after.items() if k != path):
                    return "derived"
    return None


HANDING_ON = {"mixed_precision": "apply_mixed_precision", "comm_overlap": "apply_comm_overlap"}
"""Sections whose values finalize() copies into model/optimizer/ddp (config/finalize.py)."""


def handed_on_proof(path: str, flag) -> str | None:
    """'handed-on' when finalize's step for the section copies a non-default value into a field
    of another section that itself acts (megatron-core or bridge-train reads it)."""
    step = getattr(importlib.import_module("megatron_bridge_cli.config.finalize"), HANDING_ON[flag.section])
    table = build_table()
    for cfg in base_configs(flag.section, flag.owners[0]):
        obj = getattr(cfg, flag.section)
        for value in other_values(typeinfo.field_type_hints(type(obj))[flag.name], getattr(obj, flag.name)):
            before, after = copy.deepcopy(cfg), copy.deepcopy(cfg)
            setattr(getattr(after, flag.section), flag.name, value)
            logging.disable(logging.WARNING)
            try:
                step(before)
                step(after)
            finally:
                logging.disable(logging.NOTSET)
            old, new = snapshot(before), snapshot(after)
            targets = [k for k, v in new.items() if old.get(k) != v and k.split(".")[0] not in HANDING_ON]
            if any(t in table.flags and classify(t, table.flags[t]) in ("megatron-core", "read") for t in targets):
                return "handed-on"
    return None


# ----------------------------------------------------------------------------- the walk
def classify(path: str, flag) -> str | None:
    section, name = flag.section, flag.name
    if single_valued(flag.hint):
        return "single-valued"
    if name in bridge_reads().get(section, ()):
        return "read"
    if section in WHOLESALE and name in {f.name for f in dataclasses.fields(mcore_class(section))}:
        if name in megatron_core_reads():
            return "megatron-core"
    if section in HANDING_ON and handed_on_proof(path, flag):
        return "handed-on"
    return finalize_proof(path, flag)


def test_every_field_acts_or_is_refused():
    table = build_table()
    results = {path: classify(path, flag) for path, flag in table.flags.items()}
    missing = sorted(p for p, how in results.items() if how is None)
    assert not missing, (
        f"{len(missing)} field(s) neither act nor are refused (read by no run code, not read by "
        f"megatron-core, no effect on finalize(), not refused): {missing}"
    )
    counts = {how: sum(1 for v in results.values() if v == how) for how in set(results.values())}
    print("field coverage:", counts)
    assert len(results) == len(table.flags) > 450


def test_the_named_offenders_are_now_read_by_the_run():
    """The issue's five fields: read by the loop/data code (before, nothing read them)."""
    reads = bridge_reads()
    assert {"timing_log_level", "log_params_norm"} <= reads["logger"]
    assert "pin_memory" in reads["dataset"]
    assert {"check_for_nan_in_loss", "check_for_spiky_loss"} <= reads["rerun_state_machine"]
    assert "autocast_enabled" in reads["mixed_precision"]  # precision_assignments -> model.enable_autocast
    assert "enable_autocast" in reads["model"]  # the loop autocasts on CPU


def test_the_walk_does_not_pass_a_field_nobody_reads(monkeypatch):
    """Take the run code's reads of the issue's fields away and the walk finds them silent again:
    neither finalize() nor validation would have made up for them (as before this change)."""
    table = build_table()
    reads = {section: set(names) for section, names in bridge_reads().items()}
    for path in ("logger.timing_log_level", "logger.log_params_norm", "dataset.pin_memory",
                 "rerun_state_machine.check_for_nan_in_loss"):
        section, name = path.split(".")
        reads[section].discard(name)
    monkeypatch.setattr(sys.modules[__name__], "bridge_reads", lambda: reads)
    for path in ("logger.timing_log_level", "logger.log_params_norm", "dataset.pin_memory",
                 "rerun_state_machine.check_for_nan_in_loss"):
        assert classify(path, table.flags[path]) is None, path
    # and a read on another object of the same name is not a read of the section
    assert "pin_memory" not in {n for s, names in bridge_reads().items() if s != "dataset" for n in names}


# ----------------------------------------------------------------------------- refusals
REFUSED = [
    ("model.grad_scale_func", print, "installed by the training loop"),
    ("model.timers", print, "installed by the training loop"),
    ("optimizer.timers", print, "--logger.timing_log_level"),
    ("model.apply_residual_connection_post_layernorm", True, "would change nothing"),
    ("model.moe_extended_tp", True, "deprecated"),
    ("model.mtp_num_layers", 1, "not supported"),
    ("model.multi_latent_attention", True, "not supported"),
    ("model.qk_clip", True, "clip_qk"),
    ("model.hybrid_context_parallel", True, "not supported"),
    ("model.cuda_graph_impl", "transformer_engine", "cuda_graph_impl=local"),
    ("model.tp_comm_overlap", True, "userbuffers"),
    ("model.pipeline_model_parallel_comm_backend", "nccl", "needs CUDA"),
    ("model.use_te_rng_tracker", True, "Transformer Engine"),
    ("rng.te_rng_tracker", True, "Transformer Engine"),
    ("model.enable_autocast", True, "autocast_dtype=bf16"),
    ("model.autocast_dtype", torch.bfloat16, "--model.enable_autocast"),
    ("optimizer.main_grads_dtype", torch.bfloat16, "fp32"),
    ("ddp.use_megatron_fsdp", True, "DistributedDataParallel"),
    ("ddp.fsdp_double_buffer", True, "Megatron FSDP"),
    ("ddp.fp8_param_gather", True, "--mixed_precision.fp8_param_gather"),
    ("rerun_state_machine.error_injection_rate", 5, "rerun_mode=validate_results"),
]


@pytest.mark.parametrize("path,value,hint", REFUSED, ids=[p for p, _, _ in REFUSED])
def test_values_the_loop_cannot_honor_are_refused_naming_the_flag(path, value, hint):
    if "te_rng_tracker" in path:
        from megatron_bridge_cli.config.models.provider import (
            transformer_engine_available,
        )

        if transformer_engine_available():
            pytest.skip("Transformer Engine is installed: its RNG tracker is honored")
    if path.endswith("pipeline_model_parallel_comm_backend") and torch.cuda.is_available():
        pytest.skip("CUDA present: NCCL pipeline groups work")
    cfg = _tiny()
    section, name = path.split(".")
    setattr(getattr(cfg, section), name, value)
    with pytest.raises(ConfigError) as e:
        finalize(cfg, 1)
    assert f"--{path}" in str(e.value) and hint in str(e.value), str(e.value)


def test_autocast_with_a_half_dtype_is_accepted_and_reaches_the_model():
    from megatron_bridge_cli.config.precision import fp32

    cfg = _tiny()
    cfg.mixed_precision = fp32()
    cfg.mixed_precision.autocast_enabled, cfg.mixed_precision.autocast_dtype = True, torch.bfloat16
    final = finalize(cfg, 1)
    assert final.model.enable_autocast and final.model.autocast_dtype == torch.bfloat16
    assert final.model.params_dtype == torch.float32  # weights stay fp32: autocast, not casting
    cfg.mixed_precision.autocast_dtype = None  # autocast to the fp32 params dtype: refused
    with pytest.raises(ConfigError, match="--mixed_precision.autocast_enabled autocasts to float32"):
        finalize(cfg, 1)


def test_no_shipped_recipe_trips_a_refusal():
    """The refusals hit only values a user sets: no recipe default trips one."""
    from megatron_bridge_cli.config.unsupported_checks import check_unsupported

    for name, fn in RECIPES.items():
        assert check_unsupported(fn()) == [], name


# ----------------------------------------------------------------------------- built objects (one rank)
@pytest.fixture(scope="module")
def built(single_rank):  # noqa: F811
    from megatron_bridge_cli.training import setup as S

    cfg = RECIPES["gpt_cpu_tiny"](num_layers=2, hidden_size=64, seq_length=64)
    cfg.logger.timing_log_level = 2
    final = finalize(cfg, 1)
    S.set_seeds(final)
    model = S.build_model(final)
    optimizer = S.build_optimizer(final, model)
    return final, model, optimizer


def test_config_objects_are_handed_to_megatron_core_whole(built):
    """(a) of the walk: the model, optimizer and DDP sections are the very objects megatron-core holds."""
    from megatron_bridge_cli.training.setup import unwrap

    final, model, optimizer = built
    gpt = unwrap(model[0])
    assert gpt.config is final.model
    assert all(layer.config is final.model for layer in gpt.decoder.layers)
    assert model[0].ddp_config is final.ddp and model[0].config is final.model
    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        assert opt.config is final.optimizer


def test_timing_log_level_hands_megatron_core_timers_at_that_level(built):
    from megatron.core.timers import DummyTimer, Timers

    from megatron_bridge_cli.training.metrics import make_timers

    final, _, _ = built
    assert isinstance(final.model.timers, Timers) and final.optimizer.timers is final.model.timers
    assert not isinstance(final.model.timers("forward-compute", log_level=2), DummyTimer)
    level1 = make_timers(1)
    assert isinstance(level1("forward-compute", log_level=2), DummyTimer)  # level 2 timers are off at 1
    assert not isinstance(level1("optimizer", log_level=1), DummyTimer)
    assert make_timers(0) is None  # level 0: megatron-core times nothing, the log line has the iteration time


def test_params_norm_is_the_l2_norm_of_every_parameter_once(built):
    from megatron_bridge_cli.training.metrics import params_norm

    _, model, _ = built
    unique = {id(p): p for chunk in model for p in chunk.parameters()}  # the tied embedding once
    expected = torch.sqrt(sum((p.detach().double() ** 2).sum() for p in unique.values())).item()
    assert params_norm(model, moe=False) == pytest.approx(expected, rel=1e-6)
    weight = next(iter(unique.values()))
    with torch.no_grad():
        weight.mul_(2.0)
        changed = params_norm(model, moe=False)
        weight.mul_(0.5)
    assert changed > expected


def test_the_nan_check_stops_on_nan_and_inf_and_only_when_asked(built):
    from megatron_bridge_cli.training.loop import NonFiniteLoss, guard_loss
    from megatron_bridge_cli.training.rerun import init_rerun_state_machine

    final, _, _ = built
    init_rerun_state_machine(final)
    on = final.rerun_state_machine
    off = dataclasses.replace(on, check_for_nan_in_loss=False)
    guard_loss(torch.tensor(3.0), on)
    for bad, word in ((float("nan"), "NaN"), (float("inf"), "Inf")):
        with pytest.raises(NonFiniteLoss, match=rf"^rank 0, iteration -?\d+: the loss is {word} "):
            guard_loss(torch.tensor(bad), on)
        guard_loss(torch.tensor(bad), off)  # not asked: training goes on (and counts nan iterations)


def test_the_spiky_loss_check_warns_on_a_spike(built, caplog):
    """--rerun_state_machine.check_for_spiky_loss: a loss 10x the largest of the first 100 is
    reported (a warning: Megatron-LM's non-fatal check), and training goes on."""
    from megatron_bridge_cli.training.loop import SPIKY_LOSS_FACTOR, guard_loss
    from megatron_bridge_cli.training.rerun import init_rerun_state_machine

    final, _, _ = built
    init_rerun_state_machine(final)
    spiky = dataclasses.replace(final.rerun_state_machine, check_for_spiky_loss=True)
    with caplog.at_level(logging.WARNING, logger="megatron.core.rerun_state_machine"):
        for _ in range(101):
            guard_loss(torch.tensor(2.0), spiky)
        assert "Spiky loss" not in caplog.text
        guard_loss(torch.tensor(2.0 * SPIKY_LOSS_FACTOR), spiky)
    assert "Spiky loss" in caplog.text


def test_pin_memory_needs_cuda_and_is_off_without_it(recwarn):
    """--dataset.pin_memory reaches the DataLoader with CUDA; without CUDA pinning is impossible and
    the loader gets False, so torch does not warn on every loader."""
    from megatron_bridge_cli.data.datasets import build_iterators

    cfg = _tiny()
    cfg.dataset.num_workers = 0
    final = finalize(cfg, 1)
    data = [{"x": torch.tensor([i])} for i in range(64)]
    for pin in (True, False):
        final.dataset.pin_memory = pin
        it = build_iterators(final, [data, data, data], [True], 0, 0, 0, 1).train[0]
        assert it._pin_memory is (pin and torch.cuda.is_available())
        assert next(it)["x"].shape == (final.train.micro_batch_size, 1)
    assert not [w for w in recwarn if "pin_memory" in str(w.message)]
