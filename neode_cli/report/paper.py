"""Published values and protocols the reports put beside our measurements, with their sources.

Chen, Rubanova, Bettencourt, Duvenaud, "Neural Ordinary Differential Equations", NeurIPS 2018 (arXiv:1806.07366);
the authors' PyTorch examples (https://github.com/rtqichen/torchdiffeq/tree/master/examples: ``odenet_mnist.py``,
the de facto classification protocol, ``latent_ode.py``, ``cnf.py``); Grathwohl et al., "FFJORD", ICLR 2019
(arXiv:1810.01367, code https://github.com/rtqichen/ffjord). Every sentence a report prints about "the paper" comes
from here, with its citation.
"""

from __future__ import annotations

import dataclasses

__all__ = ["Table1Row", "TABLE1", "TABLE1_ORDER", "TABLE1_PROTOCOL", "PAPER_SOLVER", "PAPER_CLASSIFICATION_TOL",
           "FIG3_BACKWARD_FORWARD_RATIO", "DOPRI5_NFE_PER_STEP", "DOPRI5_NFE_INITIAL", "CHEN2018", "FFJORD",
           "EXAMPLES_URL", "CLASSIFICATION_SOLVER", "SEQUENCE_SOLVER", "CNF_SOLVER", "FFJORD_SOLVER"]

#: Citations as the reports print them.
CHEN2018 = "Chen et al. 2018 (arXiv:1806.07366)"
FFJORD = "Grathwohl et al. 2019, FFJORD (arXiv:1810.01367)"
EXAMPLES_URL = "https://github.com/rtqichen/torchdiffeq/tree/master/examples"


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
    "selection": "the authors' example odenet_mnist.py keeps the epoch with the best test accuracy (optimistic); we report the last epoch",
}

#: The paper's solver for classification (implicit Adams via SciPy's LSODE/VODE) and its tolerance.
PAPER_SOLVER = "implicit Adams (LSODE/VODE via SciPy)"
PAPER_CLASSIFICATION_TOL = 1e-3

#: What each published source solved with, by experiment family (the last sentence of a section's solver line).
CLASSIFICATION_SOLVER = (f"{CHEN2018} used {PAPER_SOLVER} at tolerance {PAPER_CLASSIFICATION_TOL:g}; the authors' "
                         f"example odenet_mnist.py ({EXAMPLES_URL}) uses dopri5 at rtol = atol = 1e-3.")
SEQUENCE_SOLVER = (f"{CHEN2018} give tolerance 1.5e-8 for the sequence models; the authors' example latent_ode.py "
                   f"({EXAMPLES_URL}) calls torchdiffeq's odeint with its defaults (dopri5).")
CNF_SOLVER = (f"{CHEN2018} give tolerance 1e-5 for the CNF experiments; the authors' example cnf.py ({EXAMPLES_URL}) "
              f"uses dopri5 at rtol = atol = 1e-5.")
FFJORD_SOLVER = f"{FFJORD} use dopri5 at rtol = atol = 1e-5 with the adjoint (https://github.com/rtqichen/ffjord)."

#: Figure 3c: backward NFE is about half the forward NFE (with the Adams solver; not claimed for dopri5).
FIG3_BACKWARD_FORWARD_RATIO = 0.5
#: dopri5 spends 6 evaluations per step (FSAL) plus 2 to choose the first step.
DOPRI5_NFE_PER_STEP = 6
DOPRI5_NFE_INITIAL = 2
