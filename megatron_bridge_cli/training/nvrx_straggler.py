"""--nvrx_straggler: nvidia-resiliency-ext's straggler detector around each training step.

As the extension documents it: ``Detector.initialize`` once, each step inside
``Detector.detection_section`` (CPU time of the section, plus every CUDA kernel timed through
CUPTI), and ``Detector.generate_report_if_interval_elapsed`` after each step on every rank (the
extension turns report_time_interval seconds into an iteration count agreed by all ranks, after
16 warm-up steps). Rank 0 gets the gathered report: relative scores (this GPU against the best
one) and individual scores (this GPU against its own best), printed and checked against the
thresholds; with stop_if_detected, a straggler stops the run after a checkpoint, as an exit
condition does.

CUPTI needs a CUDA GPU: validation refuses --nvrx_straggler elsewhere, and without the
extension (``pip install '.[resilience]'``).
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["NVRxStragglers"]

SECTION = "train_step"


class NVRxStragglers:
    """The extension's Detector, driven from the loop: ``section()`` around a step, ``after_step()``."""

    def __init__(self, cfg, rank: int):
        n = cfg.nvrx_straggler
        self.on = n is not None
        self.stop_requested = False
        if not self.on:
            return
        from nvidia_resiliency_ext.straggler import Detector

        self.detector, self.rank = Detector, rank
        scores = [name for name, wanted in (("relative_perf_scores", n.calc_relative_gpu_perf),
                                            ("individual_perf_scores", n.calc_individual_gpu_perf)) if wanted]
        self.rel_threshold, self.indiv_threshold = n.gpu_relative_perf_threshold, n.gpu_individual_perf_threshold
        self.to_print, self.log = n.num_gpu_perf_scores_to_print, n.enable_logging
        self.stop_if_detected = n.stop_if_detected
        Detector.initialize(scores_to_compute=scores, gather_on_rank0=True, profiling_interval=1,
                            report_time_interval=n.report_time_interval)

    def section(self):
        """Context of one training step."""
        if not self.on:
            return contextlib.nullcontext()
        return self.detector.detection_section(SECTION, profile_cuda=True)

    def after_step(self, iteration: int) -> None:
        """Every rank, after every step: a report when the interval has elapsed."""
        if not self.on:
            return
        report = self.detector.generate_report_if_interval_elapsed()
        if not self.detector.is_interval_elapsed():
            return
        found = False
        if report is not None:  # rank 0 (gather_on_rank0)
            stragglers = report.identify_stragglers(gpu_rel_threshold=self.rel_threshold,
                                                    gpu_indiv_threshold=self.indiv_threshold)
            slow = stragglers["straggler_gpus_relative"] | stragglers["straggler_gpus_individual"]
            found = bool(slow)
            if self.log:
                print(self._text(iteration, report, slow), flush=True)
        if self.stop_if_detected:
            flag = torch.tensor([1 if found else 0], dtype=torch.int32, device="cuda")
            torch.distributed.broadcast(flag, src=0)  # every rank stops together
            self.stop_requested = bool(flag.item())

    def _text(self, iteration: int, report, slow) -> str:
        parts = [f"nvrx straggler report at iteration {iteration}"]
        for title, scores in (("GPU relative perf", report.gpu_relative_perf_scores),
                              ("GPU individual perf", report.gpu_individual_perf_scores)):
            if scores:
                ranked = sorted(scores.items(), key=lambda kv: kv[1])
                worst = ", ".join(f"{r}: {v:.2f}" for r, v in ranked[:self.to_print])
                best = ", ".join(f"{r}: {v:.2f}" for r, v in ranked[::-1][:self.to_print])
                parts.append(f"{title} worst: {worst}; best: {best}")
        names = ", ".join(f"rank {s.rank} ({s.node})" for s in sorted(slow, key=lambda s: s.rank))
        parts.append(f"stragglers (relative < {self.rel_threshold:g} or individual < {self.indiv_threshold:g}): "
                     f"{names or 'none'}")
        return " | ".join(parts)

    def close(self) -> None:
        if self.on and self.detector.initialized:
            self.detector.shutdown()
