"""The web console at `/`, driven by headless Chromium (Debian's `chromium`) against a real
broker: the page's script runs, reads the admin API and renders brokers, topics, partitions,
the message browser (text, JSON, hex; by offset and by time), consumer groups with lag, and the
bucket's request counts. Each page is dumped as Chromium rendered it and checked for what the
clients did; screenshots are taken and kept in the test's directory when it fails."""

import json
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition

import helpers as h

CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,1600"]


def chromium(tmp_path: Path, url: str, *mode: str) -> str:
    assert CHROMIUM, "chromium is not installed (scripts/test.sh installs it)"
    profile = tmp_path / f"chromium-{time.monotonic_ns()}"
    run = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}",
                          "--virtual-time-budget=8000", *mode, url],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


def rendered(tmp_path: Path, broker, fragment: str) -> str:
    return chromium(tmp_path, f"http://{broker.http}/{fragment}", "--dump-dom")


def png_size(path: Path) -> tuple[int, int, int]:
    """(width, height, distinct row hashes) of a PNG: a blank page has one distinct row."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    idat, pos = b"", 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = len(raw) // height
    rows = {raw[i * stride + 1:(i + 1) * stride] for i in range(height)}
    return width, height, len(rows)


def test_console_shows_the_cluster_as_clients_left_it(broker, tmp_path):
    b = broker.bootstrap
    topic, group = h.unique_topic("console"), h.unique_topic("console-group")
    h.create_topic(b, topic, 2, config={"retention.ms": "86400000"})
    base_ms = (int(time.time()) - 600) * 1000
    p = h.producer(b)
    for i in range(10):
        p.produce(topic, key=f"user-{i}".encode(), value=json.dumps({"n": i, "name": f"n{i}"}),
                  partition=i % 2, headers=[("source", b"console-test")], timestamp=base_ms + i * 1000)
    p.produce(topic, key=b"bin", value=bytes([0, 255, 16]), partition=0, timestamp=base_ms + 20_000)
    assert p.flush(30) == 0
    c = h.consumer(b, **{"group.id": group})
    c.commit(offsets=[TopicPartition(topic, 0, 2), TopicPartition(topic, 1, 5)], asynchronous=False)
    c.close()

    # Brokers, topics (records per topic, configs), groups (lag), bucket requests.
    page = rendered(tmp_path, broker, "")
    assert broker.bootstrap in page
    assert f'href="#topics/{topic}"' in page
    row = page[page.index(f">{topic}</a>"):]
    assert "<td>2</td><td>11</td><td>retention.ms=86400000</td>" in row[:200], row[:200]
    assert f'data-group="{group}"' in page
    assert "total lag 4" in page  # partition 0: 6 - 2; partition 1: 5 - 5
    bucket = page[page.index('id="bucket-body"'):]
    put_requests = broker.stats()["object_store"]["puts"]
    assert put_requests >= 1
    assert "<td>PUT</td>" in bucket[:300]

    # A topic's partitions.
    page = rendered(tmp_path, broker, f"#topics/{topic}")
    detail = page[page.index('id="topic-detail"'):]
    assert f"Partitions of {topic}" in detail
    assert "<td>0</td><td>1</td>" in detail and "<td>6</td>" in detail  # partition 0, leader 1, hwm 6

    # The message browser: JSON pretty-printed, headers, keys; hex for binary values.
    page = rendered(tmp_path, broker, f"#messages?topic={topic}&partition=1&at=0&format=json")
    body = page[page.index('id="messages-body"'):]
    body = body[:body.index("</tbody>")]
    assert body.count("<tr>") == 5
    assert "user-1" in body and '"name": "n1"' in body and "source=console-test" in body
    page = rendered(tmp_path, broker, f"#messages?topic={topic}&partition=0&at=5&format=hex")
    body = page[page.index('id="messages-body"'):]
    assert "<td>5</td>" in body and "00ff10" in body and "62696e" in body  # value, key "bin"
    # By time: the first record of partition 1 at or after base + 5 s is record 5 (offset 2).
    at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base_ms / 1000 + 5))
    page = rendered(tmp_path, broker,
                    f"#messages?topic={topic}&partition=1&from=timestamp&at={at}&format=text")
    body = page[page.index('id="messages-body"'):]
    first = body[:body.index("</tr>")]
    assert "<td>2</td>" in first and "user-5" in first, first
    # A partition that does not exist: said so on the page.
    page = rendered(tmp_path, broker, f"#messages?topic={topic}&partition=9&at=0")
    error = page[page.index('id="browse-error"'):][:300]
    assert "no partition 9" in error, error

    # Screenshots of the whole page and of the message browser, as a person would see them.
    for name, fragment in [("console.png", ""), ("messages.png",
                           f"#messages?topic={topic}&partition=1&at=0&format=json")]:
        path = tmp_path / name
        chromium(tmp_path, f"http://{broker.http}/{fragment}", f"--screenshot={path}")
        width, height, distinct_rows = png_size(path)
        assert (width, height) == (1280, 1600)
        assert distinct_rows > 100, f"{name} looks blank"


def test_console_assets_are_served_from_the_binary(broker):
    status, body = broker.http_get("/")
    assert status == 200 and b"<title>Skiff console</title>" in body
    for path, kind in [("/console/app.js", b"refresh"), ("/console/style.css", b"font")]:
        status, body = broker.http_get(path)
        assert status == 200 and kind in body, path
    status, body = broker.http_get("/v1/records?topic=nope&partition=0")
    assert status == 400 and "UNKNOWN_TOPIC_OR_PARTITION" in json.loads(body)["error"]


def test_console_creates_configures_deletes_topics_and_resets_offsets(broker, tmp_path):
    """The console's forms and buttons, clicked in Chromium through Playwright; every change
    checked with a Kafka client."""
    from confluent_kafka.admin import ConfigResource
    from playwright.sync_api import sync_playwright

    b = broker.bootstrap
    topic, group, new = (h.unique_topic("console-src"), h.unique_topic("console-g"),
                         h.unique_topic("console-new"))
    h.create_topic(b, topic, 1)
    h.produce_and_wait(h.producer(b), topic, [b"r%d" % i for i in range(10)], partition=0)
    c = h.consumer(b, **{"group.id": group})
    c.commit(offsets=[TopicPartition(topic, 0, 7)], asynchronous=False)
    c.close()
    admin = h.admin(b)

    def configs(name):
        resource = ConfigResource(ConfigResource.Type.TOPIC, name)
        entries = admin.describe_configs([resource])[resource].result(timeout=10)
        return {k: (e.value, e.is_default) for k, e in entries.items()}

    def committed():
        g = h.consumer(b, **{"group.id": group})
        try:
            return g.committed([TopicPartition(topic, 0)], timeout=10)[0].offset
        finally:
            g.close()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=[f for f in FLAGS if f != "--headless"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            page.on("dialog", lambda dialog: dialog.accept())
            page.goto(f"http://{broker.http}/")

            # Create a topic with a config.
            page.fill("#create-topic input[name=name]", new)
            page.fill("#create-topic input[name=partitions]", "4")
            page.fill("#create-topic input[name=configs]", "retention.ms=3600000")
            page.click("#create-topic button")
            page.wait_for_selector(f"text=topic {new} created")
            assert h.topic_partition_count(b, new) == 4
            assert configs(new)["retention.ms"] == ("3600000", False)
            # A name Kafka refuses: the broker's reason on the page.
            page.fill("#create-topic input[name=name]", new)
            page.click("#create-topic button")
            page.wait_for_selector("text=TOPIC_ALREADY_EXISTS")

            # Its page: set a config, remove one, then delete the topic.
            page.click(f"a[href='#topics/{new}']")
            page.wait_for_selector(f"text=Configs of {new}")
            page.fill("#set-configs input[name=configs]", "cleanup.policy=compact")
            page.click("#set-configs button")
            page.wait_for_selector(f"text=configs of {new} changed")
            assert configs(new)["cleanup.policy"] == ("compact", False)
            page.click("button.remove-config[data-config='retention.ms']")
            page.wait_for_selector(f"text=retention.ms of {new} back to its default")
            assert configs(new)["retention.ms"][1] is True
            page.click("#delete-topic")
            page.wait_for_selector(f"text=topic {new} deleted")
            deadline = time.time() + 10
            while new in admin.list_topics(timeout=10).topics:
                assert time.time() < deadline, "the topic is still listed"
                time.sleep(0.2)

            # Reset the group's offsets: a preview changes nothing, apply does.
            form = f"form.reset[data-group='{group}']"
            page.wait_for_selector(form)
            page.fill(f"{form} input[name=topic]", topic)
            page.select_option(f"{form} select[name=to]", "offset")
            page.fill(f"{form} input[name=value]", "3")
            page.click(f"{form} button[name=preview]")
            page.wait_for_selector("text=preview only: nothing changed")
            assert committed() == 7
            page.click(f"{form} button[name=apply]")
            page.wait_for_selector(f"text=offsets of {group} reset")
            assert committed() == 3
            page.screenshot(path=str(tmp_path / "console-changes.png"), full_page=True)
        finally:
            browser.close()
    width, _, distinct_rows = png_size(tmp_path / "console-changes.png")
    assert width == 1280 and distinct_rows > 100
