"""Datasets, one per module: mnist (IDX files), spirals (latent ODE), toy2d and energies (flows)."""
