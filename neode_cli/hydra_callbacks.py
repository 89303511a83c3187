"""Hydra callbacks of ``neode train`` (registered in ``conf/hydra/neode.yaml``).

Hydra creates the run folder (or the sweep folder) and opens its log file in it before the task runs; when
that fails (a read-only folder, a file where a folder belongs, a full disk) Hydra prints a traceback.
:class:`RunFolderCheck` tries the same first, and ends the process with one line (exit 2) instead.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

__all__ = ["RunFolderCheck", "check_writable_folder"]


def check_writable_folder(folder: Path, probe: str | None = None) -> None:
    """Create ``folder`` and open ``folder/probe`` for appending (as Hydra's job log does); on failure print
    ``neode: error: cannot use folder ...: <OS reason>`` and exit with status 2."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if probe:
            with open(folder / probe, "a"):
                pass
    except OSError as exc:
        where = exc.filename or folder
        print(f"neode: error: cannot use folder {folder}: {where}: {exc.strerror or exc}", file=sys.stderr)
        raise SystemExit(2) from None


class RunFolderCheck(Callback):
    """Check that the run folder (``-m``: the sweep folder) can be created and written before Hydra does."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        HydraConfig.instance().set_config(config)  # so ${hydra:...} in the folder's name resolves
        folder = Path(str(OmegaConf.select(config, "hydra.run.dir")))
        check_writable_folder(folder, f"{config.hydra.job.name}.log")

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        HydraConfig.instance().set_config(config)
        # Resolving the job folders' name here, in the sweep's own process, caches the command's overrides in
        # the config that every job's config copies (neode_cli/sweeps.py: ${neode_sweep_overrides:}), also when
        # hydra.sweep.dir is given and does not name them.
        OmegaConf.select(config, "hydra.sweep.subdir", throw_on_resolution_failure=False)
        check_writable_folder(Path(str(OmegaConf.select(config, "hydra.sweep.dir"))))
