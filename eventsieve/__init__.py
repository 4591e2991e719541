"""eventsieve: tracking events in, clean deduplicated events in ClickHouse out."""

__version__ = "0.1.0"
