"""Backends the sweep compares: where the client runs and which processes are the stack.

Each backend starts, for one MTU, an Env: a place to run commands (inside a new
user + net namespace, or on the host for loopback), the address that reaches the
host's loopback from there (the gateway, 10.0.2.2, mapped to 127.0.0.1 by each
stack), and the PIDs whose CPU time is the stack's own. Servers always run on
host loopback; traffic goes nowhere else.

| backend | namespace | stack processes |
|---|---|---|
| loopback | none: client on the host, 127.0.0.1 (the ceiling; host lo keeps its MTU) | none (kernel) |
| slirp4netns | ``unshare -Urn`` holder + ``slirp4netns --configure --mtu=N`` | slirp4netns |
| pasta | ``unshare -Urn`` holder + ``pasta --config-net -m N PID`` | pasta |
| ringnet-wW | ``ringnet.Network(mtu=N, workers=W, allow_host_loopback=True)`` | namespace child + workers |
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import time
from typing import Any, Optional, Sequence

GATEWAY = "10.0.2.2"      # the gateway inside each namespace, mapped to host loopback
HOST = "127.0.0.1"        # where every server listens
_NS_ADDR, _NS_PREFIX = "10.0.2.100", "24"
_HOLD_SECONDS = 3600      # a namespace holder outlives no sweep by more than this
_READY_TIMEOUT = 15.0


class BackendError(Exception):
    """A backend could not start; the text is the reason recorded for its points."""


def tool_version(argv: Sequence[str]) -> Optional[str]:
    """First non-empty output line of ``argv`` (for example ``iperf3 --version``), or None."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        r = subprocess.run(list(argv), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in (r.stdout + r.stderr).splitlines():
        if line.strip() and "syslog" not in line:
            return line.strip()
    return None


def _dpkg_version(pkg: str) -> Optional[str]:
    if shutil.which("dpkg-query") is None:
        return None
    r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
    return r.stdout.strip() or None if r.returncode == 0 else None


class Env:
    """A running network for one backend at one MTU."""

    gateway = GATEWAY

    def __init__(self, backend: "Backend", mtu: int) -> None:
        self.backend = backend
        self.mtu = mtu

    def spawn(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen:
        """Start ``argv`` where the clients run (inside the namespace)."""
        raise NotImplementedError

    def stack_pids(self) -> list[int]:
        """PIDs of the stack's own processes (their CPU time is the stack's cost)."""
        return []

    def counters(self) -> Optional[dict[str, int]]:
        """The stack's own counters, summed (ringnet only), for failure reasons."""
        return None

    def health(self) -> Optional[str]:
        """None while the stack's processes run, else what died (added to a failed run's error)."""
        return None

    def close(self) -> None:
        pass

    def __enter__(self) -> "Env":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Backend:
    """One column of the comparison.

    ``wrap`` goes before a peer's command line (for example a private mount namespace
    with another resolv.conf, perf/dns_bench.py), ``extra`` after its options.
    """

    name = ""
    kind = ""
    workers: Optional[int] = None
    tools: tuple[str, ...] = ()
    wrap: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()

    def unavailable(self) -> Optional[str]:
        """Why this backend cannot run here (the recorded skip reason), or None."""
        missing = [t for t in self.tools if shutil.which(t) is None]
        if missing:
            return (f"{', '.join(missing)} not found on PATH (scripts/install-peers.sh installs "
                    f"iperf3, slirp4netns and passt)")
        return None

    def version(self) -> Optional[str]:
        return None

    def start(self, mtu: int) -> Env:
        raise NotImplementedError


# Host loopback -------------------------------------------------------------------------

class _HostEnv(Env):
    gateway = HOST

    def spawn(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen:
        return subprocess.Popen(list(argv), **kw)


class Loopback(Backend):
    """Client and server on host loopback: the kernel alone, the ceiling."""

    name = kind = "loopback"

    def version(self) -> Optional[str]:
        return f"Linux {os.uname().release}"

    def start(self, mtu: int) -> Env:
        return _HostEnv(self, mtu)


# slirp4netns and pasta: a holder process in a new user + net namespace ------------------

class _HolderEnv(Env):
    """An ``unshare -Urn`` holder; commands enter its namespaces with nsenter."""

    def __init__(self, backend: Backend, mtu: int) -> None:
        super().__init__(backend, mtu)
        self.stack: Optional[subprocess.Popen] = None
        self.holder = subprocess.Popen(["unshare", "-Urn", "--", "sleep", str(_HOLD_SECONDS)],
                                       stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
        own = os.stat("/proc/self/ns/net").st_ino
        deadline = time.monotonic() + _READY_TIMEOUT
        while True:
            if self.holder.poll() is not None:
                err = self.holder.stderr.read().decode(errors="replace").strip() if self.holder.stderr else ""
                raise BackendError(f"unshare -Urn failed (status {self.holder.returncode}): {err}")
            try:
                if os.stat(f"/proc/{self.holder.pid}/ns/net").st_ino != own:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.close()
                raise BackendError("unshare -Urn: no new network namespace after 15 s")
            time.sleep(0.01)

    def spawn(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen:
        return subprocess.Popen(["nsenter", "--preserve-credentials", "-U", "-n", "-t",
                                 str(self.holder.pid), "--", *argv], **kw)

    def stack_pids(self) -> list[int]:
        return [self.stack.pid] if self.stack is not None and self.stack.poll() is None else []

    def health(self) -> Optional[str]:
        if self.stack is not None and self.stack.poll() is not None:
            return f"{self.backend.name} exited with status {self.stack.returncode}"
        return None

    def wait_default_route(self, what: str) -> None:
        """Wait until the namespace has a default route (the stack configured it)."""
        deadline = time.monotonic() + _READY_TIMEOUT
        while time.monotonic() < deadline:
            assert self.stack is not None
            if self.stack.poll() is not None:
                raise BackendError(f"{what} exited during start-up (status {self.stack.returncode}): "
                                   f"{self.stack_stderr()}")
            try:
                with open(f"/proc/{self.holder.pid}/net/route") as f:
                    if any(line.split()[1] == "00000000" for line in f.readlines()[1:]):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise BackendError(f"{what}: the namespace had no default route after {_READY_TIMEOUT:.0f} s")

    def start_pasta(self, argv: Sequence[str]) -> None:
        """Start pasta as this env's stack (``argv``: its command line, up to the holder's
        PID, which is added) and wait until the namespace has its default route.
        BackendError if it does not; closing the env then is the caller's."""
        self.stack = subprocess.Popen([*argv, str(self.holder.pid)], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      start_new_session=True)
        self.wait_default_route("pasta")

    def start_slirp4netns(self, options: Sequence[str] = (), wrap: Sequence[str] = ()) -> None:
        """Start slirp4netns as this env's stack (``--configure``, this env's MTU, ``tap0``;
        ``options`` go before the holder's PID, ``wrap`` before the command) and wait until
        it reports ready (``--ready-fd``) and the namespace has its default route.
        BackendError if it does not; closing the env then is the caller's."""
        ready_r, ready_w = os.pipe()
        try:
            self.stack = subprocess.Popen(
                [*wrap, "slirp4netns", "--configure", f"--mtu={self.mtu}",
                 f"--ready-fd={ready_w}", *options, str(self.holder.pid), "tap0"],
                pass_fds=[ready_w], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, start_new_session=True)
            os.close(ready_w)
            ready_w = -1
            if not select.select([ready_r], [], [], _READY_TIMEOUT)[0] or os.read(ready_r, 1) != b"1":
                raise BackendError(f"slirp4netns did not report ready: {self.stack_stderr()}")
            self.wait_default_route("slirp4netns")
        finally:
            os.close(ready_r)
            if ready_w >= 0:
                os.close(ready_w)

    def stack_stderr(self) -> str:
        if self.stack is None or self.stack.stderr is None:
            return ""
        try:
            text = self.stack.stderr.read().decode(errors="replace")
        except (OSError, ValueError):
            return ""
        lines = [x for x in text.splitlines() if x.strip() and "syslog" not in x]
        return " / ".join(lines[-3:])

    def close(self) -> None:
        for p in (self.holder, self.stack):
            if p is not None and p.poll() is None:
                try:
                    p.send_signal(signal.SIGKILL if p is self.holder else signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in (self.holder, self.stack):
            if p is None:
                continue
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            for f in (p.stderr, p.stdout):
                if f is not None:
                    f.close()


class Slirp4netns(Backend):
    name = kind = "slirp4netns"
    tools = ("slirp4netns", "unshare", "nsenter")

    def version(self) -> Optional[str]:
        return tool_version(["slirp4netns", "--version"])

    def start(self, mtu: int) -> Env:
        env = _HolderEnv(self, mtu)
        try:
            # 10.0.2.2 reaches host loopback: slirp4netns's default (no --disable-host-loopback)
            env.start_slirp4netns(self.extra, self.wrap)
        except BaseException:
            env.close()
            raise
        return env


class Pasta(Backend):
    name = kind = "pasta"
    tools = ("pasta", "unshare", "nsenter")

    def version(self) -> Optional[str]:
        v = tool_version(["pasta", "--version"])
        if v is None or "unknown" in v:
            deb = _dpkg_version("passt")
            if deb:
                return f"passt {deb} (Debian package)"
        return v

    def _help(self) -> str:
        r = subprocess.run(["pasta", "--help"], capture_output=True, text=True, timeout=10)
        return r.stdout + r.stderr

    def start(self, mtu: int) -> Env:
        helptext = self._help()
        argv = ["pasta", "--config-net", "-f", "-q", "-4", "-a", _NS_ADDR, "-n", _NS_PREFIX,
                "-g", GATEWAY, "-m", str(mtu), "-t", "none", "-u", "none", "-T", "none", "-U", "none"]
        # The gateway must mean host loopback: the default of the 2023 builds
        # (--no-map-gw turns it off); later builds name it --map-host-loopback.
        if "--map-host-loopback" in helptext:
            argv += ["--map-host-loopback", GATEWAY]
        elif "--no-map-gw" not in helptext:
            raise BackendError("this pasta names no way to map the gateway to host loopback")
        if os.geteuid() == 0:
            argv += ["--runas", "0"]      # as root pasta drops to nobody, who cannot enter the namespace
        env = _HolderEnv(self, mtu)
        try:
            env.start_pasta([*self.wrap, *argv, *self.extra])
        except BaseException:
            env.close()
            raise
        return env


# ringnet ------------------------------------------------------------------------------

class _RingnetEnv(Env):
    def __init__(self, backend: "Ringnet", mtu: int) -> None:
        super().__init__(backend, mtu)
        import ringnet
        try:
            self.net = ringnet.Network(mtu=mtu, workers=backend.workers, allow_host_loopback=True)
            self.net.start()
        except ringnet.RingnetError as e:
            raise BackendError(f"ringnet.Network did not start: {e}") from e

    def spawn(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen:
        return self.net.spawn(list(argv), **kw)

    def stack_pids(self) -> list[int]:
        return self.net.pids()

    def health(self) -> Optional[str]:
        dead = self.net.failed_children()
        return f"ringnet processes exited: {', '.join(dead)}" if dead else None

    def counters(self) -> Optional[dict[str, int]]:
        c = self.net.counters()
        total: dict[str, int] = {}
        for w in c["workers"]:
            for k, v in w.items():
                total[k] = total.get(k, 0) + int(v)
        for k, v in c["pump"].items():
            total[f"pump_{k}"] = int(v)
        return total

    def close(self) -> None:
        self.net.close()


class Ringnet(Backend):
    kind = "ringnet"

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.name = f"ringnet-w{workers}"

    def unavailable(self) -> Optional[str]:
        try:
            import ringnet  # noqa: F401
            from ringnet import _ringnet_c  # noqa: F401
        except ImportError as e:
            return f"ringnet cannot be imported: {e}"
        if not os.path.exists("/dev/net/tun"):
            return "/dev/net/tun does not exist"
        return None

    def version(self) -> Optional[str]:
        import ringnet
        return str(getattr(ringnet, "__version__", "unknown"))

    def start(self, mtu: int) -> Env:
        return _RingnetEnv(self, mtu)


def all_backends(max_workers: int) -> list[Backend]:
    """Every backend, in the order of the tables: the ceiling, the peers, ringnet."""
    return [Loopback(), Slirp4netns(), Pasta(), *(Ringnet(w) for w in range(1, max_workers + 1))]
