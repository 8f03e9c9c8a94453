#!/usr/bin/env python3
"""Watches a running `cityops ingest` through its /metrics and /proc until it has stored every
event of N messages; prints throughput, CPU seconds per million messages and peak RSS.
With MQTT it also reports how fast the messages were acknowledged (synced to the spool).
Used by deploy/bench/kafka.sh and deploy/bench/mqtt.sh (`make bench-kafka`, `make bench-mqtt`)."""

import os
import sys
import time
import urllib.request

pid, metrics_url, want = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
ticks = os.sysconf("SC_CLK_TCK")


def scrape():
    try:
        text = urllib.request.urlopen(metrics_url, timeout=2).read().decode()
    except OSError:
        return {}
    sums = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name_labels, value = line.rsplit(" ", 1)
        name = name_labels.split("{", 1)[0]
        if name == "cityops_ingest_rows_inserted_total" and 'table="events"' not in name_labels:
            continue
        sums[name] = sums.get(name, 0.0) + float(value)
    return sums


def cpu_seconds():
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / ticks


def peak_rss():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


first_at = first_cpu = acked_at = None
deadline = time.time() + 1800
while time.time() < deadline:
    m = scrape()
    consumed = m.get("cityops_ingest_messages_total", 0)
    if first_at is None and consumed > 0:
        first_at, first_cpu = time.time(), cpu_seconds()
    if acked_at is None and first_at is not None and m.get("cityops_ingest_mqtt_acks_total", 0) >= want:
        acked_at = time.time()
    events = m.get("cityops_ingest_events_total", 0)
    stored = m.get("cityops_ingest_rows_inserted_total", 0)
    if consumed >= want and stored >= events > 0:
        took = time.time() - first_at
        cpu = cpu_seconds()
        print(
            f"ingest messages={int(consumed)} rows={int(stored)} seconds={took:.3f} "
            f"messages_per_s={consumed / took:.0f} rows_per_s={stored / took:.0f} "
            f"cpu_s_total={cpu:.2f} cpu_s_while_ingesting={cpu - first_cpu:.2f} "
            f"cpu_s_per_million_messages={(cpu - first_cpu) / (consumed / 1e6):.2f} "
            f"peak_rss_bytes={peak_rss()}"
            + (f" acked_per_s={want / (acked_at - first_at):.0f}" if acked_at and acked_at > first_at else "")
        )
        sys.exit(0)
    time.sleep(0.2)
print("ingest did not finish within 30 minutes", file=sys.stderr)
sys.exit(1)
