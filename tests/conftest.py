"""Test setup: 8 fake CPU devices, set before anything imports JAX."""

import atexit
import contextlib
import os
import shutil
import tempfile

# XLA's CPU backend compiles at LLVM -O1 in tests (unless XLA_FLAGS already sets a level): the
# suite is mostly compilation of tiny programs, and -O1 cuts its CPU time by 13-22% (golden and
# mask tests: 93 -> 73 CPU-s; train and ablate: 88 -> 77). The same programs run, and every
# bitwise test compares two runs under the same flags; the golden values were written at -O3
# and still match to their rtol 1e-5; the test of engine's own -O1 init compiles its reference
# at -O3 explicitly. `scaling` subprocesses inherit the flag through scaling_env().
_FLAGS = os.environ.get("XLA_FLAGS", "")
if "xla_backend_optimization_level" not in _FLAGS:
    _FLAGS += " --xla_backend_optimization_level=1"
os.environ["XLA_FLAGS"] = (_FLAGS + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The persistent compilation cache (scaling.compile_cache) of this test session: a fresh
# directory, shared with the `scaling` subprocesses the tests start, removed at exit.
_XLA_CACHE = tempfile.mkdtemp(prefix="scaling-test-xla-")
os.environ["SCALING_COMPILE_CACHE"] = _XLA_CACHE
atexit.register(shutil.rmtree, _XLA_CACHE, True)

import json  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """../shared/data beside the checkout; tests that need it skip cleanly when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent (reference data lives beside the checkout)")
    return SHARED_DATA


def tiny_grid(
    name: str, tokens: str = "[2e4, 4e4]", n_max: str = "2e4", count: int = 3, extra: str = ""
) -> str:
    """The TOML of a tiny N x D grid (sizes 3e3..n_max, batch 8 x 32 tokens, few-shot evals off)
    for sweep tests; `extra` adds tables (e.g. a real dataset for the engine)."""
    return f"""name = "{name}"
kind = "nxd"
[nxd]
tokens = {tokens}
[shapes]
n_min = 3e3
n_max = {n_max}
count = {count}
[hparams]
batch_size = 8
min_steps = 1
[base.model]
seq_len = 32
[base.eval]
enabled = false
{extra}"""


# A six-cell grid (2 budgets x 3 sizes) for the sweep tests with the fake trainer (sweeps.fake).
GRID6 = tiny_grid("six")
# The grid tables that make its cells train for real on the small embedded corpus.
# the smallest real training run (a few seconds on CPU): config overrides for `config.load("tiny")`
FAST_RUN = [
    "model.preset=cpu-3xs",
    "model.seq_len=32",
    "train.batch_size=16",
    "data.dataset=python_source/small",
    "data.val_tokens=2048",
    "data.task_mix=0.0",
    "eval.enabled=false",
]

SMALL_DATA = """[base.data]
dataset = "python_source/small"
val_tokens = 2048
task_mix = 0.0
"""


# ----------------------------------------------------------------------------- several processes
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def scaling_env(**extra: str) -> dict[str, str]:
    """Env for `scaling` subprocesses: this venv first on PATH, CPU, and XLA_FLAGS without the
    tests' 8 fake devices (the launcher or the caller says how many each process gets)."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env["XLA_FLAGS"] = " ".join(
        f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f
    )
    env["JAX_PLATFORMS"] = "cpu"
    env.update(extra)
    return env


def spawn(cmd: list[str], **env: str) -> subprocess.Popen:
    """Start `scaling_env(**env)`'s `cmd` in a process group of its own, output captured, so
    that `finish` can stop it together with every process it started."""
    return subprocess.Popen(
        cmd,
        env=scaling_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(p: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    """(exit code, stdout + stderr) of a `spawn`ed process. Past `timeout` s the test fails with
    the output so far, after killing the process group: a launcher's children (which hold its
    pipes open) would otherwise keep the worker waiting forever on a hung collective."""
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):  # it may have ended in between
            os.killpg(p.pid, signal.SIGKILL)
        try:
            out, err = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # a process outside the group holds the pipes
            out, err = "", "(no output: its pipes are still held open)"
        pytest.fail(f"still running after {timeout:g} s, killed: {p.args}\n{(out + err)[-3000:]}")
    return p.returncode, out + err


def assert_same_run(r1: dict, m1: list[dict], out: Path) -> None:
    """The multi-process run in `out` equals the 1 x 4 reference (r1, m1): loss curve and final
    loss to 1e-6, few-shot scores, and one metrics line per logged step (process 0 alone)."""
    r2 = json.loads((out / "result.json").read_text())
    m2 = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert r1["n_devices"] == r2["n_devices"] == 4
    assert r2["mesh"] == {"data": 2, "fsdp": 2, "tensor": 1}
    assert abs(r1["final_val_loss"] - r2["final_val_loss"]) < 1e-6
    assert [x["step"] for x in m2] == [x["step"] for x in m1]
    assert [x["train_loss"] for x in m2] == pytest.approx([x["train_loss"] for x in m1], abs=1e-6)
    s1, s2 = r1["evals"]["scores"], r2["evals"]["scores"]  # evals ran in every process
    assert set(s2) == set(s1) == {"copy", "add2"}
    for task in s1:
        for k in s1[task]:
            assert s2[task][k]["logprob"] == pytest.approx(s1[task][k]["logprob"], abs=1e-4)
            assert s2[task][k]["exact_match"] == s1[task][k]["exact_match"]


@pytest.fixture(scope="session")
def mp_reference(tmp_path_factory) -> dict:
    """result.json and metrics of `scaling train mp-check` on 1 process x 4 CPU devices (run
    once per session through the README command `scaling launch -n 1 --devices-per-process 4`);
    the multi-process runs (launcher, srun) must match it."""
    out = tmp_path_factory.mktemp("mp-1x4") / "run"
    cmd = ["scaling", "launch", "-n", "1", "--devices-per-process", "4", "--"]
    cmd += ["scaling", "train", "mp-check", "--out", str(out), "--no-progress"]
    rc, log = finish(spawn(cmd), timeout=900)
    assert rc == 0, log
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return {
        "result": json.loads((out / "result.json").read_text()),
        "metrics": [json.loads(x) for x in lines],
    }


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """SLURM_CONF of the running one-node cluster of scripts/slurm-local.sh (CI starts it in
    .ci/run); skips with the script's reason when there is none."""
    script = ROOT / "scripts" / "slurm-local.sh"
    p = subprocess.run([str(script), "status"], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        pytest.skip(f"no local SLURM cluster: {p.stdout.strip() or p.stderr.strip()}")
    conf = subprocess.run([str(script), "env"], capture_output=True, text=True).stdout
    return conf.strip().split("=", 1)[1]


# ----------------------------------------------------------------------------- parallel workers
# `make test` runs the suite on pytest-xdist workers with `--dist loadfile`: each test file runs
# on one worker, its tests in order. The SLURM tests share one cluster (one test's `scancel`
# or a full node would disturb another's), so they must all live in one file, run in turn;
# this hook enforces that. (`--dist loadgroup` with xdist_group marks would allow any layout,
# but xdist 3.8 cannot tag the node ids of pytest 9.2, so its groups are silently ignored.)
SLURM_FILE = "tests/sweeps/test_slurm.py"


def pytest_collection_modifyitems(config, items) -> None:
    stray = [
        i.nodeid
        for i in items
        if i.get_closest_marker("slurm") and i.nodeid.split("::")[0] != SLURM_FILE
    ]
    if stray:
        raise pytest.UsageError(
            f"tests marked slurm must live in {SLURM_FILE} (make test's workers run one file "
            f"in order, and the SLURM tests must not overlap): move {stray[0]}"
        )
