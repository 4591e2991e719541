"""``python -m ops``: the same CLI as the ``eventsieve`` console script."""

from ops.cli import main

main()
