"""Published values and protocols the reports put beside our measurements (source: shared/reference/paper.md).

Chen, Rubanova, Bettencourt, Duvenaud, "Neural Ordinary Differential Equations", NeurIPS 2018, and the authors'
PyTorch example (rtqichen/torchdiffeq ``examples/odenet_mnist.py``), which is the de facto protocol.
"""

from __future__ import annotations

import dataclasses

__all__ = ["Table1Row", "TABLE1", "TABLE1_ORDER", "TABLE1_PROTOCOL", "PAPER_SOLVER", "PAPER_CLASSIFICATION_TOL",
           "FIG3_BACKWARD_FORWARD_RATIO", "DOPRI5_NFE_PER_STEP", "DOPRI5_NFE_INITIAL", "INDEPENDENT_REPRODUCTION"]


@dataclasses.dataclass(frozen=True)
class Table1Row:
    """One row of the paper's Table 1 (MNIST). ``memory``/``time`` are complexity classes, never measured there."""

    label: str
    test_error_pct: float
    params_m: float
    memory: str
    time: str
    note: str = ""


#: Table 1 of the paper, by our model name (``conf/model/<name>.yaml``). L = ResNet layers, L~ = solver
#: function evaluations in one forward pass.
TABLE1 = {
    "mlp": Table1Row("1-layer MLP", 1.60, 0.24, "–", "–", "cited from LeCun et al. 1998, not trained by the authors"),
    "resnet": Table1Row("ResNet", 0.41, 0.60, "O(L)", "O(L)"),
    "rknet": Table1Row("RK-Net", 0.47, 0.22, "O(L̃)", "O(L̃)"),
    "odenet": Table1Row("ODE-Net", 0.42, 0.22, "O(1)", "O(L̃)"),
}
#: Row order of Table 1 (other models follow, alphabetically).
TABLE1_ORDER = ("mlp", "resnet", "rknet", "odenet")

#: An independent reproduction (30 epochs, CPU) quoted in paper.md, test error in percent.
INDEPENDENT_REPRODUCTION = {"mlp": 4.59, "resnet": 0.40, "rknet": 0.64, "odenet": 0.57}

#: The training protocol of the authors' example (what "paper" budget reproduces).
TABLE1_PROTOCOL = {
    "dataset": "MNIST",
    "epochs": 160,
    "batch_size": 128,
    "test_batch_size": 1000,
    "lr": 0.1,
    "momentum": 0.9,
    "milestones": (60, 100, 140),
    "augmentation": "RandomCrop(28, padding 4)",
    "train_images": 60000,
    "test_images": 10000,
    "selection": "best test accuracy over epochs (optimistic); we report the last epoch",
}

#: The paper's solver for classification (implicit Adams via SciPy's LSODE/VODE) and its tolerance.
PAPER_SOLVER = "implicit Adams (LSODE/VODE via SciPy)"
PAPER_CLASSIFICATION_TOL = 1e-3

#: Figure 3c: backward NFE is about half the forward NFE (with the Adams solver; not claimed for dopri5).
FIG3_BACKWARD_FORWARD_RATIO = 0.5
#: dopri5 spends 6 evaluations per step (FSAL) plus 2 to choose the first step.
DOPRI5_NFE_PER_STEP = 6
DOPRI5_NFE_INITIAL = 2
