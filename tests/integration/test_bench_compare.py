"""The side-by-side benchmark runs end to end: server, private sink, a system's own process.

One short play (streamtts, PCM, fast loopback) through ``benchmarks/bench_compare.py``: the JSON
has every figure the docs use and the plots are written where asked. No figure's value is
checked (they depend on the machine's load); that the analysis is right is
``tests/unit/test_bench_compare_analysis.py``'s job.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FIGURES = {
    "first_byte_s", "first_sound_s", "oracle_start_s", "first_sound_minus_oracle_s",
    "underruns", "inserted_silence_ms", "truncated_ms", "cpu_per_audio_s", "peak_rss_mb",
    "buffer_level", "own_figures",
}


def test_bench_compare_plays_one_system_and_writes_its_figures_and_plots(
    pulse_server: None, tmp_path: Path
) -> None:
    out = tmp_path / "compare.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_compare.py"), "--systems",
         "streamtts_pcm", "--traces", "fast", "--jobs", "1", "--out", str(out), "--plots",
         str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    (run,) = doc["runs"]
    assert run["error"] is None
    assert set(run) >= FIGURES
    assert run["first_sound_s"] > 0
    assert run["audio_s"] == doc["references"]["pcm"]["audio_s"]
    # the player reports its own underruns beside the recording's count
    assert "player_underruns" in run["own_figures"]
    for name in ("compare_first_sound.png", "compare_underruns.png", "compare_buffer.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
