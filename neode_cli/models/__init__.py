"""Models (nn.Modules only); a model that solves an ODE receives an integrator and never reads config."""
