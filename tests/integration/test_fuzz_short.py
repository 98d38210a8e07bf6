"""The short fuzzing run of CI: each target of ``fuzz/`` for a bounded number of inputs.

Each target runs as the fuzzers run it, in a subprocess: coverage-guided with atheris
(``-runs=N``, the seed corpus made by ``fuzz/make_seeds.py`` with opusenc/espeak-ng real files
included, the format dictionary) when atheris is installed, else the plain-Python mutation loop
over the same seeds. The run fails on any finding (a crash file is written and the process exits
non-zero). A few seconds per target; the long run is documented in ``fuzz/README.md``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.fuzzing import FUZZ_DIR, load

fuzzlib = load("_fuzzlib")

# Inputs per target: ~5 s each on a busy 2-core machine under atheris (seen there: ogg ~130-
# 300, opus ~70-100, wav ~350-500 inputs/s; each input is read 3 times: whole, split, and with a
# clean page or link appended; the Opus target decodes through libopus each time).
RUNS = {"ogg": 1200, "opus": 400, "wav": 2000}
# Fixed libFuzzer/plain seed: a CI failure reproduces with the same command.
SEED = 20261126
# Inputs up to 4 kB: the seeds (≤ 6 kB, cut) hold several pages; larger inputs only slow the run.
MAX_LEN = 4096


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed corpora, made by the documented command (real opusenc files included)."""
    out = tmp_path_factory.mktemp("fuzz-seeds")
    subprocess.run(
        [sys.executable, str(FUZZ_DIR / "make_seeds.py"), str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return out


def _run(target: str, corpus: Path, work: Path, runs: int, *, plain: bool) -> str:
    seeds = work / "corpus"
    shutil.copytree(corpus / target, seeds)  # atheris adds new inputs to it
    artifacts = work / "artifacts"
    artifacts.mkdir()
    command = [
        sys.executable,
        str(FUZZ_DIR / f"fuzz_{target}.py"),
        str(seeds),
        f"-runs={runs}",
        f"-seed={SEED}",
        f"-max_len={MAX_LEN}",
        f"-dict={FUZZ_DIR / 'formats.dict'}",
        f"-artifact_prefix={artifacts}/",
    ]
    if plain:
        command.append("--plain")
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=work)
    found = sorted(p.name for p in artifacts.iterdir())
    assert not found, (
        f"fuzz_{target} found failing inputs {found} (in {artifacts}):\n" + (result.stderr[-4000:])
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout + result.stderr


@pytest.mark.parametrize("target", sorted(RUNS))
def test_fuzz_target_runs_its_inputs_without_a_finding(
    target: str, corpus: Path, tmp_path: Path
) -> None:
    plain = not fuzzlib.atheris_available()
    output = _run(target, corpus, tmp_path, RUNS[target], plain=plain)
    if plain:
        stats = json.loads(output.strip().splitlines()[-1])
        assert stats["runs"] == RUNS[target]
    else:
        assert f"Done {RUNS[target]} runs" in output, output[-2000:]


@pytest.mark.parametrize("target", sorted(RUNS))
def test_plain_runner_runs_the_seeds_and_mutations_without_a_finding(
    target: str, corpus: Path, tmp_path: Path
) -> None:
    # The fallback used where atheris is missing must work too.
    output = _run(target, corpus, tmp_path, 300, plain=True)
    stats = json.loads(output.strip().splitlines()[-1])
    assert stats["mode"] == "plain"
    assert stats["runs"] == 300


def test_a_finding_fails_the_run_and_leaves_the_input(tmp_path: Path) -> None:
    # A check that rejects any input holding "OggS": the runner must write that input and fail.
    script = tmp_path / "fuzz_broken.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(FUZZ_DIR)!r})\n"
        "import _fuzzlib\n"
        "def check(data: bytes) -> None:\n"
        "    assert b'OggS' not in data, 'rejected'\n"
        "_fuzzlib.main(check, seeds=lambda: {'a': b'0123OggS'}, ogg=True)\n"
    )
    result = subprocess.run(
        [sys.executable, str(script), "-runs=10", f"-artifact_prefix={tmp_path}/", "--plain"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    (crash,) = tmp_path.glob("crash-*")
    assert crash.read_bytes() == b"0123OggS"
    assert "rejected" in result.stderr
