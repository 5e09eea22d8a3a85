"""``python -m vfmkit.cli``: the ``vfm`` command, for launchers that start modules (``torchrun -m vfmkit.cli``)."""

from vfmkit.cli.main import main

if __name__ == "__main__":
    main()
