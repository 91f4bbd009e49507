"""kcat (Debian's 1.7.1, linking librdkafka 2.0.2: an older librdkafka that is strict about the
ApiVersions response) as a command-line producer, consumer and metadata lister."""

import shutil
import subprocess

import pytest

import helpers as h


def kcat(broker, *args, input_text=None, timeout=30):
    if shutil.which("kcat") is None:
        pytest.fail("kcat is not installed (scripts/test.sh installs it)")
    proc = subprocess.run(["kcat", "-b", broker.bootstrap, *args], input=input_text,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"kcat {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\n"
        f"stderr:\n{proc.stderr}")
    return proc.stdout


def test_produce_then_consume_lines(broker):
    lines = [f"line {i}: hello from kcat" for i in range(25)]
    kcat(broker, "-P", "-t", "kcat-lines", input_text="\n".join(lines) + "\n")
    out = kcat(broker, "-C", "-t", "kcat-lines", "-e", "-o", "beginning", "-q")
    assert out.splitlines() == lines
    # Offsets and partitions as kcat reports them.
    out = kcat(broker, "-C", "-t", "kcat-lines", "-e", "-o", "beginning", "-q",
               "-f", "%p %o %s\n")
    assert out.splitlines() == [f"0 {i} {line}" for i, line in enumerate(lines)]


def test_consume_from_offset(broker):
    lines = [f"msg-{i}" for i in range(10)]
    kcat(broker, "-P", "-t", "kcat-offset", input_text="\n".join(lines) + "\n")
    out = kcat(broker, "-C", "-t", "kcat-offset", "-p", "0", "-e", "-o", "6", "-q",
               "-f", "%o=%s\n")
    assert out.splitlines() == [f"{i}=msg-{i}" for i in range(6, 10)]


def test_metadata_listing(broker):
    h.create_topic(broker.bootstrap, "kcat-meta", partitions=3)
    out = kcat(broker, "-L")
    assert f"at {broker.bootstrap}" in out, out             # the advertised listener
    assert 'topic "kcat-meta" with 3 partitions' in out, out
    for p in range(3):
        assert f"partition {p}, leader" in out, out
    out = kcat(broker, "-L", "-t", "kcat-meta")
    assert 'topic "kcat-meta" with 3 partitions' in out, out


def test_key_delimiter_round_trip(broker):
    pairs = [("user-1", "alice"), ("user-2", "bob"), ("user-1", "alice again"),
             ("k:with", "colon in value:ok")]
    # -K ':' splits each line at the first ':' into key and value.
    kcat(broker, "-P", "-t", "kcat-keys", "-K", ":",
         input_text="".join(f"{k}:{v}\n" for k, v in pairs))
    out = kcat(broker, "-C", "-t", "kcat-keys", "-e", "-o", "beginning", "-q",
               "-f", "%k|%s\n")
    expected = [("user-1", "alice"), ("user-2", "bob"), ("user-1", "alice again"),
                ("k", "with:colon in value:ok")]
    assert out.splitlines() == [f"{k}|{v}" for k, v in expected]
    out = kcat(broker, "-C", "-t", "kcat-keys", "-e", "-o", "beginning", "-q", "-K", "=")
    assert out.splitlines() == [f"{k}={v}" for k, v in expected]
