"""`/metrics`: Prometheus metrics of a broker driven by real clients, parsed with the Prometheus
project's own Python parser (OpenMetrics text), and checked against what the clients did,
against `/v1/stats`, and against what the Grafana dashboard (deploy/grafana/skiff.json)
queries."""

import json
import re
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition
from prometheus_client.openmetrics.parser import text_string_to_metric_families

import helpers as h
import kafka_wire as w


def scrape(broker) -> dict[tuple[str, tuple], float]:
    """Every sample of `/metrics`: (name, sorted labels) → value."""
    status, body = broker.http_get("/metrics")
    assert status == 200, body[:200]
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_count_what_clients_did(broker):
    topic = h.unique_topic("metrics")
    h.create_topic(broker.bootstrap, topic, 2)
    values = [b"v%04d" % i for i in range(200)]
    p = h.producer(broker.bootstrap)
    h.produce_and_wait(p, topic, values[:100], partition=0)
    h.produce_and_wait(p, topic, values[100:], partition=1)
    c = h.consumer(broker.bootstrap)
    c.assign([TopicPartition(topic, part, OFFSET_BEGINNING) for part in (0, 1)])
    got = 0
    while got < len(values):
        m = c.poll(10)
        assert m is not None, f"consumed {got} of {len(values)}"
        if not m.error():
            got += 1
    # The group's position: all of partition 0, half of partition 1.
    group = h.unique_topic("metrics-group")
    g = h.consumer(broker.bootstrap, **{"group.id": group, "enable.auto.commit": False})
    g.commit(offsets=[TopicPartition(topic, 0, 100), TopicPartition(topic, 1, 50)],
             asynchronous=False)
    g.close()
    c.close()
    # A partition the topic does not have: answered UNKNOWN_TOPIC_OR_PARTITION.
    with w.Conn.to(broker) as conn:
        error, _ = w.produce(conn, topic, 7, w.record_batch([b"x"]))
    assert error == w.ERR_UNKNOWN_TOPIC_OR_PARTITION
    # An admin request for a topic that does not exist: counted per item.
    admin = h.admin(broker.bootstrap)
    missing = h.unique_topic("metrics-missing")
    with pytest.raises(KafkaException, match="UNKNOWN_TOPIC"):
        admin.delete_topics([missing])[missing].result(timeout=10)

    samples = scrape(broker)
    by_topic = (("topic", topic),)
    assert samples[("skiff_produced_records_total", by_topic)] == len(values)
    produced_bytes = samples[("skiff_produced_bytes_total", by_topic)]
    assert produced_bytes > sum(map(len, values))
    # Everything produced was fetched at least once (whole batches).
    assert samples[("skiff_fetched_bytes_total", by_topic)] >= produced_bytes
    for api in ("Produce", "Fetch", "Metadata", "ApiVersions"):
        assert samples[("skiff_requests_total", (("api", api),))] >= 1, api
    produce_requests = samples[("skiff_requests_total", (("api", "Produce"),))]
    assert samples[("skiff_request_duration_seconds_count", (("api", "Produce"),))] == \
        produce_requests
    assert samples[("skiff_request_duration_seconds_bucket",
                    (("api", "Produce"), ("le", "+Inf")))] == produce_requests
    # Read at scrape time from the same counters as /v1/stats.
    stats = broker.stats()
    assert samples[("skiff_objects_written_total", ())] == stats["objects_written"] >= 1
    assert samples[("skiff_object_store_requests_total", (("operation", "PUT"),))] >= \
        stats["objects_written"]
    assert samples[("skiff_metadata_store_requests_total", (("operation", "txns"),))] >= 1
    # Latency histograms: one sample per request, every sample in a bucket. (The counters and
    # the histograms are read a moment apart while the embedded compactor may be working.)
    put = (("operation", "PUT"),)
    puts = samples[("skiff_object_store_requests_total", put)]
    assert abs(samples[("skiff_object_store_request_duration_seconds_count", put)] - puts) <= 2
    assert samples[("skiff_object_store_request_duration_seconds_bucket",
                    (("le", "+Inf"),) + put)] == \
        samples[("skiff_object_store_request_duration_seconds_count", put)]
    txn = (("operation", "txn"),)
    txns = samples[("skiff_metadata_store_requests_total", (("operation", "txns"),))]
    assert abs(samples[("skiff_metadata_store_request_duration_seconds_count", txn)] - txns) <= 5
    upload = (("stage", "upload"),)
    assert samples[("skiff_flush_stage_duration_seconds_count", upload)] >= stats["objects_written"]
    assert 0 < samples[("skiff_flush_stage_duration_seconds_sum", upload)] < 60
    assert samples[("skiff_flush_object_bytes_count", ())] >= stats["objects_written"]
    assert samples[("skiff_flush_object_bytes_sum", ())] >= produced_bytes
    assert samples[("skiff_connections", ())] >= 1, "the producer is still connected"
    lag = {part: samples[("skiff_consumer_group_lag_records",
                          (("group", group), ("partition", str(part)), ("topic", topic)))]
           for part in (0, 1)}
    assert lag == {0: 0, 1: 50}
    assert samples[("skiff_request_errors_total",
                    (("api", "Produce"), ("error", "UnknownTopicOrPartition")))] == 1
    assert samples[("skiff_request_errors_total",
                    (("api", "DeleteTopics"), ("error", "UnknownTopicOrPartition")))] == 1
    assert samples[("process_resident_memory_bytes", ())] > 10 * 2**20
    assert samples[("process_cpu_seconds_total", ())] > 0

    # Every series the Grafana dashboard queries exists.
    dashboard = json.loads((Path(__file__).parents[2] / "deploy/grafana/skiff.json").read_text())
    queried = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"\b((?:skiff|process)_[a-z_]+)", target["expr"])}
    names = {name for name, _ in samples}
    assert queried and queried <= names, f"missing: {sorted(queried - names)}"


@pytest.mark.skiff(args=["--compactor-enable", "false", "--log-format", "json"])
def test_put_requests_match_the_bucket_and_logs_are_structured(broker):
    """What /metrics says the broker PUT is what the bucket holds (no compactor: nothing else
    writes or deletes), and `--log-format json` writes one JSON object per line with the
    event's fields (partition, epoch) as fields."""
    topic = h.unique_topic("puts")
    h.create_topic(broker.bootstrap, topic, 2)
    p = h.producer(broker.bootstrap)
    for i in range(5):
        h.produce_and_wait(p, topic, [b"v%d" % i] * 10, partition=i % 2)
    samples = scrape(broker)
    files = [f for f in broker.objects_dir.rglob("*") if f.is_file()]
    puts = samples[("skiff_object_store_requests_total", (("operation", "PUT"),))]
    assert puts == len(files) >= 5, (puts, files)
    assert samples[("skiff_object_store_bytes_total", (("operation", "PUT"),))] == \
        sum(f.stat().st_size for f in files)

    lines = [line for line in broker.log_path.read_text().splitlines() if line.startswith("{")]
    events = [json.loads(line) for line in lines]
    assert events and all({"timestamp", "level", "fields"} <= e.keys() for e in events)
    claimed = [e for e in events if e["fields"].get("message") == "claimed leadership"
               and e["fields"].get("partition", "").startswith(topic)]
    assert len(claimed) == 2, claimed
    assert all(isinstance(e["fields"]["epoch"], int) for e in claimed)
