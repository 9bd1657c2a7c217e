"""The MoE router's auxiliary losses, reduced for logging the way Megatron-LM does it.

megatron-core's router adds each layer's load-balancing loss (divided by its coefficient, so
the logged value does not depend on it) and z-loss into a process-wide tracker
(``moe_utils.save_to_aux_losses_tracker``), once per micro-batch, in training forward passes
only. Megatron-LM's ``training_log`` then calls ``moe_utils.track_moe_metrics`` with
``loss_scale = 1 / num_microbatches``: it sums the tracker over pipeline stages, averages over
data-parallel ranks, averages over the MoE layers, clears the tracker, and the result is
printed next to the LM loss (``load_balancing_loss: 1.004E+00 |``) and written to TensorBoard
under the same name. :func:`reduce_moe_losses` does the same after every training step, so the
logged value is that step's, like the logged LM loss.
"""

from __future__ import annotations

__all__ = ["moe_loss_names", "reduce_moe_losses"]

_LOAD_BALANCING_NAMES = {
    "aux_loss": "load_balancing_loss",
    "seq_aux_loss": "seq_load_balancing_loss",
    "global_aux_loss": "global_load_balancing_loss",
}
"""--model.moe_router_load_balancing_type -> the name megatron-core's router tracks it under."""


def moe_loss_names(model) -> list[str]:
    """The auxiliary losses ``model``'s router computes (those with a positive coefficient)."""
    if not getattr(model, "num_moe_experts", None):
        return []
    types, coeffs = model.moe_router_load_balancing_type, model.moe_aux_loss_coeff
    if not isinstance(types, list):
        types, coeffs = [types], [coeffs]
    names = [_LOAD_BALANCING_NAMES[t] for t, c in zip(types, coeffs) if t in _LOAD_BALANCING_NAMES and c and c > 0]
    if model.moe_z_loss_coeff:
        names.append("z_loss")
    return names


def reduce_moe_losses(cfg) -> dict[str, float]:
    """This step's auxiliary losses by name, averaged over micro-batches, data-parallel ranks
    and MoE layers; empty for dense models. Collective: every rank calls it after every
    training step (it all-reduces over the pipeline and data-parallel groups)."""
    names = moe_loss_names(cfg.model)
    if not names:
        return {}
    from megatron.core.transformer.moe.moe_utils import track_moe_metrics

    m, totals = cfg.model, {}
    track_moe_metrics(
        loss_scale=1 / cfg.train.num_microbatches, iteration=0, writer=None, total_loss_dict=totals,
        force_initialize=True, track_names=names, num_layers=m.num_layers, moe_layer_freq=m.moe_layer_freq,
        mtp_num_layers=m.mtp_num_layers,
    )
    return {name: float(totals[name]) for name in names if name in totals}
