"""Tasks: what a training step and an evaluation mean (see base.Task); one kind of experiment per module."""
