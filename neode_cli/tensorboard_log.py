"""TensorBoard for a run: one event file per run (per attempt, when a run is resumed), and its hyperparameters.

``open_writer`` makes the run's one ``SummaryWriter``; the loop logs scalars and the tasks log figures to it.
``write_hparams`` writes the HParams plugin's session start and end into that same file. Two choices differ from
``SummaryWriter.add_hparams``, which opens a second event file and copies the final metrics into ``hparam/*``
scalars:

- no metric copies: the metrics the HParams view shows are the scalar tags the run already logged (``test/*``,
  ``epoch/*``), so nothing is logged twice;
- no per-run experiment summary: with one, TensorBoard takes the first run's summary as the whole sweep's, so each
  hyperparameter's domain is that one run's value and values that differ across a sweep do not show as differing.
  Without it, TensorBoard builds the experiment from every run's session: discrete domains over all the values found,
  marked as differing where they do.

Runs that differ only by seed share a session group name, so the HParams view can aggregate over seeds as
``neode compare`` does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping

__all__ = ["open_writer", "write_hparams", "hparams_of", "HPARAM_KEYS"]

log = logging.getLogger(__name__)

#: Keys of the run summary (``metrics.json``) shown as hyperparameters.
HPARAM_KEYS = ("model", "data", "solver", "grad", "rtol", "atol", "step_size", "backend", "seed", "optim", "lr",
               "batch_size", "max_epochs", "experiment", "budget", "status", "device", "reg_kinetic_weight",
               "reg_jacobian_weight")
#: Settings that do not apply to a model without an ODE (shown as "-", as in the report).
_ODE_KEYS = ("solver", "grad", "rtol", "atol", "step_size", "backend")


def open_writer(log_dir: str | Path, purge_step: int | None = None):
    """The run's ``SummaryWriter`` in ``log_dir``. ``purge_step``: on resume, the global step of the checkpoint, so
    TensorBoard drops what a killed attempt logged after it and curves do not fork."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(log_dir), purge_step=purge_step)


def _value(value: Any) -> bool | int | float | str:
    if value is None:
        return "none"
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def hparams_of(summary: Mapping[str, Any]) -> dict[str, bool | int | float | str]:
    """The hyperparameters of a run summary: :data:`HPARAM_KEYS`, solver settings "-" for a model without an ODE."""
    from .report.grouping import NOT_APPLICABLE, has_ode
    from .report.records import Run

    ode = has_ode(Run("", Path("."), dict(summary)))
    return {k: (NOT_APPLICABLE if k in _ODE_KEYS and not ode else _value(summary.get(k))) for k in HPARAM_KEYS}


def _summary(tag: str, plugin_data) -> Any:
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import metadata

    return Summary(value=[Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(plugin_data),
                                        tensor=metadata.NULL_TENSOR)])


_STATUS = {"completed": "STATUS_SUCCESS", "failed": "STATUS_FAILURE", "interrupted": "STATUS_ABORTED"}


def write_hparams(writer, summary: Mapping[str, Any], step: int) -> None:
    """Write the run's HParams session (start with :func:`hparams_of`, end with its status) into ``writer``'s own
    event file at ``step``. Never raises: TensorBoard extras must not fail a finished run."""
    try:
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

        hparams = hparams_of(summary)
        seedless = {k: v for k, v in hparams.items() if k not in ("seed", "status")}
        group = hashlib.sha256(json.dumps(seedless, sort_keys=True).encode()).hexdigest()[:12]
        start = plugin_data_pb2.SessionStartInfo(group_name=group, start_time_secs=time.time())
        for key, value in hparams.items():
            if isinstance(value, bool):
                start.hparams[key].bool_value = value
            elif isinstance(value, (int, float)):
                start.hparams[key].number_value = float(value)
            else:
                start.hparams[key].string_value = value
        status = api_pb2.Status.Value(_STATUS.get(str(summary.get("status")), "STATUS_RUNNING"))
        end = plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=time.time())
        file_writer = writer._get_file_writer()
        file_writer.add_summary(_summary(metadata.SESSION_START_INFO_TAG,
                                         plugin_data_pb2.HParamsPluginData(session_start_info=start)), step)
        file_writer.add_summary(_summary(metadata.SESSION_END_INFO_TAG,
                                         plugin_data_pb2.HParamsPluginData(session_end_info=end)), step)
        writer.flush()
    except Exception as exc:  # noqa: BLE001
        log.warning("could not write TensorBoard hparams: %s", exc)
