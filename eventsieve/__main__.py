"""``python -m eventsieve`` — the same CLI as the ``eventsieve`` console script."""

from eventsieve.cli import main

main()
