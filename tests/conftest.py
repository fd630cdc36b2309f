"""Shared fixtures: small real files made by the project's own generator."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

# under CI=true a skipped @pytest.mark.needs(kind) test fails the run (tests/skipguard.py)
from skipguard import pytest_configure, pytest_runtest_makereport  # noqa: F401

from pneumoflow.sources.synthetic import Case, generate, write_dicom

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]


def snakemake(workdir: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run snakemake from the repository (so profiles/default applies) in `workdir`."""
    cmd = [*SNAKEMAKE, "--directory", str(workdir), "--cores", "2", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def pytest_report_header(config) -> str:
    """Free space where the tests write: a full run peaks near 6 GB (VGG16 weights are 0.5 GB)."""
    where = Path(config.option.basetemp or tempfile.gettempdir())
    while not where.exists():  # an xdist worker's basetemp is made later
        where = where.parent
    return f"free disk at {where}: {shutil.disk_usage(where).free / 2**30:.1f} GiB"


# The modules whose tests use the session's tiny_run: under xdist they share one worker.
TINY_RUN_MODULES = ("test_mlflow_ui.py", "test_pipeline.py", "test_predict.py", "test_reliability.py")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`make test` runs on two pytest-xdist workers. Each test module goes whole to one worker,
    so that its module-scoped fixtures (a local Slurm, a staleness build) are built once, and
    the modules in TINY_RUN_MODULES all go to the same worker, which builds tiny_run once."""
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "tiny_run" if Path(module).name in TINY_RUN_MODULES else module

    return ByModule(config, log)


def pytest_collection_modifyitems(config, items) -> None:
    stray = {item.path.name for item in items if "tiny_run" in item.fixturenames} - set(TINY_RUN_MODULES)
    if stray:
        raise pytest.UsageError(
            f"{sorted(stray)} use tiny_run: add them to TINY_RUN_MODULES in tests/conftest.py"
        )


@pytest.fixture(autouse=True)
def _restore_mlflow_env():
    """mlflow.set_tracking_uri also sets MLFLOW_TRACKING_URI in os.environ: undo it after each
    test, or later snakemake runs would inherit a test's (maybe stopped) server."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    yield
    for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
        del os.environ[key]
    os.environ.update(saved)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """Working folder of one whole local run of the tiny config (tests may rerun it, not edit it)."""
    workdir = tmp_path_factory.mktemp("run")
    result = snakemake(workdir, "--configfile", str(TINY))
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """A 12-image synthetic RSNA sample of 256 px (read-only: copy before changing)."""
    out = tmp_path_factory.mktemp("sample")
    generate(out, n=12, seed=3, size=256)
    return out


@pytest.fixture
def make_dicom(tmp_path):
    """Write a DICOM of `pixels` to tmp_path/<patient_id>.dcm and return its path."""

    def make(pixels: np.ndarray, patient_id: str = "p1", *, jpeg: bool = False, **extra) -> Path:
        path = tmp_path / f"{patient_id}.dcm"
        write_dicom(path, pixels, Case(patient_id, "Normal"), jpeg=jpeg, **extra)
        return path

    return make


def gradient(rows: int = 64, cols: int = 48, dtype=np.uint8, high: int = 255) -> np.ndarray:
    """(rows, cols) image rising left to right from 0 to `high`."""
    ramp = np.linspace(0, high, cols)
    return np.tile(ramp, (rows, 1)).round().astype(dtype)


class RecordingRun:
    """Stands in for tracking.ModelRun without a store: records what a trainer logs."""

    run_id = None

    def __init__(self):
        self.logged: list[tuple[int | None, dict]] = []
        self.datasets: list[tuple[str, str]] = []  # (context, name) of each log_datasets call

    def log_metrics(self, metrics, step=None):
        self.logged.append((step, dict(metrics)))

    def log_datasets(self, context, name, digest, source):
        self.datasets.append((context, name))


def score_cli(submission: Path, labels: Path) -> subprocess.CompletedProcess:
    """Run `python -m pneumoflow score` as a user would."""
    cmd = [
        sys.executable,
        "-m",
        "pneumoflow",
        "score",
        "--submission",
        str(submission),
        "--labels",
        str(labels),
    ]
    return subprocess.run(cmd, capture_output=True, text=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 with an sqlite store; stop() and start() keep the port
    and the store, as a restarted server would."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> None:
        cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
               "--backend-store-uri", f"sqlite:///{self.root}/server.db",
               "--artifacts-destination", str(self.root / "artifacts"), "--workers", "1"]  # fmt: skip
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
        log = open(self.root / "server.log", "a")  # noqa: SIM115 (lives as long as the server)
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=log, env=env, start_new_session=True
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.5)
        self.stop()
        pytest.fail("mlflow server did not start:\n" + (self.root / "server.log").read_text()[-2000:])

    def stop(self) -> None:
        """Kill the server and its workers (its own process group) at once, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None


@pytest.fixture
def mlflow_server_factory(tmp_path_factory):
    """Start real MLflow servers; every one is stopped at the end of the test."""
    servers = []

    def start() -> MlflowServer:
        server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


class SquareUNet:
    """Stands in for the Keras U-Net: opacity 0.9 on columns 8-15 x rows 4-11 of a 32 px input."""

    input_shape = (None, 32, 32, 1)

    def predict(self, x, batch_size, verbose):
        out = np.zeros((len(x), 32, 32, 2), np.float32)
        out[:, 4:12, 8:16, 1] = 0.9
        return out
