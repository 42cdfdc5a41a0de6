"""``python -m edgeemo``: the same command line as the ``edgeemo`` script."""

from edgeemo.cli import main

main()
