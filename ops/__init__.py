"""What operators run: the ``eventsieve`` CLI, the local stack, the supervisor,
DLQ tools, replay's I/O and the demo (see ops/README.md)."""
