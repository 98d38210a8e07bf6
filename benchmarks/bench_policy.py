"""Start/underrun policies on arrival traces, simulated (no device, deterministic); prints JSON.

For every trace of `traces.py` and every policy (adaptive, adaptive with a 150 ms floor,
low-latency, fixed prerolls of 0,
150 ms, 500 ms and 150 000 bytes of 24 kHz s16 WAV = 3.125 s), `streamtts.policy.simulate`
plays the trace on a 10 ms block clock (480 frames at 48 kHz). Compared with the oracle (the
earliest start with no underrun, knowing the whole trace): underruns, silence inserted, start
delay from the first packet's arrival, start delay relative to the oracle. Jittery links are
also run over many seeds (independent and smooth delays) to show distributions, not one draw.

Goals checked for the adaptive policy:
1. 0 underruns on every named trace at ≥ 1.05× real time whose jitter (largest relative delay
   of an arrival, see `traces.max_relative_delay`) is ≤ 200 ms;
2. 0 underruns at 0.8× with the duration hint;
3. start delay ≤ 1.3 × the oracle's + 40 ms;
4. on the fast link, start within two blocks of the first packet.

Chunk streams (a model emitting 0.2–1 s pieces at ≥ 1×, many seeds per generator) are also run
with a *warm* policy (after another source over the same link), next to the best any causal
policy could do (see `_chunk_distribution`).

Writes ``benchmarks/results/policy.json`` and ``benchmarks/results/policy_*.png``.
Run: ``.venv/bin/python benchmarks/bench_policy.py``.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from traces import Trace, all_traces, chunked_traces, jitter_traces, max_relative_delay

from streamtts.policy import SimulationResult, StartPolicy, oracle_start, simulate

BLOCK_S = 480 / 48000
RESULTS = Path(__file__).resolve().parent / "results"
SEEDS = 40  # draws per jitter distribution: enough for a stable median and 90th percentile
#: Draws per chunk-stream generator: the delay goal is met or missed per draw, so more draws
#: than for a median; 100 runs in a few seconds.
CHUNK_SEEDS = 100
#: The warm runs' first source is the same generator's seed + this (never a measured seed).
WARM_SEED_OFFSET = 1000

#: Chunk streams (a TTS model emitting pieces at ≥ 1×): the generator of ``rate1.2_bursts``,
#: and neighbours (slower, faster, longer chunks, pauses), keyword arguments of
#: `traces.chunked_traces`.
CHUNK_SETS: dict[str, dict[str, Any]] = {
    "chunks_1.2x_0.2-0.6s": {"rate": 1.2},
    "chunks_1.05x_0.2-0.6s": {"rate": 1.05},
    "chunks_1.5x_0.2-0.6s": {"rate": 1.5},
    "chunks_1.2x_0.3-1.0s": {"rate": 1.2, "chunk": (0.3, 1.0)},
    "chunks_1.2x_0.2-0.6s_pauses": {"rate": 1.2, "pause": (0.0, 0.1)},
}

#: 150 000 bytes of 24 kHz 16-bit mono WAV: the preroll of the script this project replaces.
WAV_150K_S = 150_000 / (24_000 * 2)

POLICIES: dict[str, Callable[[], StartPolicy]] = {
    "adaptive": lambda: StartPolicy.adaptive(block=BLOCK_S),
    "adaptive_min150ms": lambda: StartPolicy.adaptive(0.150, block=BLOCK_S),
    "low_latency": lambda: StartPolicy.low_latency(block=BLOCK_S),
    "fixed_0ms": lambda: StartPolicy.fixed(0.0),
    "fixed_150ms": lambda: StartPolicy.fixed(0.150),
    "fixed_500ms": lambda: StartPolicy.fixed(0.500),
    "fixed_wav150kB": lambda: StartPolicy.fixed(WAV_150K_S),
}


class _StartAt(StartPolicy):
    """Starts at a given time (the oracle's), for plotting the oracle's buffer level."""

    def __init__(self, at: float) -> None:
        super().__init__()
        self.at = at

    def should_start(self, now: float, buffered: float) -> bool:
        return now >= self.at - 1e-9


def _delay_goal(delay: float, oracle: float) -> bool:
    return delay <= 1.3 * oracle + 0.040 + 1e-9


def _run(
    trace: Trace, make: Callable[[], StartPolicy], *, record: bool = False
) -> SimulationResult:
    return simulate(
        make(), trace.arrivals, BLOCK_S, expected_duration=trace.expected_duration, record=record
    )


def _row(trace: Trace) -> dict[str, Any]:
    first = trace.arrivals[0][0]
    oracle = oracle_start(trace.arrivals, BLOCK_S) - first
    results: dict[str, Any] = {}
    for name, make in POLICIES.items():
        res = _run(trace, make)
        assert res.start_delay is not None
        results[name] = {
            "underruns": res.underruns,
            "silence_ms": round(1000 * res.silence, 1),
            "start_delay_ms": round(1000 * res.start_delay, 1),
            "vs_oracle_ms": round(1000 * (res.start_delay - oracle), 1),
            "vs_oracle_ratio": round(res.start_delay / oracle, 2) if oracle > 0 else None,
            "delay_goal_met": _delay_goal(res.start_delay, oracle),
        }
    return {
        "trace": trace.name,
        "description": trace.description,
        "rate": round(trace.rate, 3),
        "jitter_ms": round(1000 * max_relative_delay(trace.arrivals, trace.rate), 1),
        "duration_s": round(trace.total, 3),
        "hint_s": trace.expected_duration,
        "oracle_delay_ms": round(1000 * oracle, 1),
        "policies": results,
    }


def _distribution(traces: list[Trace]) -> dict[str, Any]:
    out: dict[str, Any] = {"traces": len(traces), "description": traces[0].description}
    oracles = [oracle_start(t.arrivals, BLOCK_S) - t.arrivals[0][0] for t in traces]
    out["oracle_delay_ms"] = _quantiles(oracles)
    for name in ("adaptive", "adaptive_min150ms", "low_latency", "fixed_150ms", "fixed_500ms"):
        runs = [_run(t, POLICIES[name]) for t in traces]
        delays = [r.start_delay or 0.0 for r in runs]
        out[name] = {
            "traces_with_underrun": sum(r.underruns > 0 for r in runs),
            "underruns": sum(r.underruns for r in runs),
            "silence_ms_total": round(1000 * sum(r.silence for r in runs), 1),
            "start_delay_ms": _quantiles(delays),
            "delay_goal_met": sum(_delay_goal(d, o) for d, o in zip(delays, oracles, strict=True)),
        }
    return out


def _chunk_distribution(spec: dict[str, Any]) -> dict[str, Any]:
    """Chunk streams: the adaptive policy fresh and warm, and what any causal policy could do.

    *Warm*: the policy first plays another draw of the same generator (a conversation's
    earlier sentence over the same link), so it starts with that link's priors.

    The two *reachable* counts bound every policy that never underruns on a continuation the
    generator could produce after what it has seen. Until the second chunk arrives, a draw of
    the same generator at 0.9× is indistinguishable (same first chunk, same time), and on it
    starting on the first chunk underruns: such a policy cannot start before the second
    chunk (``goal_reachable_without_betting_on_the_rate``). Knowing that the link is ≥ 1× and
    the longest gap the generator makes (``chunk[1] / rate + pause[1]``), it can start on the first
    chunk of ``b`` seconds ``gap - b`` (block-rounded) after it
    (``goal_reachable_knowing_rate_and_longest_gap``; both counts assume an immediate start
    at the second chunk is safe, so they are upper bounds).
    """
    traces = chunked_traces(CHUNK_SEEDS, **spec)
    warmups = chunked_traces(CHUNK_SEEDS, first_seed=WARM_SEED_OFFSET, **spec)
    longest_gap = spec.get("chunk", (0.2, 0.6))[1] / spec["rate"] + spec.get("pause", (0, 0))[1]
    oracles: list[float] = []
    reach_blind = reach_knowing = 0
    for trace in traces:
        first = trace.arrivals[0][0]
        first_audio = sum(d for t, d in trace.arrivals if t == first)
        second = min(t for t, _ in trace.arrivals if t > first) - first
        oracle = oracle_start(trace.arrivals, BLOCK_S) - first
        oracles.append(oracle)
        blocks = math.floor(first_audio / BLOCK_S + 1e-9)
        ahead = math.ceil(max(0.0, longest_gap - blocks * BLOCK_S) / BLOCK_S - 1e-9) * BLOCK_S
        reach_blind += _delay_goal(max(oracle, second), oracle)
        reach_knowing += _delay_goal(max(oracle, min(ahead, second)), oracle)
    out: dict[str, Any] = {
        "traces": len(traces),
        "description": traces[0].description,
        "oracle_delay_ms": _quantiles(oracles),
        "goal_reachable_without_betting_on_the_rate": reach_blind,
        "goal_reachable_knowing_rate_and_longest_gap": reach_knowing,
    }
    for mode in ("fresh", "warm"):
        runs = []
        for trace, warmup in zip(traces, warmups, strict=True):
            policy = StartPolicy.adaptive(block=BLOCK_S)
            if mode == "warm":
                simulate(policy, warmup.arrivals, BLOCK_S)
            runs.append(simulate(policy, trace.arrivals, BLOCK_S))
        delays = [r.start_delay or 0.0 for r in runs]
        out[f"adaptive_{mode}"] = {
            "traces_with_underrun": sum(r.underruns > 0 for r in runs),
            "underruns": sum(r.underruns for r in runs),
            "start_delay_ms": _quantiles(delays),
            "delay_goal_met": sum(_delay_goal(d, o) for d, o in zip(delays, oracles, strict=True)),
        }
    return out


def _quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {
        "median": round(1000 * statistics.median(ordered), 1),
        "p90": round(1000 * p90, 1),
        "max": round(1000 * ordered[-1], 1),
    }


def _goals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def adaptive(row: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = row["policies"]["adaptive"]
        return result

    g1 = [r for r in rows if r["rate"] >= 1.05 and r["jitter_ms"] <= 200.0]
    g2 = [r for r in rows if r["trace"] == "rate0.8_hint"]
    fast = [r for r in rows if r["trace"] == "fast_loopback"]
    return {
        "zero_underruns_at_1.05x_jitter_le_200ms": {
            "traces": [r["trace"] for r in g1],
            "met": all(adaptive(r)["underruns"] == 0 for r in g1),
        },
        "zero_underruns_at_0.8x_with_hint": {"met": all(adaptive(r)["underruns"] == 0 for r in g2)},
        "start_delay_le_1.3x_oracle_plus_40ms": {
            "met": [r["trace"] for r in rows if adaptive(r)["delay_goal_met"]],
            "missed": [r["trace"] for r in rows if not adaptive(r)["delay_goal_met"]],
        },
        "fast_link_start_within_2_blocks": {
            "start_delay_ms": [adaptive(r)["start_delay_ms"] for r in fast],
            "met": all(adaptive(r)["start_delay_ms"] <= 2 * 1000 * BLOCK_S + 1e-6 for r in fast),
        },
    }


def _scatter(sets: dict[str, list[Trace]]) -> str:
    """Start delay vs the oracle's for every seed of the jitter sets (goal line drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 4.2), sharey=True)
    for ax, (label, traces) in zip(axes, sets.items(), strict=True):
        oracles = [1000 * (oracle_start(t.arrivals, BLOCK_S) - t.arrivals[0][0]) for t in traces]
        for name, marker in (("adaptive", "o"), ("fixed_150ms", "s")):
            runs = [_run(t, POLICIES[name]) for t in traces]
            delays = [1000 * (r.start_delay or 0.0) for r in runs]
            ax.scatter(oracles, delays, marker=marker, s=16, alpha=0.7, label=name)
            bad = [(o, d) for o, d, r in zip(oracles, delays, runs, strict=True) if r.underruns]
            if bad:
                ax.scatter(*zip(*bad, strict=True), marker="x", color="red", s=40)
        top = max(oracles) * 1.3 + 40
        ax.plot([0, max(oracles)], [40, top], color="black", linewidth=0.8, label="1.3×oracle+40")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("oracle start delay (ms)")
    axes[0].set_ylabel("start delay (ms); red x: underrun")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path = RESULTS / "policy_jitter_scatter.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path)


def _plots(traces: list[Trace], rows: list[dict[str, Any]]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[str] = []
    by_name = {t.name: t for t in traces}
    shown = ["rate1.05_jitter200ms", "rate0.8_hint", "stall500ms", "openai_ogg_pages"]
    fig, axes = plt.subplots(len(shown), 1, figsize=(10, 3.2 * len(shown)))
    for ax, name in zip(axes, shown, strict=True):
        trace = by_name[name]
        first = trace.arrivals[0][0]
        oracle = oracle_start(trace.arrivals, BLOCK_S)
        curves: dict[str, Callable[[], StartPolicy]] = {
            "oracle": lambda oracle=oracle: _StartAt(oracle),  # type: ignore[misc]
            "adaptive": POLICIES["adaptive"],
            "fixed_150ms": POLICIES["fixed_150ms"],
            "fixed_500ms": POLICIES["fixed_500ms"],
            "fixed_wav150kB": POLICIES["fixed_wav150kB"],
        }
        for label, make in curves.items():
            res = _run(trace, make, record=True)
            times = [t - first for t, _, _ in res.buffer_trace]
            levels = [b for _, b, _ in res.buffer_trace]
            style = {"linestyle": "--", "color": "black"} if label == "oracle" else {}
            ax.plot(times, levels, label=f"{label} ({res.underruns} underruns)", **style)
            if res.start_time is not None:
                ax.axvline(res.start_time - first, color=ax.lines[-1].get_color(), alpha=0.3)
        ax.set_title(f"{name}: {trace.description}", fontsize=9)
        ax.set_xlabel("seconds since the first packet")
        ax.set_ylabel("buffered (s)")
        ax.set_xlim(-0.2, min(trace.arrivals[-1][0] - first + 2.0, 8.0))
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path = RESULTS / "policy_buffer.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    written.append(str(path))

    fig, ax = plt.subplots(figsize=(12, 4.5))
    names = [r["trace"] for r in rows]
    shown_policies = ["adaptive", "fixed_150ms", "fixed_500ms", "fixed_wav150kB"]
    width = 0.8 / (len(shown_policies) + 1)
    for i, policy in enumerate(["oracle", *shown_policies]):
        values = [
            max(
                1.0,
                r["oracle_delay_ms"]
                if policy == "oracle"
                else r["policies"][policy]["start_delay_ms"],
            )
            for r in rows
        ]
        xs = [k + (i - len(shown_policies) / 2) * width for k in range(len(rows))]
        bars = ax.bar(
            xs, values, width, label=policy, color="black" if policy == "oracle" else None
        )
        if policy != "oracle":
            for bar, row in zip(bars, rows, strict=True):
                if row["policies"][policy]["underruns"]:
                    ax.annotate(
                        str(row["policies"][policy]["underruns"]),
                        (bar.get_x() + width / 2, bar.get_height()),
                        ha="center",
                        va="bottom",
                        fontsize=6,
                        color="red",
                    )
    ax.set_yscale("log")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("start delay after first packet (ms, log; ≥1)")
    ax.set_title("Start delay per trace (red numbers: underruns)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = RESULTS / "policy_start_delay.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    written.append(str(path))
    return written


def _call_cost() -> dict[str, float]:
    """Microseconds per call with a full history (the player calls these from the event loop)."""
    import time

    policy = StartPolicy.adaptive(block=BLOCK_S)
    policy.reset(0.0)
    now = 0.0
    for _ in range(2000):
        now += 0.019
        policy.on_audio(now, 0.020)
    calls = 2000
    began = time.perf_counter()
    for _ in range(calls):
        now += 0.019
        policy.on_audio(now, 0.020)
        policy.should_start(now + 0.001, 0.0105)
    fresh = (time.perf_counter() - began) / calls
    began = time.perf_counter()
    for k in range(calls):
        policy.should_start(now + 0.001 + k * 1e-5, 0.0105)
    cached = (time.perf_counter() - began) / calls
    return {
        "on_audio_then_should_start_us": round(1e6 * fresh, 1),
        "should_start_no_new_audio_us": round(1e6 * cached, 1),
    }


def main() -> None:
    traces = all_traces()
    rows = [_row(t) for t in traces]
    sets = {
        "iid_1.05x_200ms": jitter_traces(SEEDS, rate=1.05, jitter=0.2),
        "iid_1.2x_200ms": jitter_traces(SEEDS, rate=1.2, jitter=0.2),
        "iid_1.05x_100ms": jitter_traces(SEEDS, rate=1.05, jitter=0.1),
        "smooth_1.05x_200ms": jitter_traces(SEEDS, rate=1.05, jitter=0.2, smooth=True),
    }
    distributions = {label: _distribution(t) for label, t in sets.items()}
    chunks = {label: _chunk_distribution(spec) for label, spec in CHUNK_SETS.items()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    scattered = {**sets, "chunks_1.2x_0.2-0.6s": chunked_traces(SEEDS)}
    plots = [*_plots(traces, rows), _scatter(scattered)]
    doc = {
        "benchmark": "policy",
        "block_ms": 1000 * BLOCK_S,
        "goals": _goals(rows),
        "traces": rows,
        "jitter_distributions": distributions,
        "chunk_streams": chunks,
        "call_cost": _call_cost(),
        "plots": plots,
    }
    (RESULTS / "policy.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
