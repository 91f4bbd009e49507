"""The compactor: produced records move from flush objects to Parquet files in the bucket, and
Kafka consumers do not notice (same offsets, timestamps, keys, values, headers), while DuckDB and
pyarrow read the same records straight from the bucket. Embedded (the compactor inside `skiff
serve`) and on etcd + S3 with `skiff compactor` as its own process, killed -9 mid-work."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import duckdb
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest
from confluent_kafka import TopicPartition

import helpers as h
from conftest import SkiffBroker, free_port
from servers import MotoS3, broker_args

FRESHNESS = ["--compactor-freshness-ms", "2000"]
# Garbage collection at test speed: uploads are committed within 3 s or never, so unreferenced
# objects older than 5 s are orphans; replaced ones go 1 s after they were replaced.
FAST_GC = ["--compactor-gc-interval-ms", "1000", "--compactor-gc-grace-ms", "1000",
           "--compactor-orphan-age-ms", "5000", "--object-commit-timeout-ms", "3000"]
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


class SkiffCompactor(SkiffBroker):
    """A `skiff compactor` process (its HTTP API on the broker's HTTP port slot)."""

    def command(self) -> list[str]:
        return [str(__import__("conftest").skiff_bin()), "compactor",
                "--http-listeners", self.http_listener, *self.extra_args]

    def _kafka_port_accepts(self) -> bool:
        return True


def compactor_status(node) -> dict:
    status, body = node.http_get("/v1/compactor")
    assert status == 200, f"/v1/compactor returned {status}: {body[:300]!r}"
    return json.loads(body)


def wait_compacted(node, topic: str, timeout: float = 60.0) -> list[dict]:
    """Waits until every partition of `topic` is in Parquet up to its high watermark."""
    deadline = time.monotonic() + timeout
    parts = []
    while time.monotonic() < deadline:
        parts = [p for p in compactor_status(node)["partitions"] if p["topic"] == topic]
        if parts and all(p["parquet_end"] == p["high_watermark"] and p["high_watermark"] > 0
                         for p in parts):
            return parts
        time.sleep(0.25)
    raise AssertionError(f"{topic} not compacted within {timeout}s: {parts}")


def produce_mixed(bootstrap: str, topic: str, partitions: int, per_codec: int = 40) -> list[h.Rec]:
    """Records with every codec, keys (some null), values (some null, some large), repeated
    header keys; returns them as acknowledged (partition, offset, timestamp)."""
    produced = []
    for codec in CODECS:
        p = h.producer(bootstrap, **{"compression.type": codec, "linger.ms": 20})
        pending = []

        def cb(err, msg, store=pending):
            store.append((err, msg))

        sent_headers = {}

        for i in range(per_codec):
            key = None if i % 5 == 0 else f"{codec}-key-{i % 7}".encode()
            value = None if i % 11 == 3 else (f"{codec}-{i}-".encode() * (1 + i * 13))
            headers = [("trace", f"t{i}".encode()), ("trace", b""), ("bin", bytes([i % 256, 0, 255]))]
            sent_headers[(key, value)] = tuple(headers)
            p.produce(topic, key=key, value=value, headers=headers, partition=i % partitions,
                      on_delivery=cb)
        assert p.flush(30) == 0
        for err, msg in pending:
            assert err is None, err
            produced.append(h.Rec(msg.partition(), msg.offset(), msg.key(), msg.value(),
                                  sent_headers[(msg.key(), msg.value())], msg.timestamp()))
    return sorted(produced, key=lambda r: (r.partition, r.offset))


def as_bytes(k) -> bytes:
    return k.encode() if isinstance(k, str) else k


def normalized(recs: list[h.Rec]) -> list[tuple]:
    return sorted((r.partition, r.offset, r.key, r.value,
                   tuple((as_bytes(k), v or b"") for k, v in r.headers), r.timestamp[1])
                  for r in recs)


def bucket_rows(dataset: ds.Dataset, topic: str) -> list[tuple]:
    table = dataset.to_table(filter=ds.field("topic") == topic)
    rows = []
    for r in table.to_pylist():
        headers = tuple((x["key"], x["value"] or b"") for x in r["headers"])
        ts = int(r["timestamp"].timestamp() * 1000 + 0.5)
        rows.append((r["partition"], r["offset"], r["key"], r["value"], headers, ts))
    return sorted(rows)


def local_parquet_rows(node, topic: str):
    """The topic's rows in the data dir's Parquet files, as pyarrow reads them: looks again when
    the listing raced with the store (an upload's `name#n` renamed, or a replaced file garbage
    collected between the listing and the read, which any glob reader meets)."""
    for _ in range(20):
        try:
            return ds.dataset(str(node.objects_dir / "parquet"), format="parquet",
                              partitioning="hive").to_table(filter=ds.field("topic") == topic)
        except FileNotFoundError:
            time.sleep(0.1)
    raise AssertionError("every listing of the data dir raced with a deletion")


def check_consumers_and_engines(bootstrap: str, node, topic: str, dataset_of) -> None:
    partitions = 3
    h.create_topic(bootstrap, topic, partitions)
    produced = produce_mixed(bootstrap, topic, partitions)
    # A consumer reads half before the swap and the rest after it.
    c = h.consumer(bootstrap)
    early = h.read_partitions(bootstrap, topic, range(partitions), c=c)
    wait_compacted(node, topic)
    consumed = h.read_partitions(bootstrap, topic, range(partitions))
    assert normalized(consumed) == normalized(produced)
    assert normalized(early) == normalized(produced)
    c.close()
    # Analytics engines read exactly the produced records from the bucket.
    assert bucket_rows(dataset_of(), topic) == normalized(produced)
    # New records after the Parquet part: a consumer reads across the boundary.
    more = produce_mixed(bootstrap, topic, partitions, per_codec=3)
    consumed = h.read_partitions(bootstrap, topic, range(partitions))
    assert normalized(consumed) == normalized(produced + more)


def test_embedded_compaction_is_invisible_to_consumers_and_readable_by_engines(start_broker):
    b = start_broker(args=FRESHNESS)
    topic = h.unique_topic("parquet")
    parquet_dir = b.objects_dir / "parquet"
    check_consumers_and_engines(
        b.bootstrap, b, topic,
        lambda: ds.dataset(str(parquet_dir), format="parquet", partitioning="hive"))
    # DuckDB over the data dir, pruning by the Hive-style path.
    con = duckdb.connect()
    count, low, high = con.execute(
        f"select count(*), min(\"offset\"), max(\"offset\") from read_parquet("
        f"'{parquet_dir}/topic={topic}/partition=0/*.parquet', hive_partitioning=true)").fetchone()
    _, hw = h.watermarks(b.bootstrap, topic, 0)
    assert low == 0 and count > 0 and high < hw
    rows = con.execute(
        f"select partition, \"offset\", key, value from read_parquet("
        f"'{parquet_dir}/**/*.parquet', hive_partitioning=true) where topic = '{topic}' "
        f"order by partition, \"offset\"").fetchall()
    consumed = h.read_partitions(b.bootstrap, topic, range(3))
    compacted = {(r[0], r[1]): (r[2], r[3]) for r in rows}
    assert compacted
    for r in consumed:
        if (r.partition, r.offset) in compacted:
            assert compacted[(r.partition, r.offset)] == (r.key, r.value)
    status = compactor_status(b)
    assert status["local"]["files_written"] >= 3
    assert status["local"]["job_failures"] == 0
    # The consumers above were served from the Parquet files, not from flush objects.
    assert b.stats()["parquet_row_groups_read"] > 0


def test_idempotent_producer_keeps_working_across_compaction(start_broker):
    b = start_broker(args=FRESHNESS)
    topic = h.unique_topic("idem")
    h.create_topic(b.bootstrap, topic, 1)
    p = h.producer(b.bootstrap, **{"enable.idempotence": True})
    h.produce_and_wait(p, topic, [b"a%d" % i for i in range(50)], partition=0)
    wait_compacted(b, topic)
    h.produce_and_wait(p, topic, [b"b%d" % i for i in range(50)], partition=0)
    values = [r.value for r in h.read_partitions(b.bootstrap, topic, [0])]
    assert values == [b"a%d" % i for i in range(50)] + [b"b%d" % i for i in range(50)]


def duckdb_over_s3(s3: MotoS3, topic: str, expected: int) -> None:
    """The README's DuckDB query over the S3 bucket (httpfs from PyPI: no download)."""
    import duckdb_extensions
    con = duckdb.connect()
    duckdb_extensions.import_extension("httpfs", con=con)
    con.execute("LOAD httpfs")
    endpoint = s3.endpoint.removeprefix("http://")
    con.execute(f"CREATE SECRET (TYPE s3, KEY_ID 'test', SECRET 'test', REGION 'us-east-1', "
                f"ENDPOINT '{endpoint}', URL_STYLE 'path', USE_SSL false)")
    count, distinct = con.execute(
        f"SELECT count(*), count(DISTINCT (partition, \"offset\")) FROM read_parquet("
        f"'s3://{MotoS3.BUCKET}/cluster/parquet/topic={topic}/*/*.parquet', "
        f"hive_partitioning = true)").fetchone()
    assert count == distinct == expected


def s3_dataset(s3: MotoS3, prefix: str):
    fs = pafs.S3FileSystem(endpoint_override=s3.endpoint, scheme="http", access_key="test",
                           secret_key="test", region="us-east-1")
    return ds.dataset(f"{MotoS3.BUCKET}/{prefix}/parquet", filesystem=fs, format="parquet",
                      partitioning="hive")


def test_compactor_process_on_etcd_and_s3_survives_kill9(start_broker, etcd, s3, tmp_path):
    b = start_broker(args=broker_args(etcd, s3) + ["--compactor-enable", "false",
                                                   "--object-commit-timeout-ms", "3000"])
    comp = SkiffCompactor(tmp_path / "compactor", args=broker_args(etcd, s3) + FRESHNESS + FAST_GC,
                          name="compactor")
    comp.start()
    try:
        topic = h.unique_topic("remote")
        check_consumers_and_engines(b.bootstrap, comp, topic, lambda: s3_dataset(s3, "cluster"))

        # Load while the compactor is killed -9 again and again: nothing lost, nothing twice.
        loaded = h.unique_topic("killed")
        h.create_topic(b.bootstrap, loaded, 2)
        stop = threading.Event()
        sent: list = []

        def load():
            p = h.producer(b.bootstrap, **{"enable.idempotence": True})
            i = 0
            while not stop.is_set():
                h.produce_and_wait(p, loaded, [b"v%06d" % (i + k) for k in range(20)],
                                   partition=(i // 20) % 2)
                sent.extend(b"v%06d" % (i + k) for k in range(20))
                i += 20

        t = threading.Thread(target=load)
        t.start()
        rng = random.Random(7)
        for _ in range(4):
            time.sleep(rng.uniform(1.0, 3.0))
            comp.kill9()
            comp.start()
        stop.set()
        t.join(60)
        wait_compacted(comp, loaded, timeout=90)
        consumed = [r.value for r in h.read_partitions(b.bootstrap, loaded, [0, 1])]
        assert sorted(consumed) == sorted(sent)
        assert len(set(consumed)) == len(consumed)
        # Files of crashed jobs are never in the index; garbage collection removes them, and the
        # flush objects whose data is all in Parquet: then a glob sees each record once.
        deadline = time.monotonic() + 60
        while True:
            try:
                table = s3_dataset(s3, "cluster").to_table(
                    filter=ds.field("topic") == loaded, columns=["value"])
                rows = table.column("value").to_pylist()
            except OSError:  # a crashed job's file listed, then garbage collected: look again
                rows = []
            wal = s3.keys("cluster/wal/")
            if sorted(rows) == sorted(sent) and not wal:
                break
            assert time.monotonic() < deadline, (
                f"{len(rows)} rows for {len(sent)} sent, {len(wal)} flush objects left")
            time.sleep(0.5)
        assert compactor_status(comp)["local"]["objects_deleted"] > 0
        duckdb_over_s3(s3, loaded, len(sent))
    finally:
        comp.cleanup()


def bucket_bytes(root: Path, topic: str | None = None) -> int:
    files = [p for p in root.rglob("*") if p.is_file()]
    if topic is not None:
        files = [p for p in files if f"topic={topic}/" in str(p)]
    return sum(p.stat().st_size for p in files)


def test_retention_delete_records_and_gc_shrink_the_bucket(start_broker):
    """Expired and deleted records leave the bucket, not only the log; flush objects whose data
    is in Parquet go too; what stays is what consumers read."""
    b = start_broker(args=["--compactor-freshness-ms", "8000", *FAST_GC,
                           "--log-retention-check-interval-ms", "300"])
    expiring, trimmed = h.unique_topic("expiring"), h.unique_topic("trimmed")
    h.create_topic(b.bootstrap, expiring, 1, config={"retention.ms": "3600000"})
    h.create_topic(b.bootstrap, trimmed, 1)
    now_ms = int(time.time() * 1000)
    p = h.producer(b.bootstrap)
    big = [b"x" * 2000 + b"%d" % i for i in range(300)]
    h.produce_and_wait(p, expiring, big, partition=0, timestamp=now_ms - 2 * 3_600_000)
    h.produce_and_wait(p, trimmed, big, partition=0)
    h.produce_and_wait(p, trimmed, [b"kept-%d" % i for i in range(5)], partition=0)
    # DeleteRecords through the admin client, and retention by time, before compaction.
    admin = h.admin(b.bootstrap)  # kept alive until the answer arrives
    for f in admin.delete_records([TopicPartition(trimmed, 0, 300)]).values():
        f.result(timeout=30)
    deadline = time.monotonic() + 30
    while h.watermarks(b.bootstrap, expiring, 0)[0] != 300:
        assert time.monotonic() < deadline, "retention did not move the log start"
        time.sleep(0.2)
    h.produce_and_wait(p, expiring, [b"fresh-%d" % i for i in range(5)], partition=0)
    before = bucket_bytes(b.objects_dir)
    wait_compacted(b, trimmed)
    wait_compacted(b, expiring)
    deadline = time.monotonic() + 60
    while True:
        left = [bucket_bytes(b.objects_dir, t) for t in (expiring, trimmed)]
        wal = list((b.objects_dir / "wal").glob("*"))
        if max(left) < 20_000 and not wal:
            break
        assert time.monotonic() < deadline, f"parquet bytes {left}, {len(wal)} flush objects"
        time.sleep(0.3)
    after = bucket_bytes(b.objects_dir)
    print(f"bucket bytes before compaction and garbage collection: {before}, after: {after}")
    assert after < before / 4
    assert [r.value for r in h.read_partitions(b.bootstrap, expiring, [0])] == [
        b"fresh-%d" % i for i in range(5)]
    assert [r.value for r in h.read_partitions(b.bootstrap, trimmed, [0])] == [
        b"kept-%d" % i for i in range(5)]
    rows = local_parquet_rows(b, trimmed)
    assert sorted(rows.column("offset").to_pylist()) == list(range(300, 305))


def read_to_eof(bootstrap: str, topic: str, timeout: float = 30.0, **conf) -> list[h.Rec]:
    """Every record of partition 0 until the consumer reaches the end of the log. Offsets at
    the end may hold no record any more (compacted away): the fetch position passes them, so
    this waits for the end-of-partition event rather than for a record at the last offset."""
    from confluent_kafka import OFFSET_BEGINNING, KafkaError
    c = h.consumer(bootstrap, **{"enable.partition.eof": True, **conf})
    try:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        out = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    return out
                raise AssertionError(m.error())
            out.append(h.Rec(m.partition(), m.offset(), m.key(), m.value(),
                             tuple(m.headers() or []), m.timestamp()))
        raise AssertionError(f"{topic}: no end of partition within {timeout}s")
    finally:
        c.close()


def test_log_compaction_keeps_the_latest_value_per_key(start_broker):
    """cleanup.policy=compact: replaying the topic from the start rebuilds the latest state,
    offsets never change, tombstones go after delete.retention.ms, superseded values leave the
    bucket, keyless records are refused."""
    b = start_broker(args=FRESHNESS + FAST_GC)
    topic = h.unique_topic("table")
    h.create_topic(b.bootstrap, topic, 1, config={
        "cleanup.policy": "compact", "delete.retention.ms": "4000",
        "min.cleanable.dirty.ratio": "0.01", "segment.ms": "100"})
    p = h.producer(b.bootstrap)
    keyless = []
    p.produce(topic, value=b"no key", partition=0, on_delivery=lambda e, m: keyless.append(e))
    p.flush(30)
    assert keyless and keyless[0] is not None and keyless[0].name() == "INVALID_RECORD"
    rng = random.Random(11)
    produced = []  # (offset, key, value)
    for round_ in range(6):
        reports = []
        for i in range(50):
            key = b"k%02d" % rng.randrange(12)
            value = None if rng.random() < 0.15 else b"r%d-v%d" % (round_, i)
            p.produce(topic, key=key, value=value, partition=0,
                      on_delivery=lambda e, m, r=reports: r.append((e, m)))
        assert p.flush(30) == 0
        for err, m in reports:
            assert err is None, err
            produced.append((m.offset(), m.key(), m.value()))
        time.sleep(0.5)
    produced.sort()
    table = {}
    for _, key, value in produced:
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    latest = {key: offset for offset, key, _ in produced}
    by_offset = {offset: (key, value) for offset, key, value in produced}

    def replay(recs):
        state = {}
        for r in recs:
            if r.value is None:
                state.pop(r.key, None)
            else:
                state[r.key] = r.value
        return state

    deadline = time.monotonic() + 60
    while True:
        recs = read_to_eof(b.bootstrap, topic)
        offsets = [r.offset for r in recs]
        tombstones = [r for r in recs if r.value is None]
        if set(offsets) <= set(latest.values()) and not tombstones:
            break
        assert time.monotonic() < deadline, f"{len(recs)} records, {len(tombstones)} tombstones"
        time.sleep(0.5)
    assert replay(recs) == table
    for r in recs:
        assert by_offset[r.offset] == (r.key, r.value), "offsets never change"
    _, high = h.watermarks(b.bootstrap, topic, 0)
    assert high == produced[-1][0] + 1
    # Superseded values are gone from the bucket too (once garbage collection ran).
    deadline = time.monotonic() + 30
    while True:
        rows = local_parquet_rows(b, topic)
        if sorted(rows.column("offset").to_pylist()) == sorted(offsets):
            break
        assert time.monotonic() < deadline, f"{rows.num_rows} rows in the bucket for {len(offsets)}"
        time.sleep(0.5)


def test_log_compaction_cleans_an_exactly_once_changelog(start_broker):
    """A compacted topic written by a transactional producer (Kafka Streams' exactly-once
    changelog): once cleaned, even a read_uncommitted consumer sees exactly the latest committed
    value of each key, and no aborted value or marker is left in the bucket's Parquet."""
    b = start_broker(args=FRESHNESS + FAST_GC)
    topic = h.unique_topic("changelog")
    h.create_topic(b.bootstrap, topic, 1, config={
        "cleanup.policy": "compact", "delete.retention.ms": "4000",
        "min.cleanable.dirty.ratio": "0.01", "segment.ms": "100"})
    p = h.producer(b.bootstrap, **{"transactional.id": h.unique_topic("tid"), "linger.ms": 5})
    p.init_transactions(30)
    rng = random.Random(5)
    table, aborted = {}, set()
    for t in range(9):
        p.begin_transaction()
        writes = [(b"k%d" % rng.randrange(8), b"t%d-%d" % (t, i)) for i in range(25)]
        for key, value in writes:
            p.produce(topic, key=key, value=value, partition=0)
        if t % 3 == 1:
            p.abort_transaction(30)
            aborted.update(value for _, value in writes)
        else:
            p.commit_transaction(30)
            table.update(writes)
        time.sleep(0.3)
    deadline = time.monotonic() + 90
    while True:
        recs = read_to_eof(b.bootstrap, topic, **{"isolation.level": "read_uncommitted"})
        if len(recs) == len(table) and not {r.value for r in recs} & aborted:
            break
        assert time.monotonic() < deadline, f"{len(recs)} records for {len(table)} keys"
        time.sleep(0.5)
    assert {r.key: r.value for r in recs} == table
    assert read_to_eof(b.bootstrap, topic) == recs, "read_committed reads the same"
    # The bucket (once delete.retention.ms passed and garbage collection ran): the same
    # records, no aborted value, and a commit marker for each transaction with a record left
    # (the others' markers went).
    surviving_txns = {r.value.split(b"-")[0] for r in recs}
    deadline = time.monotonic() + 30
    while True:
        rows = local_parquet_rows(b, topic)
        control = rows.column("is_control").to_pylist()
        data = [o for o, c in zip(rows.column("offset").to_pylist(), control) if not c]
        markers = [k for k, c in zip(rows.column("key").to_pylist(), control) if c]
        if sorted(data) == [r.offset for r in recs] and len(markers) == len(surviving_txns):
            break
        assert time.monotonic() < deadline, (
            f"{len(data)} rows for {len(recs)} records, {len(markers)} markers for "
            f"{len(surviving_txns)} transactions")
        time.sleep(0.5)
    assert all(k == b"\x00\x00\x00\x01" for k in markers), "commit markers only"
    assert not set(rows.column("value").to_pylist()) & aborted


def test_delete_records_inside_a_parquet_file_rewrites_it(start_broker):
    b = start_broker(args=FRESHNESS + FAST_GC)
    topic = h.unique_topic("trim")
    h.create_topic(b.bootstrap, topic, 1)
    p = h.producer(b.bootstrap)
    h.produce_and_wait(p, topic, [b"v%d" % i for i in range(100)], partition=0)
    wait_compacted(b, topic)
    admin = h.admin(b.bootstrap)  # kept alive until the answer arrives
    for f in admin.delete_records([TopicPartition(topic, 0, 37)]).values():
        f.result(timeout=30)
    deadline = time.monotonic() + 30
    while True:
        offsets = sorted(local_parquet_rows(b, topic).column("offset").to_pylist())
        if offsets == list(range(37, 100)):
            break
        assert time.monotonic() < deadline, f"offsets in the bucket: {offsets}"
        time.sleep(0.3)
    assert [r.value for r in h.read_partitions(b.bootstrap, topic, [0])] == [
        b"v%d" % i for i in range(37, 100)]


def test_json_values_get_typed_columns(start_broker):
    """parquet.value.format=json: top-level fields become typed columns DuckDB filters on;
    the value bytes stay as produced and consumers are unaffected."""
    b = start_broker(args=FRESHNESS)
    topic = h.unique_topic("orders")
    h.create_topic(b.bootstrap, topic, 1, config={"parquet.value.format": "json"})
    values = [json.dumps({"item": f"item-{i % 5}", "price": i * 1.5, "qty": i,
                          "paid": i % 2 == 0, "meta": {"n": i}}).encode() for i in range(200)]
    values.append(b"not json at all")
    p = h.producer(b.bootstrap)
    h.produce_and_wait(p, topic, values[:100], partition=0)
    time.sleep(2.5)  # two files: one per conversion
    h.produce_and_wait(p, topic, values[100:], partition=0)
    wait_compacted(b, topic)
    con = duckdb.connect()
    rows = con.execute(
        "SELECT \"offset\", value_item, value_price, value_qty, value_paid, value_meta, value "
        f"FROM read_parquet('{b.objects_dir}/parquet/topic={topic}/*/*.parquet', "
        "union_by_name = true) ORDER BY \"offset\"").fetchall()
    assert len(rows) == 201
    assert rows[7][1:6] == ("item-2", 10.5, 7, False, '{"n":7}')
    assert rows[200][1:5] == (None, None, None, None) and rows[200][6] == b"not json at all"
    assert [r[6] for r in rows] == values, "the value bytes are unchanged"
    (count,) = con.execute(
        f"SELECT count(*) FROM read_parquet('{b.objects_dir}/parquet/topic={topic}/*/*.parquet',"
        " union_by_name = true) WHERE value_item = 'item-3' AND value_paid").fetchone()
    assert count == 20
    assert [r.value for r in h.read_partitions(b.bootstrap, topic, [0])] == values
