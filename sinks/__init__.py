"""ClickHouse sink: DDL, migrations and the batch writer."""
