"""Optional Prometheus metrics (``[metrics] listen = "HOST:PORT"``; extra ``metrics``).

Worker processes count into prometheus_client's multiprocess mode: every process writes
its samples to memory-mapped files in a private directory (``PROMETHEUS_MULTIPROC_DIR``,
created 0700 by the master), and one small exporter process forked by the master sums
them on each scrape. Counters of a worker that died stay in the sum, so a restart never
makes a counter go backwards.

Exported:
  authmilter_messages_total{direction,action}
  authmilter_results_total{method,result}       one per result in our Authentication-Results
  authmilter_signatures_total{algorithm}        DKIM-Signature headers added
  authmilter_eom_seconds                        end-of-message latency (histogram)
  authmilter_dns_lookup_seconds{rdtype,status}  DNS lookups that reached the network (histogram)
  authmilter_reloads_total{result}              SIGUSR1 reloads in the master: ok / failed

When metrics are off or prometheus_client is missing every call is a cheap no-op.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ..outcome import Outcome

ENV_DIR = "PROMETHEUS_MULTIPROC_DIR"
# Label values come from our own typed results, never from text: a sender can create
# no series (a MAIL FROM such as "x;evil=pass@evil.example" once made one).
_METHODS = frozenset({"spf", "dkim", "dmarc", "arc", "auth", "iprev", "sender-id", "dnswl"})
_ALGORITHMS = frozenset({"rsa-sha256", "ed25519-sha256", "rsa-sha1"})
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The process's metric objects, or no-ops until `enable` ran."""

    def __init__(self) -> None:
        self.enabled = False
        self.directory = ""
        self._m: dict[str, Any] = {}

    # -- set-up (master, before forking) ---------------------------------------------
    def enable(self) -> bool:
        """Create the private sample directory and the metric objects.

        Must run before prometheus_client is imported anywhere in the process: the
        library picks its multiprocess value class at import time from the environment.
        Returns False when prometheus_client is not installed.
        """
        if self.enabled:
            return True
        self.directory = tempfile.mkdtemp(prefix="authmilter-metrics-")
        os.environ[ENV_DIR] = self.directory
        try:
            import prometheus_client as pc
        except ImportError:
            shutil.rmtree(self.directory, ignore_errors=True)
            del os.environ[ENV_DIR]
            self.directory = ""
            return False
        # registry=None: in multiprocess mode samples go to files, not to a registry.
        self._m = {
            "messages": pc.Counter("authmilter_messages", "Messages by direction and action",
                                   ["direction", "action"], registry=None),
            "results": pc.Counter("authmilter_results", "Authentication results by method and result",
                                  ["method", "result"], registry=None),
            "signatures": pc.Counter("authmilter_signatures", "DKIM signatures added",
                                     ["algorithm"], registry=None),
            "eom": pc.Histogram("authmilter_eom_seconds", "End-of-message processing time",
                                buckets=_LATENCY_BUCKETS, registry=None),
            "dns": pc.Histogram("authmilter_dns_lookup_seconds", "DNS lookup latency",
                                ["rdtype", "status"], buckets=_LATENCY_BUCKETS, registry=None),
            "reloads": pc.Counter("authmilter_reloads", "Configuration reloads", ["result"], registry=None),
        }
        self.enabled = True
        return True

    def cleanup(self) -> None:
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = ""

    # -- recording (workers) ----------------------------------------------------------
    def observe_outcome(self, outcome: Outcome, seconds: float) -> None:
        if not self.enabled:
            return
        m = self._m
        m["messages"].labels(outcome.direction.value, outcome.action.value).inc()
        m["eom"].observe(seconds)
        for info in outcome.results:
            m["results"].labels(info.method if info.method in _METHODS else "other", info.result.value).inc()
        for key in outcome.signed:
            m["signatures"].labels(key.algorithm if key.algorithm in _ALGORITHMS else "other").inc()

    def observe_dns(self, rdtype: str, seconds: float, status: str) -> None:
        if self.enabled:
            self._m["dns"].labels(rdtype, status).observe(seconds)

    def reload(self, ok: bool) -> None:
        if self.enabled:
            self._m["reloads"].labels("ok" if ok else "failed").inc()


METRICS = Metrics()


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` / ``[v6]:PORT`` -> (host, port)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def serve_forever(listen: str, directory: str) -> None:
    """The exporter process: answer scrapes with the sum over all processes' files.

    Runs in its own process forked by the master (never in a worker, never as a thread
    of the master, which must stay single-threaded to fork safely).
    """
    import signal

    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    host, port = parse_listen(listen)
    start_http_server(port, addr=host, registry=registry)
    signal.sigwait({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
