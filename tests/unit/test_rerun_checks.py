"""--rerun_state_machine: every mode is accepted (the loop drives them, training/rerun.py), and the
settings that would do nothing are refused before anything starts, naming the flag (exit 2).
The modes' effects are tests/integration/test_rerun_state_machine.py."""

from __future__ import annotations

import typing

import pytest

from megatron_bridge_cli.config import finalize
from megatron_bridge_cli.config.resilience import RerunStateMachineConfig
from megatron_bridge_cli.errors import ConfigError
from megatron_bridge_cli.recipes import RECIPES


def _tiny(**rerun):
    cfg = RECIPES["gpt_cpu_tiny"]()
    for name, value in rerun.items():
        setattr(cfg.rerun_state_machine, name, value)
    return cfg


def _refusal(**rerun) -> str:
    with pytest.raises(ConfigError) as e:
        finalize(_tiny(**rerun), 1)
    assert e.value.exit_code == 2
    return str(e.value)


@pytest.mark.parametrize("mode", ["disabled", "validate_results", "report_stats"])
def test_every_mode_is_driven(mode):
    assert finalize(_tiny(rerun_mode=mode), 1).rerun_state_machine.rerun_mode == mode


def test_every_mode_maps_to_a_megatron_core_rerun_mode():
    from megatron.core.rerun_state_machine import RerunMode

    from megatron_bridge_cli.training.rerun import MODES

    choices = typing.get_args(typing.get_type_hints(RerunStateMachineConfig)["rerun_mode"])
    assert set(MODES) == set(choices)
    assert {RerunMode[name] for name in MODES.values()} == set(RerunMode)  # and every megatron-core mode is reachable


def test_error_injection_is_accepted_in_validate_results():
    final = finalize(_tiny(rerun_mode="validate_results", error_injection_rate=3,
                           error_injection_type="persistent_error"), 1)
    assert final.rerun_state_machine.error_injection_rate == 3


@pytest.mark.parametrize("mode", ["disabled", "report_stats"])
@pytest.mark.parametrize("name,value", [("error_injection_rate", 5), ("error_injection_type", "correct_result")])
def test_error_injection_outside_validate_results_is_refused(mode, name, value):
    text = _refusal(rerun_mode=mode, **{name: value})
    assert f"--rerun_state_machine.{name} injects errors only with --rerun_state_machine.rerun_mode=validate_results" \
           f" (it is {mode})" in text, text


def test_a_negative_injection_rate_is_refused():
    text = _refusal(rerun_mode="validate_results", error_injection_rate=-1)
    assert "--rerun_state_machine.error_injection_rate (-1) must be 0 (never) or a positive N" in text, text


@pytest.mark.parametrize("mode", ["validate_results", "report_stats"])
def test_a_mode_with_nothing_to_check_is_refused(mode):
    text = _refusal(rerun_mode=mode, check_for_nan_in_loss=False, check_for_spiky_loss=False)
    assert f"--rerun_state_machine.rerun_mode={mode} has nothing to check" in text, text
    cfg = _tiny(rerun_mode=mode, check_for_nan_in_loss=False, check_for_spiky_loss=False)
    cfg.ddp.check_for_nan_in_grad = True  # megatron-core's gradient check goes through the machine too
    finalize(cfg, 1)
    finalize(_tiny(rerun_mode="disabled", check_for_nan_in_loss=False), 1)  # disabled with no check: fine
