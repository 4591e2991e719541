"""HTTP ingestion endpoint: speaks the seed tracking APIs and publishes RawEvents to Kafka."""
