"""``neode compare``: run records -> tables and figures -> a report folder (Markdown, HTML, CSV, PNG).

Modules: ``records`` finds and reads run records; ``base`` defines :class:`Section` (the interface an experiment's
report implements, documented there with a complete example), :class:`Table`, :class:`Figure`; ``figures``
renders matplotlib figures to PNG; ``paper`` holds the published values and their citations; ``grouping`` is the one
rule for which runs share a row (a configuration: everything recorded but the seed) and what varies; ``verdicts``
says when a yes/no claim may be stated; ``protocol`` states what ran; ``assemble`` builds a report from sections;
``writers`` writes it; ``compare`` is the command.

The registry below lists the sections in report order. To add one: write ``neode_cli/report/<name>.py`` with a
:class:`Section` subclass and append ONE line to your own block below (owners edit only their block).
"""

from __future__ import annotations

from .base import Column, Figure, Section, SectionResult, Table

__all__ = ["Column", "Figure", "Section", "SectionResult", "Table", "register", "registered_sections"]

_SECTIONS: list[Section] = []


def register(section: Section) -> Section:
    """Add ``section`` to the report (after those registered before it); its ``name`` must be new."""
    if any(s.name == section.name for s in _SECTIONS):
        raise ValueError(f"a report section named {section.name!r} is already registered")
    _SECTIONS.append(section)
    return section


def registered_sections() -> list[Section]:
    """The registered sections, in report order."""
    return list(_SECTIONS)


# ---- D: Table 1 and Figure 3 (classification) ---------------------------------------------------------------
from .fig3 import Fig3  # noqa: E402
from .table1 import Table1  # noqa: E402

register(Table1())
register(Fig3())
# ---- E: Table 2 (latent ODE vs RNN): append `from .table2 import Table2` and `register(Table2())` here -------
from .table2 import Table2  # noqa: E402

register(Table2())
# ---- F: CNF figures (fig4, fig5, ffjord_toys): append `from .cnf import ...` and `register(...)` here --------
from .cnf import FfjordToys, Fig4, Fig5  # noqa: E402

register(Fig4())
register(Fig5())
register(FfjordToys())
# ---- f14: RNODE (experiment=rnode): NFE and NLL vs regulariser weight ----------------------------------------
from .rnode import Rnode  # noqa: E402

register(Rnode())
