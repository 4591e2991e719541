"""Which partition a key belongs to: Kafka's default (Java) murmur2 partitioner.

Faust's producer (aiokafka) partitions keys this way; publishers using
librdkafka must set ``partitioner=murmur2_random`` to agree. The stream checks
every raw record against this function and re-keys those that sit elsewhere,
so per-user state stays on one partition whatever the publisher did.
"""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2


@lru_cache(maxsize=65_536)
def partition_for(key: bytes, partitions: int) -> int:
    """The partition of ``key`` among ``partitions`` (Java client compatible)."""
    hashed: int = murmur2(key)  # aiokafka is untyped
    return (hashed & 0x7FFFFFFF) % partitions
