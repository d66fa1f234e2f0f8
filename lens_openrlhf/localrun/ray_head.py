"""A private Ray head on loopback for ``ray job submit`` runs (the demo's ``--submit``, tests), started and
stopped through its own process handle: never ``ray stop``, never a process found by name."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Dict, Optional


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: ``ray start`` flags whose default is a fixed port shared by every head on a machine
PRIVATE_PORT_FLAGS = (
    "--ray-client-server-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--metrics-export-port",
    "--runtime-env-agent-port",
)


class LocalRayHead:
    """``ray start --head --block`` with its own temp dir; stopped by signalling that process (never ``ray stop``).

    ``--block`` keeps the ``ray start`` process alive as the parent of the cluster's processes; on SIGTERM
    it kills the processes it started. Any descendant still alive afterwards (recorded by PID before the
    stop) is killed by PID.
    """

    def __init__(self, temp_dir: Path, num_cpus: int, num_gpus: int, log_path: Path):
        self.temp_dir, self.num_cpus, self.num_gpus, self.log_path = Path(temp_dir), num_cpus, num_gpus, log_path
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self.proc: Optional[subprocess.Popen] = None
        self.leftover: list = []

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self, env: Dict[str, str], timeout_s: float = 300) -> "LocalRayHead":
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        ray_bin = str(Path(sys.executable).with_name("ray"))
        cmd = [
            ray_bin,
            "start",
            "--head",
            "--block",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            str(self.gcs_port),
            "--num-cpus",
            str(self.num_cpus),
            "--num-gpus",
            str(self.num_gpus),  # fake logical GPUs: OpenRLHF asks for {"GPU": 1} bundles
            "--temp-dir",
            str(self.temp_dir),
            "--include-dashboard",
            "true",  # the job server lives in the dashboard
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            str(self.dashboard_port),
            "--object-store-memory",
            str(512 * 1024**2),
            "--disable-usage-stats",
        ]
        # every other fixed default port too (client server 10001, dashboard agent 52365, ...): a second head on the
        # same machine (another test run, a user's cluster) would otherwise take them first and this one would fail
        for flag in PRIVATE_PORT_FLAGS:
            cmd += [flag, str(free_port())]
        self._log = open(self.log_path, "a")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.proc.returncode}; see {self.log_path}")
            if self._answers("/api/version") and self._accepts_a_job():
                return self
            time.sleep(2)
        self.stop()
        raise RuntimeError(f"the Ray head did not come up in {timeout_s:.0f} s; see {self.log_path}")

    def _accepts_a_job(self) -> bool:
        """Submit a no-op job (``true``): the job server answers 500 "No available agent" until the head's
        dashboard agent has registered, which can lag the dashboard by tens of seconds on a loaded machine."""
        self._probes = getattr(self, "_probes", 0) + 1
        body = json.dumps({"entrypoint": "true", "submission_id": f"lens_openrlhf_probe_{self._probes}"}).encode()
        req = urllib.request.Request(
            f"{self.dashboard_url}/api/jobs/", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status == 200
        except Exception:  # noqa: BLE001 - not ready yet (500 "No available agent", connection refused)
            return False

    def _answers(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(f"{self.dashboard_url}{path}", timeout=2) as r:
                return r.status == 200
        except Exception:  # noqa: BLE001 - not up yet
            return False

    def __enter__(self) -> "LocalRayHead":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self, grace_s: float = 30) -> None:
        if self.proc is None:
            return
        import psutil

        try:
            descendants = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # ray start --block: kills the processes it started
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        gone, alive = psutil.wait_procs(descendants, timeout=10)
        for p in alive:  # only processes this head started (recorded above), by PID
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        _, still = psutil.wait_procs(alive, timeout=10)
        self.leftover = sorted(p.pid for p in still)  # what not even SIGKILL stopped: the caller reports it
        self._log.close()
        self.proc = None
