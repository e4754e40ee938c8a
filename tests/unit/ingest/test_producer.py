"""Ingest's partitioner must put every key where Kafka's default partitioner (and so every other client) does:
one subject's events on one partition is what keeps their order."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from services.ingest.producer import SubjectPartitioner


def test_keys_land_on_the_default_partitioners_partition_whether_remembered_or_not() -> None:
    ours, default = SubjectPartitioner(remembered=8), DefaultPartitioner()
    partitions = [0, 1, 2]
    keys = [f"NCT07212335:S-{n:04d}".encode() for n in range(200)]
    for _ in range(2):  # the second pass hits the remembered hashes (and evicts: only 8 are kept)
        assert [ours(k, partitions, partitions) for k in keys] == [default(k, partitions, partitions) for k in keys]
    assert len({ours(k, partitions, partitions) for k in keys}) == 3


def test_an_unkeyed_record_still_gets_an_available_partition() -> None:
    assert SubjectPartitioner()(None, [0, 1, 2], [1]) == 1
