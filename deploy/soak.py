#!/usr/bin/env python3
"""`make soak`: the whole pipeline for an hour at ten times the city's natural rate.

The live city of `make demo` (deploy/demo.py: the local stack, `cityops ingest` with both
sources, `cityops alert` with the shipped rules, `cityops sim` paced to the clock and publishing
to mosquitto and Kafka, a flood incident a minute in), with the simulator's devices reporting
SOAK_SPEED times as often. Every SOAK_SAMPLE_SECONDS the resident memory (RSS) of the ingest and
the alerter is read from /proc. At the end the simulator stops, the ingest drains, and the soak
checks, printing each figure:

- RSS growth after the warm-up: the median of the last SOAK_WINDOW_SECONDS (5 minutes) against the
  median of as long after SOAK_WARMUP_SECONDS, under 10 % for both services;
- no line logged at ERROR by any of the three services (WARN lines are counted and listed);
- every message the simulator had acknowledged is in ClickHouse once, as events or a reject:
  distinct Kafka (topic, partition, offset) and MQTT spool sequences per feed against the
  simulator's own count per feed, and no event id twice.

Exit 0 only when all hold. The samples go to .cityops/soak/rss.csv, the summary to
.cityops/soak/summary.json.

Environment (all optional):
  SOAK_SECONDS          how long the live city runs (default 3600)
  SOAK_SPEED            multiple of the natural rate (default 10)
  SOAK_WARMUP_SECONDS   what counts as warm-up (default 600)
  SOAK_SAMPLE_SECONDS   RSS sampling interval (default 10)
  SOAK_WINDOW_SECONDS   the windows whose medians are compared (default 300)
  SOAK_BACKFILL         history before going live, for the rules that read ClickHouse (default 2h)
  and those of deploy/demo.py for ports and the binary.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import sys
import time
import urllib.error
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo  # noqa: E402  (the soak is the demo, run longer and measured)
from demo import Demo, DemoError, clickhouse, metric_sum, parse_duration, scrape  # noqa: E402

RSS_GROWTH_LIMIT = 0.10
WINDOW_S = float(os.environ.get("SOAK_WINDOW_SECONDS", 300))


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class Soak(Demo):
    def __init__(self, binary: Path, seconds: float, speed: float, warmup_s: float,
                 sample_s: float, backfill: str) -> None:
        super().__init__(
            binary=binary, scenario="flood", scenario_at_s=60.0, scenario_duration_s=1200.0,
            demo_seconds=seconds, backfill=backfill, seed=2026,
        )
        self.run_dir = demo.STATE_DIR / "soak"
        self.interactive = False
        self.speed = speed
        self.warmup_s = warmup_s
        self.sample_s = sample_s
        self.sim_extra = ["--speed", f"{speed:g}"]
        self.samples: list[tuple[float, int, int]] = []  # (seconds live, ingest RSS, alert RSS)
        self.failures: list[str] = []
        self.figures: dict = {"speed": speed, "seconds": seconds, "warmup_seconds": warmup_s}

    def fresh_data(self) -> None:
        super().fresh_data()
        # The binary is copied: a build during the soak must not replace what is running.
        copy = self.run_dir / "cityops"
        shutil.copy2(self.binary, copy)
        self.binary = copy

    def watch(self) -> None:
        deadline = self.services_up_at + self.demo_seconds
        next_sample = time.monotonic()
        next_print = time.monotonic() + 60
        csv = open(self.run_dir / "rss.csv", "w")
        csv.write("seconds_live,ingest_rss_bytes,alert_rss_bytes\n")
        while time.monotonic() < deadline:
            for service in self.services:
                if not service.alive():
                    raise DemoError(f"{service.name} exited (code {service.process.returncode}):\n{service.log_tail()}")
            now = time.monotonic()
            if now >= next_sample:
                ingest = rss_bytes(self.service("ingest").process.pid)
                alert = rss_bytes(self.service("alert").process.pid)
                if ingest is not None and alert is not None:
                    live = now - self.services_up_at
                    self.samples.append((live, ingest, alert))
                    csv.write(f"{live:.0f},{ingest},{alert}\n")
                    csv.flush()
                next_sample = now + self.sample_s
            if now >= next_print:
                _, ingest, alert = self.samples[-1] if self.samples else (0, 0, 0)
                print(f"soak: {now - self.services_up_at:5.0f} s of {self.demo_seconds:.0f}; "
                      f"RSS ingest {ingest / 2**20:.1f} MiB, alert {alert / 2**20:.1f} MiB; "
                      + self.status().splitlines()[2], flush=True)
                next_print = now + 60
            try:
                self.observe_alerts()
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(1.0)
        csv.close()

    # ------------------------------------------------------------ the checks

    def check_rss(self) -> None:
        end = self.samples[-1][0] if self.samples else 0.0
        if end < self.warmup_s + 2 * WINDOW_S:
            self.failures.append(f"too short to measure RSS growth: {end:.0f} s live "
                                 f"(warm-up {self.warmup_s:.0f} s plus two {WINDOW_S:.0f} s windows)")
            return
        for index, name in ((1, "ingest"), (2, "alert")):
            after_warmup = [s[index] for s in self.samples if self.warmup_s <= s[0] < self.warmup_s + WINDOW_S]
            last = [s[index] for s in self.samples if s[0] >= end - WINDOW_S]
            base, final = statistics.median(after_warmup), statistics.median(last)
            peak = max(s[index] for s in self.samples)
            growth = final / base - 1
            self.figures[f"{name}_rss"] = {
                "after_warmup_mib": round(base / 2**20, 1),
                "last_mib": round(final / 2**20, 1),
                "peak_mib": round(peak / 2**20, 1),
                "growth_percent": round(growth * 100, 2),
            }
            print(f"RSS {name}: {base / 2**20:.1f} MiB after the warm-up, {final / 2**20:.1f} MiB "
                  f"over the last {WINDOW_S:.0f} s ({growth * 100:+.2f} %), peak {peak / 2**20:.1f} MiB")
            if growth >= RSS_GROWTH_LIMIT:
                self.failures.append(f"{name} RSS grew {growth * 100:.1f} % after the warm-up (limit 10 %)")

    def sim_sent(self) -> dict[str, int]:
        """The simulator's own count per feed, from the summary it writes when it stops."""
        text = self.service("sim").log.read_text(errors="replace")
        if "all acknowledged" not in text or " 0 failed" not in text:
            self.failures.append("the simulator did not have every message acknowledged:\n"
                                 + self.service("sim").log_tail())
        sent = {}
        for match in re.finditer(r"^  (\w+)\s+(\d+) messages\s+\d+ bytes$", text, re.MULTILINE):
            sent[match.group(1)] = int(match.group(2))
        if not sent:
            raise DemoError(f"no per-feed summary in the simulator's log:\n{self.service('sim').log_tail()}")
        return sent

    def wait_drained(self, deadline_s: float = 300.0) -> None:
        """Kafka lag and the MQTT spool backlog at zero, and the stored count still."""
        ingest = self.service("ingest")
        deadline = time.monotonic() + deadline_s
        last = None
        while time.monotonic() < deadline:
            try:
                m = scrape(ingest.metrics_port)
                lag = metric_sum(m, "cityops_ingest_kafka_lag_messages")
                backlog = metric_sum(m, "cityops_ingest_spool_backlog_messages")
                stored = self.stored_messages()
            except (urllib.error.URLError, OSError, KeyError, ValueError):
                time.sleep(1)
                continue
            if lag == 0 and backlog == 0 and stored == last:
                return
            last = stored
            time.sleep(5)
        raise DemoError(f"the ingest did not drain within {deadline_s:.0f} s")

    def stored_messages(self) -> dict[str, int]:
        rows = clickhouse(
            "SELECT feed, uniqExact(source_kind, source_topic, source_partition, source_offset) FROM ("
            " SELECT feed, source_kind, source_topic, source_partition, source_offset FROM events"
            "  WHERE source_kind IN ('kafka', 'mqtt')"
            " UNION ALL"
            " SELECT feed, source_kind, source_topic, source_partition, source_offset FROM rejects"
            "  WHERE source_kind IN ('kafka', 'mqtt'))"
            " GROUP BY feed ORDER BY feed"
        )
        return {feed: int(n) for feed, n in rows}

    def check_stored(self, sent: dict[str, int]) -> None:
        stored = self.stored_messages()
        # A message that could not be routed to a feed is a reject with an empty feed; none is
        # expected from the simulator, and one would show as a mismatch below.
        total_sent, total_stored = sum(sent.values()), sum(stored.values())
        self.figures["messages_sent"] = total_sent
        self.figures["messages_stored"] = total_stored
        self.figures["by_feed"] = {f: {"sent": sent.get(f, 0), "stored": stored.get(f, 0)}
                                   for f in sorted(set(sent) | set(stored))}
        for feed in sorted(set(sent) | set(stored)):
            if sent.get(feed, 0) != stored.get(feed, 0):
                self.failures.append(f"{feed or '(no feed)'}: {sent.get(feed, 0)} messages sent, "
                                     f"{stored.get(feed, 0)} stored")
        events, distinct = (int(x) for x in clickhouse(
            "SELECT count(), uniqExact(event_id) FROM events WHERE source_kind IN ('kafka', 'mqtt')")[0])
        rejects = int(clickhouse("SELECT count() FROM rejects WHERE source_kind IN ('kafka', 'mqtt')")[0][0])
        self.figures.update({"events": events, "rejects": rejects, "duplicate_event_ids": events - distinct})
        print(f"stored: {total_stored:,} of {total_sent:,} messages sent, as {events:,} events "
              f"({events - distinct} event ids twice) and {rejects:,} rejects")
        if events != distinct:
            self.failures.append(f"{events - distinct} event ids stored twice")

    def check_logs(self) -> None:
        error_line, warn_line = re.compile(r"^\S+\s+ERROR\s"), re.compile(r"^\S+\s+WARN\s")
        for service in self.services:
            lines = service.log.read_text(errors="replace").splitlines()
            errors = [line for line in lines if error_line.search(line)]
            warns = [line for line in lines if warn_line.search(line)]
            self.figures[f"{service.name}_log"] = {"errors": len(errors), "warnings": len(warns)}
            print(f"log of {service.name}: {len(errors)} ERROR, {len(warns)} WARN lines")
            for line in warns[:5]:
                print(f"    {line[:200]}")
            if errors:
                self.failures.append(f"{service.name} logged {len(errors)} ERROR line(s), first: {errors[0][:300]}")

    def finish(self) -> None:
        """Stops the simulator, lets the ingest drain, checks; then stops the readers."""
        sim = self.service("sim")
        sim.stop(120)
        sent = self.sim_sent()
        self.wait_drained()
        self.check_stored(sent)
        for name in ("ingest", "alert"):
            self.service(name).stop(60)
            if self.service(name).process.returncode != 0:
                self.failures.append(f"{name} exited {self.service(name).process.returncode} on SIGTERM")
        self.check_logs()
        self.check_rss()


def main() -> int:
    binary = Path(os.environ.get("CITYOPS_BIN", demo.REPO / "target" / "release" / "cityops")).resolve()
    if not binary.is_file():
        print(f"soak: {binary} not found; run `make soak` (it builds it)", file=sys.stderr)
        return 1
    soak = Soak(
        binary=binary,
        seconds=env_float("SOAK_SECONDS", 3600),
        speed=env_float("SOAK_SPEED", 10),
        warmup_s=env_float("SOAK_WARMUP_SECONDS", 600),
        sample_s=env_float("SOAK_SAMPLE_SECONDS", 10),
        backfill=os.environ.get("SOAK_BACKFILL", "2h"),
    )
    parse_duration(soak.backfill)

    def ask_stop(signum, _frame):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, ask_stop)
    signal.signal(signal.SIGTERM, ask_stop)
    status = 0
    try:
        soak.check()
        soak.start_stack()
        soak.fresh_data()
        soak.start_ingest()
        soak.backfill_history()
        soak.start_live()
        print(f"== Soaking: {soak.demo_seconds:.0f} s at {soak.speed:g} times the natural rate; "
              f"logs in {soak.run_dir / 'log'}", flush=True)
        soak.watch()
        soak.finish()
    except KeyboardInterrupt:
        print("\nsoak: interrupted", flush=True)
        status = 1
    except DemoError as error:
        print(f"\nsoak: {error}", file=sys.stderr, flush=True)
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        soak.stop_services()
        left = soak.stop_stack()
        if left:
            soak.failures.append(f"processes left behind: {', '.join(left)}")
    fired = sorted({s.labels.get("alertname", "?") for s in soak.alerts.values()})
    soak.figures["alerts_seen"] = fired
    soak.figures["failures"] = soak.failures
    soak.run_dir.mkdir(parents=True, exist_ok=True)
    (soak.run_dir / "summary.json").write_text(json.dumps(soak.figures, indent=2, ensure_ascii=False))
    print(f"alerts seen in Alertmanager: {', '.join(fired) or 'none'}")
    for failure in soak.failures:
        print(f"FAIL: {failure}", flush=True)
    if status == 0 and not soak.failures:
        print("soak: passed", flush=True)
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
