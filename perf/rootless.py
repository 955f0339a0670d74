"""Run a benchmark as its users run it: as an unprivileged uid, even when started as root.

ringnet, slirp4netns and pasta are rootless tools; a benchmark run as root measures
something else (root skips the user-namespace checks, pasta drops to nobody unless told
otherwise, root's sockets have other limits). So ``python -m perf.sweep`` and
``python -m perf.udp_bench`` started as root run themselves again, unchanged, as the
unprivileged test user (``$RINGNET_TEST_USER``, default ``ringnet-test``: made by
scripts/setup-test-env.sh), through ``setpriv``; ``--as-root`` keeps root. Started by
any other user, they run as that user and nothing here happens.

The rerun gets the same Python (the venv setup-test-env.sh makes is readable by every
user), the same ringnet and perf packages on PYTHONPATH, the user's HOME, and ``/`` as
its working directory. An output directory is the user's own temporary directory,
copied into the one asked for when the rerun ends (so a root-owned perf/results works),
whatever its exit status: an interrupted sweep still writes what ran. SIGINT and SIGTERM
are passed on to the rerun, which has its own session.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from typing import Optional

ENV_COMMAND = "RINGNET_PERF_COMMAND"     # the command line as typed, for the records
ENV_OUT = "RINGNET_PERF_OUT"             # where the rerun's output ends up, for its messages
TEST_USER = os.environ.get("RINGNET_TEST_USER", "ringnet-test")


def whoami() -> str:
    """``uid 995 (ringnet-test)``: who this process runs as."""
    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = "?"
    return f"uid {uid} ({name})"


def command(module: str, argv: Optional[list[str]]) -> list[str]:
    """The command line to record: the one typed before a rerun, else this one."""
    typed = os.environ.get(ENV_COMMAND)
    if typed:
        try:
            return list(json.loads(typed))
        except (ValueError, TypeError):
            pass
    return ["python", "-m", module, *(argv if argv is not None else sys.argv[1:])]


def shown_path(path: str) -> str:
    """``path`` as the user will find it: in the output directory asked for, after a rerun."""
    final = os.environ.get(ENV_OUT)
    return os.path.join(final, os.path.basename(path)) if final else path


def should_drop(as_root: bool) -> bool:
    """Whether to rerun as the unprivileged user: root, and not asked to stay root."""
    return os.geteuid() == 0 and not as_root


def _import_roots() -> list[str]:
    """Directories that put this ringnet and this perf package first on sys.path."""
    roots = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
    try:
        import ringnet
        roots.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(ringnet.__file__))))
    except ImportError:
        pass
    return list(dict.fromkeys(roots))


def rerun(module: str, argv: list[str], out: Optional[str] = None) -> int:
    """Run ``python -m module argv`` as the unprivileged user and return its exit status.

    @module: the benchmark module, e.g. ``perf.sweep``
    @argv: its arguments (``--out`` is appended when @out is given)
    @out: the output directory asked for: the rerun writes into a private one, copied
        here afterwards

    Return: the rerun's exit status, or 2 when there is no such user or no setpriv.
    """
    try:
        pw = pwd.getpwnam(TEST_USER)
    except KeyError:
        print(f"{module}: started as root, and there is no unprivileged user {TEST_USER!r} to run "
              f"as (scripts/setup-test-env.sh creates it; RINGNET_TEST_USER names another); "
              f"--as-root runs as root", file=sys.stderr)
        return 2
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        print(f"{module}: started as root, and setpriv (util-linux) is not installed to drop to "
              f"{TEST_USER}; --as-root runs as root", file=sys.stderr)
        return 2
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(_import_roots() + [p for p in env.get("PYTHONPATH", "").split(
        os.pathsep) if p])
    env.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name)
    env.setdefault(ENV_COMMAND, json.dumps(command(module, argv)))
    tmp = None
    args = list(argv)
    if out is not None:
        tmp = tempfile.mkdtemp(prefix="ringnet-perf-out-")
        os.chown(tmp, pw.pw_uid, pw.pw_gid)
        args += ["--out", tmp]
        env[ENV_OUT] = os.path.abspath(out)
    print(f"{module}: started as {whoami()}; running as uid {pw.pw_uid} ({pw.pw_name}), rootless "
          f"as users run it (--as-root keeps root)", file=sys.stderr, flush=True)
    argv_all = [setpriv, f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups", "--",
                sys.executable, "-m", module, *args]
    child = subprocess.Popen(argv_all, env=env, cwd="/", start_new_session=True)

    def forward(signum: int, frame: object) -> None:
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        rc = child.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if tmp is not None:
            assert out is not None
            if os.listdir(tmp):
                os.makedirs(out, exist_ok=True)
                for name in os.listdir(tmp):       # not copytree(tmp, out): out keeps its mode
                    src, dst = os.path.join(tmp, name), os.path.join(out, name)
                    if os.path.isdir(src):
                        shutil.copytree(src, dst, dirs_exist_ok=True)
                    else:
                        shutil.copy2(src, dst)
                print(f"{module}: copied the results into {out}", file=sys.stderr)
            shutil.rmtree(tmp, ignore_errors=True)
    return rc
