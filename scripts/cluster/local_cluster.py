"""A Ray cluster of several nodes on this machine, started as a user would (`ray start`), with
Ray token authentication on, and stopped without touching any other Ray on the machine.

Each node is one `ray start --block` process in its own process group: stopping the cluster
signals exactly those processes (Ray's own shutdown then stops the daemons each started), and
never runs `ray stop` (which stops every Ray process of the user). Every port Ray would
otherwise take at a fixed default (GCS 6379, dashboard 8265, client server 10001, dashboard
agent 52365, workers 10002-19999) is chosen free, and HOME is a private folder, so neither
the real ~/.ray/auth_token nor another cluster is read or changed (caches, XDG_CACHE_HOME,
stay the user's).

Used by tests/test_cluster_example.py (imported by path) and by two_node_submit.sh:
    python scripts/cluster/local_cluster.py WORK_DIR DASHBOARD_PORT
starts a two-node cluster under WORK_DIR, writes WORK_DIR/address (the GCS address) and
WORK_DIR/token (the cluster's token), and runs until SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

RAY_CLI = str(Path(sys.executable).with_name("ray"))
# Ray's unix sockets live under the temp dir and their paths are length-limited: keep it short
MAX_TEMP_DIR_CHARS = 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_env(root: Path, token_file: Path | None, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a process on this machine that talks to the cluster: a private HOME
    (no ~/.ray/auth_token of the user's), and the token settings docs/cluster.md gives users
    (RAY_AUTH_MODE=token + RAY_AUTH_TOKEN_PATH) when ``token_file`` is given; none otherwise."""
    env = dict(os.environ if base is None else base)
    for name in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(name, None)
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    # caches stay the user's (a fresh matplotlib font cache alone costs ~10 s per process)
    env.setdefault("XDG_CACHE_HOME", str(Path(env.get("HOME", str(Path.home()))) / ".cache"))
    env["HOME"] = str(home)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if token_file is not None:
        env["RAY_AUTH_MODE"] = "token"
        env["RAY_AUTH_TOKEN_PATH"] = str(token_file)
    return env


@dataclass
class LocalCluster:
    """A head (with the dashboard) and more nodes, one `ray start --block` process each in
    ``procs`` (the head first); see the module docstring."""

    root: Path
    token_file: Path
    gcs_address: str
    dashboard_url: str
    procs: list[subprocess.Popen] = field(default_factory=list)

    def client_env(self, with_token: bool = True, base: dict[str, str] | None = None) -> dict[str, str]:
        return client_env(self.root, self.token_file if with_token else None, base)

    def state(self, kind: str) -> list[dict]:
        """Ray's state API through the dashboard, with the token: ``kind`` "nodes", "actors", ..."""
        request = urllib.request.Request(
            f"{self.dashboard_url}/api/v0/{kind}?limit=1000",
            headers={"Authorization": f"Bearer {self.token_file.read_text().strip()}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)["data"]["result"]["result"]

    def alive_nodes(self) -> int:
        return sum(1 for node in self.state("nodes") if node.get("state") == "ALIVE")

    def wait_for_nodes(self, count: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        seen, last_error = 0, None
        while time.monotonic() < deadline:
            self._check_running()
            try:
                seen = self.alive_nodes()
                if seen >= count:
                    return
            except (OSError, ValueError, KeyError) as exc:  # the dashboard is still starting
                last_error = exc
            time.sleep(1)
        raise TimeoutError(f"{seen} of {count} Ray nodes alive after {timeout_s:.0f} s ({last_error}); logs: {self.root}")

    def _check_running(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"`{' '.join(proc.args[:3])}` exited with {proc.returncode}; logs: {self.root}")

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM each `ray start --block` (newest first): it stops the daemons it started. What
        is still running in its process group after ``grace_s`` is killed."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:  # its group: the `ray start` (start_new_session) and what it spawned
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
        self.procs.clear()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_cluster(
    root: Path,
    num_nodes: int = 2,
    cpus_per_node: int = 1,
    dashboard_port: int | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float = 180.0,
) -> LocalCluster:
    """Start the cluster under ``root`` (a short, empty folder) with a fresh token in
    ``root/token``; return once ``num_nodes`` nodes are alive. ``env``: extra variables every
    node (and so every Ray worker and job) gets, e.g. credentials the nodes "already have"."""
    root = Path(root)
    if len(str(root)) > MAX_TEMP_DIR_CHARS:
        raise ValueError(f"{root}: Ray's socket paths need a short folder (at most {MAX_TEMP_DIR_CHARS} characters)")
    token_file = root / "token"
    root.mkdir(parents=True, exist_ok=True)
    token_file.write_text(uuid.uuid4().hex)
    node_env = client_env(root, token_file)
    # a loaded box may need longer than Ray's default for a node's agents to start
    node_env.setdefault("RAY_agent_register_timeout_ms", "180000")
    node_env.update(env or {})
    gcs_port, dashboard_port = free_port(), dashboard_port or free_port()
    common = ["--block", "--num-cpus", str(cpus_per_node), "--num-gpus", "0",
              "--min-worker-port", "0", "--max-worker-port", "0", "--object-store-memory", str(200 * 1024**2),
              "--disable-usage-stats"]
    head = ["--head", "--port", str(gcs_port), "--temp-dir", str(root / "ray"), "--include-dashboard", "true",
            "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port),
            "--ray-client-server-port", str(free_port())]
    cluster = LocalCluster(root, token_file, f"127.0.0.1:{gcs_port}", f"http://127.0.0.1:{dashboard_port}")
    try:
        for number in range(num_nodes):
            role = head if number == 0 else ["--address", cluster.gcs_address]
            log = open(root / f"node{number}.log", "wb")
            cluster.procs.append(subprocess.Popen(
                [RAY_CLI, "start", *role, *common, "--dashboard-agent-listen-port", str(free_port())],
                env=node_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_stop_with_parent,
            ))
            log.close()
            if number == 0:  # the others join the head: wait for its GCS
                _wait_for_port(gcs_port, timeout_s, cluster)
        cluster.wait_for_nodes(num_nodes, timeout_s)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _stop_with_parent() -> None:
    """In the child, before `ray start` runs: SIGTERM it when the process that started it dies
    (a killed test run), so that its own shutdown stops the node's daemons."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _wait_for_port(port: int, timeout_s: float, cluster: LocalCluster) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        cluster._check_running()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"no Ray head on port {port} after {timeout_s:.0f} s; logs: {cluster.root}")


def main(argv: list[str]) -> None:
    work, dashboard_port = Path(argv[0]), int(argv[1])
    work.mkdir(parents=True, exist_ok=True)
    # a SIGTERM runs the `with` exit below: stop only this cluster's processes
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with start_cluster(work, dashboard_port=dashboard_port) as cluster:
        (work / "address").write_text(cluster.gcs_address)
        print("cluster up", cluster.gcs_address, cluster.dashboard_url, flush=True)
        try:
            while True:
                time.sleep(1)
        finally:
            print("cluster down", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
