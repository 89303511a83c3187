"""The latent task (batches, metrics, figures) and `neode train` with the latent ODE and RNN configs."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import read_summary, run_neode

from neode_cli.report.compare import CompareOptions, run
from neode_cli.tasks.latent import build_task

TINY = dict(n_spirals=24, n_train=16, n_window=12, n_extrap=6, n_obs=5, n_grid=120, batch_size=6,
            test_batch_size=5)
#: `neode train` overrides for a run of seconds on tiny spirals.
TINY_CLI = ["data.n_spirals=24", "data.n_train=16", "data.n_window=12", "data.n_extrap=6", "data.n_obs=5",
            "data.n_grid=120", "data.batch_size=8", "data.figure_spirals=2", "trainer.max_epochs=1",
            "trainer.progress=false", "logger=none", "trainer.device=cpu"]


class Zero(torch.nn.Module):
    """Predicts the origin everywhere; its loss is the mean squared observation."""

    def loss(self, obs_t, obs_x):
        value = obs_x.pow(2).sum((1, 2)).mean()
        return value, {"sq": float(value)}

    def predict(self, obs_t, obs_x, query_t):
        return torch.zeros(obs_t.shape[0], len(query_t), 2)


def test_batches_cover_the_training_spirals_once_and_follow_the_torch_rng():
    task = build_task(**TINY)
    torch.manual_seed(1)
    first = list(task.train_batches(0))
    assert len(task.train_batches(0)) == 3 == len(first)
    seen = torch.cat([b.obs_t for b in first])
    assert seen.shape == (16, 5)
    assert sorted(map(tuple, seen.tolist())) == sorted(map(tuple, task.obs_t[:16].tolist()))
    torch.manual_seed(1)
    again = list(task.train_batches(0))
    assert all(torch.equal(a.obs_x, b.obs_x) for a, b in zip(first, again))


def test_evaluate_measures_rmse_against_the_clean_curve_and_averages_loss_terms():
    task = build_task(**TINY)
    metrics = task.evaluate(Zero())
    test_clean = task.clean[16:]
    assert metrics["test_rmse"] == pytest.approx(math.sqrt(float(test_clean[:, 12:].pow(2).mean())), rel=1e-5)
    assert metrics["test_rmse_interp"] == pytest.approx(math.sqrt(float(test_clean[:, :12].pow(2).mean())), rel=1e-5)
    expected = float(task.obs_x[16:].pow(2).sum((1, 2)).mean())
    assert metrics["test_loss"] == pytest.approx(expected, rel=1e-5) == metrics["test_sq"]
    assert metrics["test_nfe_forward"] == 0
    # One batch of 5 test spirals only.
    assert task.evaluate(Zero(), limit_batches=1)["test_loss"] == pytest.approx(
        float(task.obs_x[16:21].pow(2).sum((1, 2)).mean()), rel=1e-5)


def test_record_fields_and_figures(tmp_path):
    task = build_task(**TINY, figure_spirals=2)
    assert task.record_fields() == {"data": "spirals", "n_obs": 5, "n_window": 12, "n_extrap": 6, "n_train": 16,
                                    "n_test": 8}
    rows = task.figure_rows()
    assert task.data.clockwise[rows].tolist() == [False, True]

    class Writer:
        tags = []

        def add_figure(self, tag, figure, global_step):
            self.tags.append((tag, global_step))

    writer = Writer()
    task.log_figures(Zero(), tmp_path, writer, epoch=3)
    assert (tmp_path / "figures" / "spirals.png").stat().st_size > 1000
    assert writer.tags == [("spirals", 3)]


def test_a_typo_in_the_recurrent_cell_fails_at_compose(tmp_path, capsys):
    # The same command with model.cell=gru trains (the Enum of neode_cli.models.rnn is the config's type), so the
    # refusal is the typo's: Hydra's message names the key and the value, and no run folder is made.
    assert run_neode(["train", "model=rnn", "model.cell=gru", *TINY_CLI, f"hydra.run.dir={tmp_path / 'ok'}"]) == 0
    capsys.readouterr()
    assert run_neode(["train", "model=rnn", "model.cell=lstm", *TINY_CLI, f"hydra.run.dir={tmp_path / 'bad'}"]) != 0
    err = capsys.readouterr().err
    assert "model.cell" in err and "lstm" in err
    assert not (tmp_path / "bad").exists()       # refused before any work


@pytest.mark.slow  # an end-to-end sweep; the default suite covers its parts faster
def test_table2_smoke_sweep_trains_both_models_and_compare_reports_them(tmp_path):
    outputs = tmp_path / "outputs"
    sweep = outputs / "table2" / "smoke"
    status = run_neode(["train", "-m", "experiment=table2", "budget=smoke", "data.n_obs=30", "grad=adjoint",
                        f"hydra.sweep.dir={sweep}"])
    assert status == 0
    ode, rnn = (read_summary(sweep / f"{model}_n30_seed0") for model in ("latent_ode", "rnn"))
    for summary in (ode, rnn):
        assert summary["status"] == "completed" and summary["task"] == "latent" and summary["n_obs"] == 30
        assert summary["experiment"] == "table2" and summary["budget"] == "smoke"
        assert summary["optim"] == "adam" and summary["lr"] == 0.01 and summary["data"] == "spirals"
        assert math.isfinite(summary["test_rmse"]) and math.isfinite(summary["test_rmse_interp"])
    for key in ("test_neg_elbo", "test_recon_nll", "test_kl", "train_kl"):
        assert math.isfinite(ode[key]), key
    assert ode["grad"] == "adjoint" and ode["nfe_forward"] > 0 and ode["nfe_backward"] > 0
    assert ode["config"]["model"]["likelihood_std"] == 0.3          # follows data.noise_std
    assert rnn["nfe_forward"] == 0 and math.isfinite(rnn["test_nll"])
    assert (sweep / "latent_ode_n30_seed0" / "figures" / "spirals.png").exists()
    _, out, _ = run(CompareOptions(experiment="table2", root=str(outputs)))
    report = (out / "report.md").read_text()
    assert "| RNN |" in report and "| Latent ODE |" in report and "Budget: `smoke`." in report
