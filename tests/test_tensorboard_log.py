"""TensorBoard: one event file per run, no copied `hparam/*` scalars, and hparams that differ across a sweep shown
as differing (read back from the event files as TensorBoard reads them)."""

from __future__ import annotations

from pathlib import Path

from conftest import run_neode, tiny_overrides

from neode_cli.tensorboard_log import hparams_of


def _events(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "tb").glob("events.out.tfevents.*"))


def _read(path: Path) -> tuple[set[str], dict[str, bytes]]:
    """Scalar tags and hparams plugin contents (tag -> bytes) of one event file."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import metadata

    scalars, hparams = set(), {}
    for event in EventFileLoader(str(path)).Load():
        for value in event.summary.value:
            plugin = value.metadata.plugin_data
            if plugin.plugin_name == metadata.PLUGIN_NAME:
                hparams[value.tag] = plugin.content
            else:
                scalars.add(value.tag)
    return scalars, hparams


def test_a_sweep_writes_one_event_file_per_run_and_hparams_that_differ(tiny_mnist, tmp_path):
    from tensorboard.plugins.hparams import api_pb2, metadata
    from tensorboard.plugins.hparams.backend_context import Context

    sweep = tmp_path / "sweep"
    overrides = [o for o in tiny_overrides(tiny_mnist) if not o.startswith("data.ode_error_samples")]
    assert run_neode(["train", "-m", *overrides, "solver=dopri5,bosh3", "trainer.limit_train_batches=2",
                      "data.ode_error_samples=0", f"hydra.sweep.dir={sweep}"]) == 0
    runs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(runs) == 2
    contents = {}
    for run_dir in runs:
        (events,) = _events(run_dir)  # one event file: hparams go into the run's own writer
        scalars, hparams = _read(events)
        assert "test/test_error" in scalars and "epoch/nfe_forward" in scalars
        assert not [t for t in scalars if t.startswith("hparam/")]  # metrics are the tags already logged
        assert metadata.EXPERIMENT_TAG not in hparams  # TensorBoard builds the experiment from all runs
        start = metadata.parse_session_start_info_plugin_data(hparams[metadata.SESSION_START_INFO_TAG])
        end = metadata.parse_session_end_info_plugin_data(hparams[metadata.SESSION_END_INFO_TAG])
        assert end.status == api_pb2.STATUS_SUCCESS and start.hparams["model"].string_value == "odenet"
        contents[run_dir.name] = hparams
    starts = [metadata.parse_session_start_info_plugin_data(c[metadata.SESSION_START_INFO_TAG])
              for c in contents.values()]
    assert {s.hparams["solver"].string_value for s in starts} == {"dopri5", "bosh3"}
    assert len({s.group_name for s in starts}) == 2  # different configurations, different session groups
    # What TensorBoard's HParams view computes from these runs (no experiment summary to mislead it).
    infos = {i.name: i for i in Context(None)._compute_hparam_infos(contents)}
    assert sorted(infos["solver"].domain_discrete.values[i].string_value for i in range(2)) == ["bosh3", "dopri5"]
    assert infos["solver"].differs and not infos["model"].differs


def test_hparams_of_a_model_without_an_ode_show_dashes():
    summary = {"model": "mlp", "solver": "dopri5", "grad": "adjoint", "rtol": 1e-3, "atol": 1e-3, "step_size": None,
               "seed": 1, "nfe_forward": 0.0, "status": "completed"}
    hparams = hparams_of(summary)
    assert hparams["solver"] == hparams["grad"] == hparams["rtol"] == "-" and hparams["seed"] == 1
    assert hparams_of({**summary, "model": "odenet", "nfe_forward": 26.0})["rtol"] == 1e-3
