"""`corral serve --workers N`: a parent process that supervises N worker processes on one port.

Sockets: the parent binds one listening socket per worker slot, all with SO_REUSEPORT on the same
address, before it forks (port 0 is resolved by the first bind, and the others take that port). The
kernel spreads new connections over the sockets by a hash of the client's address and port, so workers
get an even share without a shared accept queue, and the parent keeps every slot's socket open: when a
worker dies, the connections the kernel queued on its socket wait for the replacement instead of being
reset. Linux only (elsewhere SO_REUSEPORT does not balance).

The parent runs no event loop and serves nothing. It waits for signals: SIGCHLD (a worker exited: it is
restarted, at once the first time and then with a doubling back-off up to 30 s while it keeps dying
young), SIGTERM/SIGINT (every worker gets SIGTERM and drains as a single process does; the parent exits
when they have, killing what is left after the grace period), SIGHUP, or with `--watch` a change of the file's content
seen by polling it every second (the configuration file is read and validated once, here; every worker then
applies the same order, the new settings or the refusal: app/worker_reload.py).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import uvloop

from corral.app.config_state import ConfigVersion
from corral.app.logs import tag_process
from corral.app.serve import migrate, run
from corral.app.siblings import ReloadOrder, WorkerContext
from corral.config import ConfigError, DiscoveredNode, Settings
from corral.domain.shares import share

log = logging.getLogger(__name__)

_SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
_BACKOFF_MAX_S = 30.0
_YOUNG_S = 10.0  # a worker that dies sooner than this counts as failing again


def bind(host: str, port: int, count: int, backlog: int = 2048) -> list[socket.socket]:
    """`count` listening sockets on one address, SO_REUSEPORT; port 0 becomes the first socket's port."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = found[0]
    out: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, kind, proto)
            out.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
            address = sock.getsockname()  # the port the first bind picked, when asked for 0
    except OSError:
        for sock in out:
            sock.close()
        raise
    return out


def worker_settings(settings: Settings, index: int, count: int, port: int) -> Settings:
    """What worker `index` runs with: the bound port, and its share of each node's slots, static or
    discovered (domain/shares.py: the node's cap is not exceeded N-fold)."""
    backends = [
        b.model_copy(
            update={
                "parallel": share(b.parallel, index, count),
                "max_concurrency": None if b.max_concurrency is None else share(b.max_concurrency, index, count),
            }
        )
        for b in settings.backends
    ]
    server = settings.server.model_copy(update={"port": port})
    discovery = settings.discovery.model_copy(
        update={
            "dns": settings.discovery.dns.model_copy(
                update={"services": [_shared(s, index, count) for s in settings.discovery.dns.services]}
            ),
            "files": [_shared(f, index, count) for f in settings.discovery.files],
        }
    )
    return settings.model_copy(update={"backends": backends, "server": server, "discovery": discovery})


_Source = TypeVar("_Source", bound=DiscoveredNode)


def _shared(source: _Source, index: int, count: int) -> _Source:
    """A discovery source's defaults for its nodes, with this worker's share of their slots."""
    cap = source.max_concurrency
    return source.model_copy(
        update={
            "parallel": share(source.parallel, index, count),
            "max_concurrency": None if cap is None else share(cap, index, count),
        }
    )


def _one_fingerprint_key(settings: Settings, key: str) -> Settings:
    """Unset, the audit's prompt fingerprint key is random per process: the workers of one run share
    one, as a single process would."""
    if settings.audit.fingerprint_key is not None:
        return settings
    return settings.model_copy(update={"audit": settings.audit.model_copy(update={"fingerprint_key": key})})


@dataclass
class _Slot:
    index: int
    listener: socket.socket
    metrics_listener: socket.socket | None
    pid: int | None = None
    started: float = 0.0
    failures: int = 0
    restart_at: float | None = None


@dataclass
class Supervisor:
    settings: Settings
    reload: Callable[[], Settings]  # re-reads the file (and the command line's overrides); raises ConfigError
    slots: list[_Slot] = field(default_factory=list)
    run_dir: Path | None = None
    stopping: bool = False
    port: int = 0
    fingerprint_key: str = field(default_factory=lambda: os.urandom(32).hex())
    watch: Path | None = None  # `--watch`: the file this parent polls, reloading when it changes
    watched: str | None = None  # its content's hash at the last look
    seq: int = 0  # reloads ordered so far
    version: str = ""  # the running configuration's hash, reported by every worker

    def __post_init__(self) -> None:
        self.settings = _one_fingerprint_key(self.settings, self.fingerprint_key)
        self.version = ConfigVersion.of(self.settings).hash

    def _spawn(self, slot: _Slot) -> None:
        assert self.run_dir is not None
        count = len(self.slots)
        settings = worker_settings(self.settings, slot.index, count, self.port)
        context = WorkerContext(slot.index, count, self.run_dir, slot.listener, slot.metrics_listener, self.version)
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                signal.pthread_sigmask(signal.SIG_SETMASK, set())
                _die_with_parent()
                for other in self.slots:
                    if other is not slot:
                        other.listener.close()
                        if other.metrics_listener is not None:
                            other.metrics_listener.close()
                tag_process(worker=slot.index, pid=os.getpid())
                uvloop.run(run(settings, worker=context))
                code = 0
            except BaseException:
                log.exception("worker %d failed", slot.index)
            finally:
                logging.shutdown()
                os._exit(code)
        slot.pid, slot.started, slot.restart_at = pid, time.monotonic(), None
        log.info("worker %d started (pid %d)", slot.index, pid)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = next((s for s in self.slots if s.pid == pid), None)
            if slot is None:
                continue
            slot.pid = None
            code = os.waitstatus_to_exitcode(status)
            if self.run_dir is not None:  # a dead worker's channel: siblings must not wait for it
                (self.run_dir / f"worker-{slot.index}.sock").unlink(missing_ok=True)
            if self.stopping:
                log.info("worker %d (pid %d) exited (%d)", slot.index, pid, code)
                continue
            now = time.monotonic()
            slot.failures = slot.failures + 1 if now - slot.started < _YOUNG_S else 1
            delay = 0.0 if slot.failures <= 1 else min(_BACKOFF_MAX_S, 0.5 * 2 ** (slot.failures - 1))
            slot.restart_at = now + delay
            log.warning("worker %d (pid %d) died (%d); restarting in %.1fs", slot.index, pid, code, delay)

    def _signal_all(self, sig: signal.Signals) -> None:
        for slot in self.slots:
            if slot.pid is not None:
                try:
                    os.kill(slot.pid, sig)
                except ProcessLookupError:
                    pass

    def _trigger(self) -> str:
        """Who asked: a worker serving POST /admin/reload leaves its word in the run folder; else a signal."""
        assert self.run_dir is not None
        asked = self.run_dir / "reload-trigger"
        try:
            word = asked.read_text(encoding="utf-8").strip()
            asked.unlink()
        except OSError:
            return "signal"
        return word or "signal"

    def _order(self, slot: _Slot, order: ReloadOrder) -> None:
        assert self.run_dir is not None
        target = WorkerContext(slot.index, len(self.slots), self.run_dir, slot.listener).settings_path()
        staged = target.with_suffix(".tmp")
        staged.write_text(order.model_dump_json())
        staged.replace(target)

    def _reload(self, trigger: str) -> None:
        """Validate the file once; every worker then applies the same order (its share of the settings, or
        the refusal, so each reports it): app/worker_reload.py."""
        self.seq += 1
        try:
            fresh = self.reload()
        except ConfigError as exc:
            log.error("reload refused, the running configuration stays: %s", exc)
            refusal = ReloadOrder(
                seq=self.seq, trigger=trigger, version=self.version, at=time.time(), problems=exc.problems
            )
            for slot in self.slots:
                self._order(slot, refusal)
            self._signal_all(signal.SIGHUP)
            return
        s = self.settings.server
        if (fresh.server.host, fresh.server.workers) != (s.host, s.workers) or fresh.server.port not in (s.port, 0):
            log.warning("server.host, server.port and server.workers change only on a restart")
        fresh = _one_fingerprint_key(fresh, self.fingerprint_key)
        server = fresh.server.model_copy(update={"host": s.host, "port": s.port, "workers": s.workers})
        self.settings = fresh.model_copy(update={"server": server})  # what restarted workers start with
        self.version = ConfigVersion.of(self.settings).hash
        # Each worker gets the file's own listener settings (its reload reports them as needing a restart
        # and keeps the running ones), except a port of 0, which means the one bound.
        port = self.port if fresh.server.port in (0, s.port) else fresh.server.port
        at = time.time()
        for slot in self.slots:
            share = worker_settings(fresh, slot.index, len(self.slots), port)
            self._order(slot, ReloadOrder(seq=self.seq, trigger=trigger, version=self.version, at=at, settings=share))
        log.info("configuration valid; telling %d worker(s) to reload", len(self.slots))
        self._signal_all(signal.SIGHUP)

    def _file_changed(self) -> bool:
        """`--watch`: whether the configuration file's content changed since the last look (polled each second)."""
        if self.watch is None:
            return False
        try:
            digest = hashlib.sha256(self.watch.read_bytes()).hexdigest()
        except OSError:
            return False
        seen, self.watched = self.watched, digest
        return seen is not None and seen != digest

    def _stop(self) -> None:
        self.stopping = True
        for slot in self.slots:  # the kernel stops queueing on a socket once its last holder closes it
            slot.listener.close()
            if slot.metrics_listener is not None:
                slot.metrics_listener.close()
        log.info("stopping: %d worker(s) drain their requests", sum(s.pid is not None for s in self.slots))
        self._signal_all(signal.SIGTERM)

    def serve(self) -> int:
        """Start the workers and supervise them until they have all stopped. The exit code."""
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        srv = self.settings.server
        listeners = bind(srv.host, srv.port, srv.workers)
        self.port = int(listeners[0].getsockname()[1])
        metrics: list[socket.socket | None] = [None] * srv.workers
        if self.settings.metrics.enabled and self.settings.metrics.listen:
            host, _, port = self.settings.metrics.listen.rpartition(":")
            metrics = list(bind(host, int(port), srv.workers))
        self.slots = [_Slot(k, listeners[k], metrics[k]) for k in range(srv.workers)]
        if not _migrate(self.settings):  # once, not raced by N workers
            return 1
        self.run_dir = Path(tempfile.mkdtemp(prefix="corral-workers-"))  # mode 0700
        self._file_changed()  # the content it starts with
        deadline: float | None = None
        try:
            for slot in self.slots:
                self._spawn(slot)
            log.info("corral parent (pid %d): %d workers on %s:%d", os.getpid(), len(self.slots), srv.host, self.port)
            while True:
                now = time.monotonic()
                due = [s.restart_at for s in self.slots if s.restart_at is not None and not self.stopping]
                wait = 1.0 if not due else max(0.0, min(due) - now)
                got = signal.sigtimedwait(_SIGNALS, min(wait, 1.0))
                if got is not None and got.si_signo in (signal.SIGTERM, signal.SIGINT) and not self.stopping:
                    self._stop()
                    deadline = time.monotonic() + srv.shutdown_grace_s + 10.0
                elif got is not None and got.si_signo == signal.SIGHUP and not self.stopping:
                    self._reload(self._trigger())
                elif not self.stopping and self._file_changed():
                    self._reload("watch")
                self._reap()
                if self.stopping:
                    if all(s.pid is None for s in self.slots):
                        return 0
                    if deadline is not None and time.monotonic() > deadline:
                        log.warning("workers still running after the grace period: killing them")
                        self._signal_all(signal.SIGKILL)
                        deadline = None
                    continue
                for slot in self.slots:
                    if slot.pid is None and slot.restart_at is not None and slot.restart_at <= time.monotonic():
                        self._spawn(slot)
        finally:
            shutil.rmtree(self.run_dir, ignore_errors=True)


def _die_with_parent() -> None:
    """Linux: the worker gets SIGTERM if the parent dies (even by SIGKILL), so no orphan keeps the port."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _migrate(settings: Settings) -> bool:
    """The database migrations, once, in a short-lived child: the parent stays free of the threads and
    event loop they use, which a fork must not inherit."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            uvloop.run(migrate(settings))
            code = 0
        except BaseException:
            log.exception("database migration failed")
        finally:
            logging.shutdown()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def supervise(settings: Settings, reload: Callable[[], Settings], watch: Path | None = None) -> int:
    return Supervisor(settings, reload, watch=watch).serve()
