"""The whole training command's samples/s next to the bare step's, per memory allocator.

    .venv/bin/python benchmarks/train_command.py [--preset seed-base] [--batch 32] [--steps 6]

Synthesises and prepares a dataset of `--steps` training batches (kept in a temporary folder),
then, for each allocator in turn (glibc as it is, glibc with PyTorch's huge pages, and tcmalloc
or jemalloc where installed, which is what `aslfr train` restarts with):
- `benchmarks/train_step.py` at the same preset and batch: the bare optimiser step on one
  padded batch, the figure the other benchmarks quote;
- `aslfr train --preset P --set batch_size=B --set epochs=1` as a user runs it, DataLoader
  workers, augmentation, features and padding to max_len included: the training loop's samples/s
  (from the epoch's time in metrics.jsonl), the command's wall time (start-up, the validation at
  the end and the checkpoint included), and its CPU time in the kernel and page faults per step
  (from the process's own resource usage).
All in one run, with the CPU's flags, since this machine is shared and its speed varies by hour.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aslfr.hardware import describe_cpu
from aslfr.memory import allocator_environment, find_allocator

HERE = Path(__file__).resolve().parent


def modes() -> dict[str, dict[str, str]]:
    """Each allocator's environment, for both the command (which restarts itself with the
    installed one unless told `system`) and the step benchmark (which gets it preloaded)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ASLFR_ALLOCATOR", "THP_MEM_ALLOC"))}
    out = {"glibc": {**clean, "ASLFR_ALLOCATOR": "system"},
           "glibc + huge pages": {**clean, "ASLFR_ALLOCATOR": "system", "THP_MEM_ALLOC_ENABLE": "1"}}
    found = find_allocator()
    if found:
        out[found[0]] = {**clean, **allocator_environment(found[0])}
    return out


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[str, float, dict[str, float]]:
    """Runs `cmd`, returning its output, wall seconds and its own resource usage."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd[:4])} ... failed:\n{out[-3000:]}")
    return out, wall, {"user": usage.ru_utime, "sys": usage.ru_stime, "minflt": usage.ru_minflt}


def make_data(folder: Path, batch: int, steps: int) -> Path:
    """Ten files, of which the seed's split holds out the first; enough training samples for
    `steps` batches after the length filter."""
    aslfr = [sys.executable, "-m", "aslfr"]
    sequences = int((steps + 0.6) * batch / 0.9 / 0.97) + 10
    subprocess.run([*aslfr, "synth", str(folder / "data"), "--sequences", str(sequences), "--files", "10",
                    "--participants", "10", "--corrupt-fraction", "0", "--seed", "3", "--workers", "2"],
                   check=True, capture_output=True)
    subprocess.run([*aslfr, "prepare", str(folder / "data"), str(folder / "prepared"), "--workers", "2"],
                   check=True, capture_output=True)
    return folder / "prepared"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="seed-base")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=6, help="training batches in the command's epoch")
    ap.add_argument("--step-steps", type=int, default=4, help="steps the step benchmark times")
    a = ap.parse_args()
    from aslfr.config import preset

    frames = preset(a.preset).max_len
    print(f"{a.preset}, batch {a.batch}, T={frames}; CPU: {describe_cpu()}; {os.cpu_count()} cores")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(Path(tmp), a.batch, a.steps)
        for name, env in modes().items():
            out, _, _ = run_measured([sys.executable, str(HERE / "train_step.py"), "--preset", a.preset, "--batch",
                                      str(a.batch), "--frames", str(frames), "--steps", str(a.step_steps)], env)
            step_rate = float(re.search(r"throughput: ([0-9.]+) samples/s", out).group(1))
            run = Path(tmp) / f"run-{name.replace(' ', '')}"
            out, wall, usage = run_measured([sys.executable, "-m", "aslfr", "train", "--preset", a.preset, "--data",
                                             str(data), "--out", str(run), "--set", f"batch_size={a.batch}",
                                             "--set", "epochs=1"], env)
            used = re.search(r"memory allocator: (.*)", out).group(1)
            metrics = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
            steps, loop = metrics["step"], metrics["epoch_seconds"]
            rows.append((name, used, step_rate, steps * a.batch / loop, wall, usage, steps))
            print(f"{name} ({used}): step {step_rate:.2f} samples/s; command: {steps} steps in {loop:.1f} s "
                  f"({steps * a.batch / loop:.2f} samples/s), {wall:.1f} s wall, user {usage['user']:.0f} s, "
                  f"system {usage['sys']:.0f} s, {usage['minflt'] / steps:,.0f} page faults a step", flush=True)
    base = rows[0]
    print()
    print("| allocator | step, samples/s | command's loop, samples/s | loop / step | command wall | "
          "system share of CPU time | page faults a step | loop vs glibc |")
    print("|---|---|---|---|---|---|---|---|")
    for name, used, step_rate, loop_rate, wall, usage, steps in rows:
        print(f"| {name} | {step_rate:.2f} | {loop_rate:.2f} | {loop_rate / step_rate:.2f} | {wall:.0f} s | "
              f"{usage['sys'] / (usage['user'] + usage['sys']):.0%} | {usage['minflt'] / steps:,.0f} | "
              f"{loop_rate / base[3]:.2f}x |")


if __name__ == "__main__":
    main()
