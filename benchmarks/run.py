"""Run every benchmark in one process and print (and optionally write) the table of ratios.

    .venv/bin/python -m benchmarks.run [--quick] [--out benchmarks/results.md]

See ``benchmarks/README.md`` for what each row measures.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks import architectures, capture, confinement, launcher, memory, similarity, tools, transition
from benchmarks.context import Context
from benchmarks.report import Row, device_lines, load_average, render
from benchmarks.sizes import PRESETS
from worker.engine.allocator import keep_freed_memory

SECTIONS: dict[str, tuple[str, Callable[[Context], list[Row]]]] = {
    "1": ("capture overhead", capture.run),
    "2": ("against TorchLens, Captum and forward hooks", tools.run),
    "3": ("pattern similarity", similarity.run),
    "4": ("transition density", transition.run),
    "5": ("memory growth", memory.run),
    "7": ("confinement start-up", confinement.run),
    "8": ("warm launcher: zygote vs forkserver", launcher.run),
    "9": ("real architectures (torchvision, transformers)", architectures.run),
}
SERVICE_ROW = Row(
    "6",
    "service: see benchmarks/service.py (end-to-end job vs analyze alone; status polling with 100 "
    "concurrent clients), results in benchmarks/results_service.md",
    None,
    "not part of this run",
)
README = Path(__file__).resolve().parent / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, about a minute")
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), help="sizes by name (full is the default; smoke: seconds)"
    )
    parser.add_argument("--out", type=Path, help="also write the markdown here (e.g. benchmarks/results.md)")
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help="comma-separated section numbers (default: all)"
    )
    parser.add_argument(
        "--update-readme", action="store_true", help="replace the results table in benchmarks/README.md"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    preset = args.preset or ("quick" if args.quick else "full")
    sizes = PRESETS[preset]
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        print(f"unknown sections {unknown}; expected some of {sorted(SECTIONS)}", file=sys.stderr)
        return 2
    started, load_before = time.perf_counter(), load_average()
    kept = keep_freed_memory()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="neuronscope-bench-") as scratch:
        ctx = Context.create(sizes, Path(scratch))
        for number in wanted:
            title, section = SECTIONS[number]
            print(f"[{time.perf_counter() - started:6.1f} s] {number}. {title} …", file=sys.stderr)
            rows.extend(section(ctx))
    rows.append(SERVICE_ROW)
    elapsed = time.perf_counter() - started
    header = [
        *device_lines(),
        f"- **Run**: preset `{preset}`, {elapsed:.0f} s; load average (1/5/15 min) {load_before} at the "
        f"start, {load_average()} at the end",
        "- **Method**: every comparison runs both sides in this one process, interleaved round by round "
        f"({sizes.repeats} rounds for fast cases, {sizes.slow_repeats} for slow ones, {sizes.heavy_repeats} "
        "for the multi-second ones, after warm-up); "
        "a ratio is the median over rounds of contender time / baseline time in the same round, "
        "absolute figures are medians. Ratios are what count: this machine is shared and noisy.",
        "- **Allocator**: "
        + (
            "glibc malloc keeps freed memory (`worker.engine.allocator`), as in the analysis processes"
            if kept
            else "default (not glibc): freed memory is not kept as on a glibc worker"
        ),
    ]
    text = render(rows, header, [])
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    if args.update_readme:
        _update_readme(text)
    return 0


def _update_readme(text: str) -> None:
    readme = README.read_text(encoding="utf-8")
    if START not in readme or END not in readme:
        raise SystemExit(f"{README} has no {START} … {END} block to replace")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    body = text.split("\n", 2)[2].strip()  # drop the document title
    README.write_text(f"{head}{START}\n{body}\n{END}{tail}", encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
