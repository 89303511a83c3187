"""neode's Hydra launchers (``hydra/launcher=joblib|submitit_local|submitit_slurm``, conf/hydra/launcher/).

They are the joblib and submitit launchers of Hydra's plugins, plus what a neode sweep needs from them: the
sweep's process learns which jobs failed (the command exits 1 naming them, as with the basic launcher), and a
submitit job that SLURM times out or preempts saves its checkpoint and is requeued to continue from it
(:mod:`hydra_plugins.neode_launchers.submitit_launchers`). ``hydra_plugins`` is a namespace package: Hydra
finds every launcher installed under it.
"""
