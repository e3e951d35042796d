"""Prometheus metrics for the session layer (the ``[prometheus]`` extra).

Turned on with ``GOSESSION_METRICS = True`` (into
``prometheus_client.REGISTRY``) or with :func:`install` (into any
registry). Nothing of this module runs, and nothing is hooked, while it is
off: :func:`install` is what connects the signal receivers and swaps the
manager's :class:`~flask_gosession.store.Store` for an
:class:`InstrumentedStore`.

Metrics (every label value comes from a fixed set: no label ever carries a
session id, its label or a user id):

``gosession_sessions_created_total``
    new sessions stored (signal ``session_created``);
``gosession_sessions_rotated_total{reason}``
    ``age`` or ``privilege``;
``gosession_sessions_destroyed_total{reason}``
    ``destroy``, ``cleared``, ``revoked`` or ``evicted``;
``gosession_sessions_expired_total{reason}``
    ``idle`` or ``absolute``;
``gosession_sessions_imported_total{source}``
    ``flask-cookie`` or ``flask-session``;
``gosession_tokens_rejected_total{reason}``
    ``missing``, ``mismatch`` or ``no-session``;
``gosession_hijacks_suspected_total{reason}``
    ``reuse`` or ``user-agent``;
``gosession_store_latency_seconds{operation,provider}``
    histogram of each store call, ``operation`` one of :data:`OPERATIONS`'
    values (``read``, ``update``, ``init``, ``touch``, ``destroy``, ``gc``);
``gosession_record_size_bytes{provider}``
    histogram of the encoded size of every record written whole
    (:meth:`Provider.check_size`: an init, a create, and on blob stores an
    update; Redis merges an update on the server, so there only inits and
    creates are measured);
``gosession_store_errors_total{kind,provider}``
    failed store calls, ``kind`` one of :data:`ERROR_KINDS`;
``gosession_active_sessions{provider}``
    live sessions (:meth:`Provider.live_session_count`: records that are
    neither a rotation's forward stub nor a tombstone; one past its idle
    lifetime counts until garbage collection removes it) in stores that
    count them cheaply (:attr:`Provider.cheap_count`: the memory store);
    absent otherwise, never a scan per scrape.

``provider`` is the built-in name (``memory``, ``redis``, ...) or the
provider's class name. The metrics of several apps installed into one
registry share the metric objects: each app counts its own events once
(receivers are connected with ``sender=app``).

Multiprocess mode (gunicorn workers). If ``prometheus_client``'s
multiprocess mode is on as :func:`install` first runs for a registry
(``PROMETHEUS_MULTIPROC_DIR``, or its older spelling
``prometheus_multiproc_dir``, set in the environment: what
``prometheus_client`` itself checks), the two histograms are
``prometheus_client.Histogram`` objects (same names, labels and buckets),
whose values go to the shared files a ``MultiProcessCollector`` reads, as
the counters' always do. That costs a little more CPU per store call than
the in-process :class:`_Histogram` used otherwise (a read-only request
about 1.07x the CPU time without metrics, against 1.02x to 1.03x). The active-sessions gauge
stays a per-process collector, so a ``MultiProcessCollector`` does not
show it: the only store that has it, ``memory``, is per process anyway.
"""
from __future__ import annotations

import os
import threading
import time
import typing as t
import weakref
from bisect import bisect_left

from . import signals
from .errors import ConfigError, CorruptRecordError, ProviderError, RecordTooLarge
from .providers.base import Provider
from .registry import BUILTINS
from .store import Store

if t.TYPE_CHECKING:
    from flask import Flask
    from prometheus_client import CollectorRegistry, Counter, Histogram
    from prometheus_client.core import Metric

    from .manager import Manager

#: The key of an app's :class:`AppMetrics` in ``app.extensions``.
EXTENSION_KEY = "gosession_metrics"

#: Provider method -> the ``operation`` label of its latency. Other calls
#: (the per-user index, the device list) are not timed.
OPERATIONS = {
    "session_read": "read",
    "session_update": "update",
    "session_init": "init",
    "session_create": "init",
    "session_touch": "touch",
    "session_destroy": "destroy",
    "session_gc": "gc",
}

#: The ``kind`` label values of ``gosession_store_errors_total``.
ERROR_KINDS = ("unavailable", "timeout", "corrupt", "too_large")

#: Store latency buckets, seconds: from an in-process store (tens of
#: microseconds) to a store on its last legs.
LATENCY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                   0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Record size buckets, bytes.
SIZE_BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536,
                131072, 262144, 524288, 1048576)

#: Signal -> (metric name, help, the kwarg that becomes its label or None).
_SIGNALS: dict[str, tuple[str, str, str | None]] = {
    "session_created": ("gosession_sessions_created", "Sessions stored for the first time.", None),
    "session_rotated": ("gosession_sessions_rotated", "Sessions moved to a new id.", "reason"),
    "session_destroyed": ("gosession_sessions_destroyed", "Sessions removed on purpose.", "reason"),
    "session_expired": ("gosession_sessions_expired", "Sessions found expired and discarded.",
                        "reason"),
    "session_imported": ("gosession_sessions_imported",
                         "Sessions imported from an earlier session system.", "source"),
    "token_rejected": ("gosession_tokens_rejected", "Unsafe requests that failed the token check.",
                       "reason"),
    "hijack_suspected": ("gosession_hijacks_suspected",
                         "Requests that look like a stolen session id in use.", "reason"),
}


def provider_name(provider: Provider) -> str:
    """The ``provider`` label: the built-in name, else the class name."""
    cls = type(provider)
    for name, (module, attr, _) in BUILTINS.items():
        if cls.__module__ == module and cls.__name__ == attr:
            return name
    return cls.__name__


def error_kind(err: BaseException) -> str:
    """The ``kind`` of a failed store call (one of :data:`ERROR_KINDS`).

    A :class:`ProviderError` is a ``timeout`` when an exception in its
    ``__cause__`` chain is a :class:`TimeoutError` or has ``Timeout`` in
    its class name (redis-py's, SQLAlchemy's pool), else ``unavailable``.
    """
    if isinstance(err, RecordTooLarge):
        return "too_large"
    if isinstance(err, CorruptRecordError):
        return "corrupt"
    cause: BaseException | None = err.__cause__
    seen = 0
    while cause is not None and seen < 8:
        if isinstance(cause, TimeoutError) or "timeout" in type(cause).__name__.lower():
            return "timeout"
        cause, seen = cause.__cause__ or cause.__context__, seen + 1
    return "unavailable"


class _Histogram:
    """A labelled histogram, exported at scrape time.

    Cheaper to observe than ``prometheus_client.Histogram`` (one bisect
    and one lock, where that takes a lock per bucket and sum), since the
    latency one is observed on every store call of every request.
    """

    def __init__(self, name: str, text: str, labelnames: t.Sequence[str],
                 buckets: t.Sequence[float]) -> None:
        self.name, self.text, self.labelnames = name, text, list(labelnames)
        self.bounds = tuple(float(b) for b in buckets)
        self._children: dict[tuple[str, ...], _Observations] = {}
        self._lock = threading.Lock()

    def labels(self, *values: str) -> _Observations:
        """The child of these label values (created at 0 on first use)."""
        with self._lock:
            child = self._children.get(values)
            if child is None:
                child = self._children[values] = _Observations(self.bounds)
            return child

    def describe(self) -> list[Metric]:
        from prometheus_client.core import HistogramMetricFamily

        return [HistogramMetricFamily(self.name, self.text, labels=self.labelnames)]

    def collect(self) -> t.Iterator[Metric]:
        from prometheus_client.core import HistogramMetricFamily

        family = HistogramMetricFamily(self.name, self.text, labels=self.labelnames)
        with self._lock:
            children = list(self._children.items())
        for values, child in children:
            counts, total = child.snapshot()
            cumulative, buckets = 0, []
            for bound, count in zip((*self.bounds, float("inf")), counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            family.add_metric(list(values), buckets, total)
        yield family


class _Observations:
    """One labelled child of a :class:`_Histogram`."""

    __slots__ = ("_bounds", "_counts", "_lock", "_sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        #: Per bucket (not cumulative), the last one ``+Inf``.
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        index = bisect_left(self._bounds, value)  # the first bound >= value
        with self._lock:
            self._counts[index] += 1
            self._sum += value

    def snapshot(self) -> tuple[list[int], float]:
        with self._lock:
            return list(self._counts), self._sum


#: The environment variables that turn on ``prometheus_client``'s
#: multiprocess mode (the second is its older spelling).
MULTIPROCESS_ENV = ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")


def multiprocess_mode() -> bool:
    """Whether ``prometheus_client`` writes metric values to shared files
    (a multiprocess directory is set), as it decides itself."""
    return any(os.environ.get(name) for name in MULTIPROCESS_ENV)


class _Families:
    """The metric objects of one registry, created once per registry so
    that installing twice (two apps, a test suite) never registers a
    duplicate time series."""

    def __init__(self, registry: CollectorRegistry) -> None:
        from prometheus_client import Counter, Histogram

        self.counters: dict[str, Counter] = {
            signal: Counter(name, text, [label] if label else [], registry=registry)
            for signal, (name, text, label) in _SIGNALS.items()
        }
        shared = multiprocess_mode()  # values must then reach the shared files

        def histogram(name: str, text: str, labelnames: tuple[str, ...],
                      buckets: tuple[float, ...]) -> _Histogram | Histogram:
            if shared:
                return Histogram(name, text, labelnames, buckets=buckets, registry=registry)
            custom = _Histogram(name, text, labelnames, buckets)
            registry.register(custom)
            return custom

        #: ``labels(...)`` of either kind gives a child with ``observe``.
        self.latency = histogram("gosession_store_latency_seconds", "Time of one session store call.",
                                 ("operation", "provider"), LATENCY_BUCKETS)
        self.size = histogram("gosession_record_size_bytes",
                              "Encoded size of a session record written whole.",
                              ("provider",), SIZE_BUCKETS)
        self.errors: Counter = Counter(
            "gosession_store_errors", "Failed session store calls, by kind.",
            ["kind", "provider"], registry=registry)
        self.active = _ActiveSessions()
        registry.register(self.active)


_families: weakref.WeakKeyDictionary[t.Any, _Families] = weakref.WeakKeyDictionary()
_families_lock = threading.Lock()


def _families_of(registry: CollectorRegistry) -> _Families:
    with _families_lock:
        families = _families.get(registry)
        if families is None:
            families = _families[registry] = _Families(registry)
        return families


class _ActiveSessions:
    """A collector: ``gosession_active_sessions`` for each installed
    provider with :attr:`~Provider.cheap_count`, read at scrape time."""

    NAME = "gosession_active_sessions"
    HELP = "Live sessions in the store (not rotated away, not being destroyed)."

    def __init__(self) -> None:
        self._providers: weakref.WeakSet[Provider] = weakref.WeakSet()

    def add(self, provider: Provider) -> None:
        if provider.cheap_count:
            self._providers.add(provider)

    def describe(self) -> list[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        return [GaugeMetricFamily(self.NAME, self.HELP, labels=["provider"])]

    def collect(self) -> t.Iterator[Metric]:
        counts: dict[str, int] = {}
        for provider in list(self._providers):
            count = provider.live_session_count()
            if count is not None:
                name = provider_name(provider)
                counts[name] = counts.get(name, 0) + count
        if not counts:
            return  # no store counts cheaply: the gauge is absent
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily(self.NAME, self.HELP, labels=["provider"])
        for name, count in sorted(counts.items()):
            family.add_metric([name], count)
        yield family


_perf_counter = time.perf_counter


class InstrumentedStore(Store):
    """A :class:`Store` that times each call and counts its failures.

    Used only while metrics are on; the plain :class:`Store` has no trace
    of it.
    """

    def __init__(self, provider: Provider, families: _Families) -> None:
        super().__init__(provider)
        self._families = families
        self._label(provider)

    def _label(self, provider: Provider) -> None:
        """Resolve the labelled children for ``provider`` (again when a
        provider is swapped in, as tests do)."""
        name = provider_name(provider)
        families = self._families
        self._labelled = provider
        self._timers = {method: families.latency.labels(op, name) for method, op in OPERATIONS.items()}
        self._errors = {kind: families.errors.labels(kind, name) for kind in ERROR_KINDS}
        families.active.add(provider)
        _observe_sizes(provider, families.size.labels(name))

    def call(self, method: str, *args: t.Any) -> t.Any:
        if self.provider is not self._labelled:
            self._label(self.provider)
        timer = self._timers.get(method)
        start = _perf_counter()
        try:
            return Store.call(self, method, *args)
        except (ProviderError, CorruptRecordError, RecordTooLarge) as err:
            self._errors[error_kind(err)].inc()
            raise
        finally:
            if timer is not None:
                timer.observe(_perf_counter() - start)


def _observe_sizes(provider: Provider, histogram: t.Any) -> None:
    """Make ``provider.check_size`` (called with the size of every record
    written whole) also observe that size, once per histogram child. A
    provider without an instance ``__dict__`` (``__slots__``) is left alone:
    its records are not sized."""
    if not hasattr(provider, "__dict__"):
        return
    observers: list[t.Any] | None = provider.__dict__.get("_gosession_size_observers")
    if observers is None:
        observers = []
        check = provider.check_size

        def check_size(key: str, size: int) -> None:
            check(key, size)
            for observe in observers:
                observe(size)

        provider.__dict__["_gosession_size_observers"] = observers
        provider.__dict__["check_size"] = check_size
    if not any(o.__self__ is histogram for o in observers):
        observers.append(histogram.observe)


class AppMetrics:
    """What :func:`install` set up for one app (``app.extensions["gosession_metrics"]``)."""

    def __init__(self, registry: CollectorRegistry, families: _Families) -> None:
        #: The registry the metrics are in.
        self.registry = registry
        self._families = families
        #: The connected receivers (blinker holds them weakly).
        self.receivers: list[t.Callable[..., None]] = []


def _receiver(counter: Counter, label: str | None) -> t.Callable[..., None]:
    if label is None:
        inc = counter.inc

        def count(sender: t.Any, **kwargs: t.Any) -> None:
            inc()
    else:
        labels = counter.labels

        def count(sender: t.Any, **kwargs: t.Any) -> None:
            labels(str(kwargs.get(label))).inc()

    return count


def install(app: Flask, registry: CollectorRegistry | None = None) -> AppMetrics:
    """Turn metrics on for ``app`` (after ``GoSession.init_app``).

    :param registry: where the metrics go; ``prometheus_client.REGISTRY``
        by default. Installing into a registry that already has them (another
        app, a second test) reuses them.
    :returns: the app's :class:`AppMetrics`; a second call for the same app
        and registry returns the first one.
    :raises ConfigError: if ``prometheus_client`` is not installed, if
        ``GoSession`` is not on the app, or if the app's metrics are already
        in another registry.
    """
    try:
        import prometheus_client
    except ImportError:
        raise ConfigError(
            "GOSESSION_METRICS needs prometheus_client: pip install 'flask-gosession[prometheus]'"
        ) from None
    if registry is None:
        registry = prometheus_client.REGISTRY
    manager: Manager | None = app.extensions.get("gosession")
    if manager is None:
        raise ConfigError("install metrics after GoSession.init_app(app)")
    current: AppMetrics | None = app.extensions.get(EXTENSION_KEY)
    if current is not None:
        if current.registry is registry:
            return current
        raise ConfigError("this app's session metrics are already installed in another registry")
    families = _families_of(registry)
    metrics = AppMetrics(registry, families)
    for signal_name, (_, _, label) in _SIGNALS.items():
        receiver = _receiver(families.counters[signal_name], label)
        getattr(signals, signal_name).connect(receiver, sender=app)
        metrics.receivers.append(receiver)
    old = manager.store
    store = InstrumentedStore(old.provider, families)
    store._down = old._down
    manager.store = store
    app.extensions[EXTENSION_KEY] = metrics
    return metrics
