"""One running local NDIF: redis, an S3-compatible store (moto), a Ray head, the NDIF controller and API, all
on 127.0.0.1 with free ports chosen at start, serving models from local folders on the CPU.

Every process is started with the environment variable :data:`RUN_ID_VAR` set to this instance's id, so
:meth:`LocalNdif.stop` finds and ends every descendant (Ray's workers included) by that mark, never by name;
it then checks that no process and no port is left. State (ports, pids, models) is kept in
``<run_dir>/state.json`` so ``python -m esr_analysis.tracing.ndif_local down`` can stop an instance started
by another process; logs stay in ``<run_dir>/logs`` for failures.

The four points where ndif 0.1.2 does not run out of the box on a CPU machine, and what this does about them
(facts in ``docs/remote.md``): Ray is started with one nominal GPU and the custom resources the controller
schedules on; the model actor is :class:`esr_ndif_server.CpuModelActor` (``server/``); the models are
pre-deployed; the client passes its tokenizer explicitly.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from esr_analysis.files import atomic_write_json
from esr_analysis.paths import cache_dir
from esr_analysis.tracing.ndif_local.env import NdifUnavailable, build_venv, why_unavailable
from esr_analysis.tracing.ndif_local.ray_logs import keep_ray_logs, ray_log_errors

RUN_ID_VAR = "ESR_NDIF_RUN_ID"
LEDGER_VAR = "ESR_NDIF_LEDGER"
"""While this names a folder, every started instance records its state there (the ledger of ``check.py``)."""


def record(state: dict) -> None:
    """Copy an instance's state (``LocalNdif.save_state``'s dict) into the ledger, when one is set."""
    ledger = os.environ.get(LEDGER_VAR)
    if ledger:
        atomic_write_json(Path(ledger) / f"{state['run_id']}.json", state)

ACTOR_IMPORT_PATH = "esr_ndif_server.CpuModelActor"
"""``NDIF_MODEL_IMPORT_PATH`` of the local server: the Ray actor class (``ray.remote``) of the CPU model actor in
``server/esr_ndif_server.py``; ndif's controller calls ``.options(...)`` on it to create each replica."""
SERVER_DIR = Path(__file__).resolve().parent / "server"
PORT_NAMES = ("redis", "store", "gcs", "client", "dashboard", "api", "object_manager", "node_manager",
              "metrics", "agent_grpc", "agent_http", "runtime_env_agent")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def stack_run_dir() -> Path:
    """Where ``ndif-up`` keeps the state and logs of the machine's default instance."""
    return cache_dir() / "ndif-run"


def marked_pids(run_id: str) -> list[int]:
    """PIDs of this user's processes whose environment carries ``RUN_ID_VAR=run_id``."""
    mark = f"{RUN_ID_VAR}={run_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if mark in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@dataclass
class LocalNdif:
    """A local NDIF instance (see the module docstring). ``models`` maps a name to a local HF folder."""

    run_dir: Path
    models: dict[str, str]
    run_id: str = field(default_factory=lambda: secrets.token_hex(6))
    ports: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    starts: dict[str, int | None] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """The API address a client points ``nnsight.CONFIG.API.HOST`` at."""
        return f"http://127.0.0.1:{self.ports['api']}"

    @property
    def logs(self) -> Path:
        return self.run_dir / "logs"

    @property
    def ray_temp(self) -> Path:
        """Ray's temp folder (sessions, sockets, logs); short, as Ray's socket paths must stay < 108 bytes."""
        return Path("/tmp") / f"esr-ndif-{self.run_id}"

    # -- state ----------------------------------------------------------------------------------------
    def save_state(self) -> None:
        data = asdict(self)
        data["run_dir"] = str(self.run_dir)
        atomic_write_json(self.run_dir / "state.json", data)
        record(data)  # the ledger of `make test`'s ndif step, when one is set (check.py)

    @classmethod
    def from_state(cls, run_dir: Path) -> LocalNdif | None:
        """The instance recorded in ``run_dir``, or ``None`` when none is."""
        path = Path(run_dir) / "state.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        data["run_dir"] = Path(data["run_dir"])
        return cls(**data)

    # -- start ----------------------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        p = self.ports
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "RAY_"))}
        env.update({
            RUN_ID_VAR: self.run_id,
            "PYTHONPATH": str(SERVER_DIR),  # only the actor module; esr_analysis is not importable there
            "NDIF_HOME": str(self.run_dir),
            "NDIF_REDIS_URL": f"redis://127.0.0.1:{p['redis']}",
            "NDIF_OBJECT_STORE_URL": f"http://127.0.0.1:{p['store']}",
            "NDIF_OBJECT_STORE_ACCESS_KEY": "esr-local",
            "NDIF_OBJECT_STORE_SECRET_KEY": "esr-local-secret",
            "NDIF_RAY_ADDRESS": f"ray://127.0.0.1:{p['client']}",
            "NDIF_RAY_HEAD_PORT": str(p["gcs"]),
            "NDIF_RAY_DASHBOARD_PORT": str(p["dashboard"]),
            "NDIF_API_URL": self.url,
            "NDIF_API_PORT": str(p["api"]),
            "NDIF_MODEL_IMPORT_PATH": ACTOR_IMPORT_PATH,
            "NDIF_SANDBOX_POOL_SIZE": "1",  # warm runners per model for untrusted requests (ndif's default: 7)
            "NDIF_DEFAULT_DTYPE": "float32",
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "GRPC_ENABLE_FORK_SUPPORT": "0",
            "RAY_raylet_start_wait_time_s": "600",
            "RAY_agent_register_timeout_ms": "600000",
            "RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S": "300",  # Ray client proxy: 30 s is missed under load
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "2",
            "AWS_ACCESS_KEY_ID": "esr-local",
            "AWS_SECRET_ACCESS_KEY": "esr-local-secret",
        })
        return env

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=self.run_dir)
        log.close()
        self.pids[name] = proc.pid
        self.starts[name] = _start_time(proc.pid)
        self.save_state()
        return proc

    def _wait_port(self, name: str, port: int, proc: subprocess.Popen | None, timeout: float) -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if port_open(port):
                return
            if proc is not None and proc.poll() is not None:
                break
            time.sleep(0.5)
        raise RuntimeError(f"local NDIF: {name} did not come up on port {port} in {timeout:.0f} s; "
                           f"see {self.logs / (name + '.log')}:\n{self.tail(name)}")

    def _raylet_aborted(self) -> bool:
        """Whether this instance's raylet died on a failed check (it then never registers)."""
        return any("Check failed" in f.read_text(errors="replace")
                   for f in self.ray_temp.glob("session_*/logs/raylet.out"))

    def _wait_log(self, name: str, line: str, proc: subprocess.Popen, timeout: float) -> None:
        t0, path = time.monotonic(), self.logs / f"{name}.log"
        while time.monotonic() - t0 < timeout:
            if line in path.read_text(errors="replace"):
                return
            if proc.poll() is not None or self._raylet_aborted():
                break
            time.sleep(0.5)
        why = "its raylet aborted" if self._raylet_aborted() else f"no {line!r}"
        raise RuntimeError(f"local NDIF: {name} did not start ({why} after {time.monotonic() - t0:.0f} s):\n"
                           f"{self.tail(name)}")

    def tail(self, name: str, n: int = 30) -> str:
        """The last ``n`` lines of a service's log."""
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else "(no log)"

    def start(self, *, attempts: int = 2) -> LocalNdif:
        """Start every service and deploy the models; on any failure stop what was started and raise. A Ray
        node that does not come up is retried (``attempts`` in all)."""
        reason = why_unavailable()
        if reason:
            raise NdifUnavailable(reason)
        py = str(build_venv())
        if not self.models:
            raise ValueError("a local NDIF needs at least one model folder to serve")
        for name, folder in self.models.items():
            if not (Path(folder) / "config.json").exists():
                raise ValueError(f"model {name!r}: {folder} is not a Hugging Face model folder (no config.json)")
        shutil.rmtree(self.logs, ignore_errors=True)  # this start's logs only
        self.logs.mkdir(parents=True, exist_ok=True)
        self.ports = {}
        for name in PORT_NAMES:  # distinct free ports
            port = free_port()
            while port in self.ports.values():
                port = free_port()
            self.ports[name] = port
        self.save_state()
        self._arm_stop_at_exit()  # an interrupted run still ends what it started
        for attempt in range(1, attempts + 1):  # on a loaded machine Ray's node can miss its start-up windows
            try:
                self._start_services(py)
                return self
            except RuntimeError as exc:
                self.stop()
                if attempt == attempts or "did not start" not in str(exc):
                    raise
                self.pids, self.starts = {}, {}
            except BaseException:
                self.stop()
                raise
        return self

    def _arm_stop_at_exit(self) -> None:
        atexit.register(self._stop_at_exit)

    def detach(self) -> None:
        """Let a started stack outlive this process (``ndif-up``): it is no longer stopped at exit, only by
        :meth:`stop` (``ndif-down``, from the state file)."""
        atexit.unregister(self._stop_at_exit)

    def _stop_at_exit(self) -> None:
        if self.alive():
            with contextlib.suppress(Exception):
                self.stop()

    def _start_services(self, py: str) -> None:
        env, p = self._env(), self.ports
        redis = self._spawn("redis", ["redis-server", "--port", str(p["redis"]), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--daemonize", "no"], env)
        store = self._spawn("store", [py, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(p["store"])], env)
        self._wait_port("redis", p["redis"], redis, 30)
        self._wait_port("store", p["store"], store, 60)
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        resources = json.dumps({"head": 10, "cuda_memory_bytes": 32 * 2**30, "cpu_memory_bytes": total})
        temp = self.ray_temp
        ray = self._spawn("ray", [
            py, str(SERVER_DIR / "esr_ndif_server.py"), "ray-start", "--head", "--block", "--node-ip-address=127.0.0.1",
            f"--port={p['gcs']}", f"--ray-client-server-port={p['client']}", "--num-gpus=1", "--num-cpus=4",
            f"--resources={resources}", "--object-store-memory=200000000", "--include-dashboard=true",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={p['dashboard']}",
            f"--object-manager-port={p['object_manager']}", f"--node-manager-port={p['node_manager']}",
            f"--metrics-export-port={p['metrics']}", f"--dashboard-agent-grpc-port={p['agent_grpc']}",
            f"--dashboard-agent-listen-port={p['agent_http']}", f"--runtime-env-agent-port={p['runtime_env_agent']}",
            f"--temp-dir={temp}", "--disable-usage-stats",
            '--system-config={"agent_register_timeout_ms": 600000, "raylet_start_wait_time_s": 600}'], env)
        self._wait_log("ray", "Ray runtime started", ray, 300)
        self._wait_port("ray", p["client"], ray, 120)
        self._wait_port("ray", p["dashboard"], ray, 120)
        ctl_env = dict(env, RAY_ADDRESS=f"127.0.0.1:{p['gcs']}")
        ctl = self._spawn("controller", [py, "-m", "ndif.services.ray.deployments.controller.controller"], ctl_env)
        if ctl.wait(timeout=240) != 0:
            raise RuntimeError(f"local NDIF: the controller failed to launch:\n{self.tail('controller')}")
        # ndif's gunicorn API, started through esr_ndif_api.py: it loads anyio's backend before nnsight, without
        # which every request blob over 1 MiB fails with HTTP 400 (the module's docstring says why)
        api = self._spawn("api", [py, str(SERVER_DIR / "esr_ndif_api.py"),
                                  "--config", "python:ndif.services.api.gunicorn_conf",
                                  "--bind", f"127.0.0.1:{p['api']}", "--workers", "1",
                                  "ndif.services.api.app:app"], env)
        self._wait_port("api", p["api"], api, 180)
        specs = [{"checkpoint": folder, "model_key": model_key(folder), "task": "text-generation",
                  "size_bytes": _folder_bytes(Path(folder)), "dtype": "float32", "pinned": True, "trusted": True}
                 for folder in self.models.values()]
        deploy = self._spawn("deploy", [py, str(SERVER_DIR / "esr_ndif_server.py"), "deploy", json.dumps(specs),
                                        "600"], env)
        if deploy.wait(timeout=660) != 0:
            raise RuntimeError(f"local NDIF: deploying the models failed:\n{self.tail('deploy')}\n"
                               f"--- errors in Ray's worker logs (the controller's and the model actors') ---\n"
                               f"{ray_log_errors(self.ray_temp)}")
        self._wait_ping(60)

    def _wait_ping(self, timeout: float) -> None:
        t0 = time.monotonic()
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=5) as r:  # noqa: S310 - loopback
                    if r.status == 200:
                        return
            except OSError:
                if time.monotonic() - t0 > timeout:
                    raise RuntimeError(f"local NDIF: the API does not answer /ping:\n{self.tail('api')}") from None
            time.sleep(1.0)

    # -- stop -----------------------------------------------------------------------------------------
    def alive(self) -> list[int]:
        """PIDs of this instance's processes still running: those with its mark, and the services it started
        (redis rewrites its environment block for its process title, so the mark alone misses it)."""
        recorded = [pid for name, pid in self.pids.items()
                    if self.starts.get(name) is not None and _start_time(pid) == self.starts[name]]
        return sorted(set(marked_pids(self.run_id)) | set(recorded))

    def runner_pids(self) -> list[int]:
        """PIDs of this instance's sandbox runners: the warm pool, and the one an untrusted request is using."""
        found = []
        for pid in marked_pids(self.run_id):
            with contextlib.suppress(OSError):
                if b"ndif.services.ray.sandbox.runner" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
        return sorted(found)

    def open_ports(self) -> list[int]:
        """This instance's ports that something still listens on."""
        return [port for port in self.ports.values() if port_open(port)]

    def stop(self, timeout: float = 30.0) -> None:
        """End every process of this instance (SIGTERM, then SIGKILL) and check none and no port is left.
        Raises ``RuntimeError`` naming what survived."""
        marked = set(self.alive())
        for pid in self.pids.values():  # each service leads its own process group
            if pid in marked:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGTERM)
        t0 = time.monotonic()
        while self.alive() and time.monotonic() - t0 < timeout / 2:
            time.sleep(0.5)
        for pid in self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        while (self.alive() or self.open_ports()) and time.monotonic() - t0 < timeout:
            time.sleep(0.5)
        for pid in self.pids.values():  # reap our direct children
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        keep_ray_logs(self.ray_temp, self.logs / "ray")
        shutil.rmtree(self.ray_temp, ignore_errors=True)
        left, ports = self.alive(), self.open_ports()
        state = self.run_dir / "state.json"
        if state.exists():
            state.unlink()
        if left or ports:
            raise RuntimeError(f"local NDIF: after stop, processes {left} and ports {ports} are left")


def _start_time(pid: int) -> int | None:
    """The start time (clock ticks since boot) of a live, non-zombie process; ``None`` when there is none."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[19])


def model_key(folder: str) -> str:
    """The NDIF model key of a model served from a local folder (the client's meta model has the same key)."""
    return ("nnsight.modeling.transformers.TransformersModel:"
            + json.dumps({"repo_id": str(folder), "revision": None, "task": "text-generation"}))


def _folder_bytes(folder: Path) -> int:
    return int(sum(f.stat().st_size for f in folder.iterdir() if f.suffix in {".safetensors", ".bin"}))
