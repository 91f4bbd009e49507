"""The whole broker's memory under the default budgets (ARCHITECTURE.md, "Memory"): producers at
full speed, consumers catching up, connections that pipeline large Fetches and never read them,
and connections that start huge produce frames and stall, all at once. The broker's peak
resident set (VmHWM, from its start) must stay under 512 MiB plus its default caches, and a
healthy client must still be served.

Without the Fetch budget this load would queue gigabytes of responses. Measured on 2026-12-06
(debug build): peak 542 MiB under today's defaults, 822 MiB under the budgets before they were
sized for this bound (1.8 GiB of them), which more load would have pushed past it.
"""

import os
import threading
import time

import pytest
from confluent_kafka import TopicPartition

import kafka_wire as w
from helpers import consumer, create_topic, produce_and_wait, producer, unique_topic
from test_hostile import assert_session_kept, raw_socket, round_trip_s, vm_kib

MIB = 1 << 20
FETCH = 1
PRODUCE = 0
PARTITIONS = 4
# What the defaults allow (README, ARCHITECTURE.md "Memory"): budgets and baseline under 512 MiB,
# plus the caches: recent objects 256 MiB, sections read back 128 MiB, Parquet 64 MiB.
BOUND = 512 * MIB + (256 + 128 + 64) * MIB
RECORD = 512 * 1024
RECORDS_PER_PRODUCER = 128  # 64 MiB each


def produce_partition(bootstrap: str, topic: str, partition: int, errors: list) -> None:
    try:
        p = producer(bootstrap, **{"linger.ms": 20, "message.timeout.ms": 120_000})
        value = os.urandom(RECORD)
        produce_and_wait(p, topic, [value] * RECORDS_PER_PRODUCER, timeout=120, partition=partition)
    except Exception as e:  # reported by the test
        errors.append(f"producer {partition}: {e!r}")


def catch_up(bootstrap: str, topic: str, want: int, seen: list, errors: list) -> None:
    """Reads every partition from the start, with large fetches, until `want` records."""
    try:
        c = consumer(bootstrap, **{"fetch.max.bytes": 52_428_800,
                                   "max.partition.fetch.bytes": 8_388_608})
        c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        count = 0
        deadline = time.monotonic() + 150
        while count < want and time.monotonic() < deadline:
            for m in c.consume(100, timeout=1.0):
                if m.error() is None:
                    count += 1
        c.close()
        seen.append(count)
    except Exception as e:  # reported by the test
        errors.append(f"consumer: {e!r}")


def unread_fetches(broker, topic: str, connections: int) -> list:
    """Connections that pipeline 40 Fetches of up to 55 MiB each and never read a byte: each holds
    its share of the Fetch budget (8 MiB) until the write timeout."""
    sockets = []
    for n in range(connections):
        s = raw_socket(broker, rcvbuf=4096)
        s.sendall(b"".join(
            w.frame(w.request_header_v1(FETCH, 4, corr)
                    + w.fetch_v4_body(topic, n % PARTITIONS, 0, max_wait_ms=500, min_bytes=1,
                                      max_bytes=55 * MIB))
            for corr in range(40)))
        sockets.append(s)
    return sockets


def stalled_produce_frames(broker) -> list:
    """Connections that announce a 32 MiB Produce frame, send 64 KiB of it and stall: each
    holds its frame's length of the request budget while the others carry on within the rest."""
    sockets = []
    header = w.request_header_v1(PRODUCE, 3, 1)
    for _ in range(2):
        s = raw_socket(broker)
        s.sendall((32 * MIB).to_bytes(4, "big") + header + os.urandom(64 * 1024))
        sockets.append(s)
    return sockets


@pytest.mark.skiff(flush_linger_ms=250)
def test_peak_memory_stays_under_the_default_bound(broker):
    topic = unique_topic("memory")
    create_topic(broker.bootstrap, topic, PARTITIONS)
    # Some data first, so the unread fetches have something to read from the start.
    produce_and_wait(producer(broker.bootstrap, **{"linger.ms": 20}), topic,
                     [os.urandom(RECORD)] * 16, partition=0)
    errors: list = []
    seen: list = []
    want = PARTITIONS * RECORDS_PER_PRODUCER + 16
    hostile = stalled_produce_frames(broker) + unread_fetches(broker, topic, 4)
    try:
        threads = [threading.Thread(target=produce_partition,
                                    args=(broker.bootstrap, topic, p, errors), daemon=True)
                   for p in range(PARTITIONS)]
        threads += [threading.Thread(target=catch_up,
                                     args=(broker.bootstrap, topic, want, seen, errors),
                                     daemon=True)
                    for _ in range(3)]
        for t in threads:
            t.start()
        # More unread fetches once the log is long, each wanting the whole of it: seven in all
        # hold 56 MiB of the 64 MiB Fetch budget, leaving the rest to everyone else.
        time.sleep(3)
        hostile += unread_fetches(broker, topic, 3)
        for t in threads:
            t.join(180)
        assert not errors, errors
        assert seen == [want] * 3, f"consumers saw {seen} of {want} records"
        took = round_trip_s(broker, unique_topic("healthy"))
        peak = vm_kib(broker.pid, "VmHWM") * 1024
    finally:
        for s in hostile:
            s.close()
    print(f"peak RSS {peak / MIB:.0f} MiB (bound {BOUND / MIB:.0f} MiB); "
          f"healthy round trip {took:.2f} s")
    assert peak < BOUND, f"peak RSS {peak / MIB:.0f} MiB over the default bound {BOUND / MIB:.0f} MiB"
    assert took < 30, f"a healthy client's round trip took {took:.1f} s"
    assert_session_kept(broker)


def thp_enabled(pid: int) -> str:
    with open(f"/proc/{pid}/status") as status:
        found = [line.split()[1] for line in status if line.startswith("THP_enabled:")]
    if not found:
        pytest.skip("this kernel does not report THP_enabled")
    return found[0]


def test_the_broker_runs_without_transparent_huge_pages(broker):
    # Each fresh huge page is zeroed whole on first touch; the broker's buffers churn.
    assert thp_enabled(broker.pid) == "0"


@pytest.mark.skiff(args=["--transparent-huge-pages", "true"])
def test_transparent_huge_pages_can_be_allowed(broker):
    assert thp_enabled(broker.pid) == "1"


def environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        pairs = [item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item]
    return {k.decode(): v.decode() for k, v in pairs}


def test_the_broker_keeps_freed_memory_ten_seconds_before_giving_it_back(start_broker,
                                                                        monkeypatch):
    # mimalloc's default (1 s) gave the broker's churning buffers back and faulted them in
    # again; the allocator reads the setting at load, so the broker runs itself again with it.
    monkeypatch.delenv("MIMALLOC_PURGE_DELAY", raising=False)
    broker = start_broker()
    assert environ(broker.pid).get("MIMALLOC_PURGE_DELAY") == "10000"
    with open(f"/proc/{broker.pid}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[1] == b"serve", "the same process, its arguments kept"


def test_an_operators_allocator_setting_is_kept(start_broker):
    broker = start_broker(start=False)
    broker.extra_env["MIMALLOC_PURGE_DELAY"] = "250"
    broker.start()
    assert environ(broker.pid).get("MIMALLOC_PURGE_DELAY") == "250"
