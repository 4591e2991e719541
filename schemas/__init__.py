"""The data contract: Avro schemas, the event model and codecs for everything on a topic."""
