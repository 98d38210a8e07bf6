"""Resampler speed (× real time) and measured filter response; prints JSON.

Speed: 20 s of noise through `Resampler` in blocks of 480 frames (a 20 ms player block), 4096
frames (a network read) and in one call, best of 3 runs each. Quality: pass-band deviation up to
0.9 × the lower Nyquist frequency and worst stop-band level, measured with test tones.

Run: ``.venv/bin/python benchmarks/bench_resample.py [--plot benchmarks/results/resample.png]``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from streamtts.resample import Resampler

RATIOS = [(22050, 48000), (22050, 24000), (24000, 48000), (48000, 44100), (16000, 48000)]
SECONDS = 20.0
REPEATS = 3  # best of: the machine is shared, the minimum is the least disturbed run


def speed(rate_in: int, rate_out: int, channels: int, block: int | None) -> float:
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.5, 0.5, (int(SECONDS * rate_in), channels)).astype(np.float32)
    best = float("inf")
    for _ in range(REPEATS):
        resampler = Resampler(rate_in, rate_out, channels)
        start = time.perf_counter()
        if block is None:
            resampler.process(x)
        else:
            for i in range(0, len(x), block):
                resampler.process(x[i : i + block])
        resampler.flush()
        best = min(best, time.perf_counter() - start)
    return SECONDS / best


def level_db(y: np.ndarray, freq: float, rate: int) -> float:
    """Level of the tone ``freq`` (least-squares fit) plus everything else, in dB re 1."""
    start, stop = len(y) // 4, 3 * len(y) // 4
    t = np.arange(start, stop) / rate
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    middle = y[start:stop, 0].astype(np.float64)
    coef, *_ = np.linalg.lstsq(basis, middle, rcond=None)
    rest = np.sqrt(2 * np.mean((middle - basis @ coef) ** 2))
    return float(20 * np.log10(np.hypot(*coef) + rest + 1e-20))


def response(rate_in: int, rate_out: int, points: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Output level (dB) of unit tones across the input band."""
    freqs = np.linspace(0.01, 0.99, points) * rate_in / 2
    levels = []
    for freq in freqs:
        x = np.sin(2 * np.pi * freq * np.arange(rate_in // 4) / rate_in)[:, None]
        resampler = Resampler(rate_in, rate_out, 1)
        y = np.concatenate([resampler.process(x), resampler.flush()])
        levels.append(level_db(y, freq, rate_out))
    return freqs, np.array(levels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--plot", help="write the magnitude responses to this PNG")
    args = parser.parse_args()
    results = []
    curves = {}
    for rate_in, rate_out in RATIOS:
        nyquist = min(rate_in, rate_out) / 2
        freqs, levels = response(rate_in, rate_out)
        curves[f"{rate_in}->{rate_out}"] = (freqs, levels)
        passband = levels[freqs <= 0.9 * nyquist]
        stop = levels[freqs >= nyquist]
        results.append(
            {
                "rate_in": rate_in,
                "rate_out": rate_out,
                "ratio": "{}/{}".format(*Resampler(rate_in, rate_out, 1).ratio),
                "taps_per_output": Resampler(rate_in, rate_out, 1).taps,
                "x_realtime_mono_block480": round(speed(rate_in, rate_out, 1, 480)),
                "x_realtime_mono_block4096": round(speed(rate_in, rate_out, 1, 4096)),
                "x_realtime_mono_one_call": round(speed(rate_in, rate_out, 1, None)),
                "x_realtime_stereo_block4096": round(speed(rate_in, rate_out, 2, 4096)),
                "passband_max_deviation_db": round(float(np.max(np.abs(passband))), 5),
                "stopband_max_level_db": round(float(stop.max()), 1) if stop.size else None,
            }
        )
    print(json.dumps(results, indent=2))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4.5))
        for name, (freqs, levels) in curves.items():
            ax.plot(freqs, np.maximum(levels, -160), label=name)
        ax.set(xlabel="input tone (Hz)", ylabel="output level (dB)", ylim=(-160, 5))
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=100)


if __name__ == "__main__":
    main()
