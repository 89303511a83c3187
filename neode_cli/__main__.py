"""``python -m neode_cli``: the ``neode`` command; what torchrun starts (``torchrun ... -m neode_cli train ...``)."""

from .cli import main

if __name__ == "__main__":
    main()
