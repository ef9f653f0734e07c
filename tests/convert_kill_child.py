"""Helper process of test_convert.py's kill test: kills conversions at random points and records what is left.

    python convert_kill_child.py request.json

The request gives the converter's arguments for two checkpoints (seeds "0" and "1", both with --overwrite into the
same output folder), the number of kills and a seed. This process imports the converter once and runs every
conversion in a forked child (it runs no torch operation itself, so forking is safe). Each round converts the other
checkpoint than the one in place and kills that run with SIGKILL at a random point of its writing phase: from the
moment its hidden temporary folder appears, after a delay drawn within one of `kills` equal slices of that phase's
length (plus 10%, so that some kills come after the end). It records the state of the output path, then lets the next
run finish. Odd rounds replace folders by two renames, as on systems without renameat2. The report (JSON) is judged
by the test.
"""

import hashlib
import json
import os
import random
import signal
import sys
import time
from pathlib import Path

from hydra_transformers.convert import output_folder
from hydra_transformers.convert.convert_original_checkpoint import main


def digest(folder: Path):
    """Hash of the names and bytes of a folder's files; None when the path does not exist."""
    if not folder.is_dir():
        return None
    h = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        h.update(path.name.encode())
        h.update(path.read_bytes() if path.is_file() else b"<not a file>")
    return h.hexdigest()


def run_forked(args: list, log: Path, kill_after=None) -> tuple:
    """Run the converter's main(args) in a forked child with its output in `log`. Once its temporary folder appears,
    SIGKILL it after `kill_after` seconds if given. Returns (wait status, seconds from that folder's appearance to
    the child's end, None if it never appeared)."""
    output_dir = Path(args[args.index("--output_dir") + 1])
    prefix = f".{output_dir.name}.converting-"
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            code = main(args)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    appeared = None
    while appeared is None:
        finished, status = os.waitpid(pid, os.WNOHANG)
        if finished:
            return status, None
        if output_dir.parent.is_dir() and any(name.startswith(prefix) for name in os.listdir(output_dir.parent)):
            appeared = time.monotonic()
        else:
            time.sleep(0.0005)
    if kill_after is not None:
        time.sleep(kill_after)
        os.kill(pid, signal.SIGKILL)
    status = os.waitpid(pid, 0)[1]
    return status, time.monotonic() - appeared


def main_loop(request: dict) -> dict:
    out = Path(request["output_dir"])
    work = Path(request["work"])
    work.mkdir()
    args = request["args"]

    def args_into(seed, folder):
        converted = list(args[seed])
        converted[converted.index("--output_dir") + 1] = str(folder)
        return converted

    reference, durations = {}, []
    for seed in args:  # each checkpoint converted once, untouched, to know a complete folder's digest
        status, writing = run_forked(args_into(seed, work / f"reference{seed}"), work / "reference.log")
        assert status == 0 and writing is not None, (work / "reference.log").read_text()
        durations.append(writing)
        reference[seed] = digest(work / f"reference{seed}")
    assert run_forked(args["0"], work / "first.log")[0] == 0 and digest(out) == reference["0"]
    duration = max(durations)

    exchange = output_folder._exchange
    rng = random.Random(request["seed"])
    kills, current = [], "0"
    for index in range(request["kills"]):
        target = "1" if current == "0" else "0"
        swap = "exchange" if index % 2 == 0 else "two renames"
        output_folder._exchange = exchange if swap == "exchange" else (lambda first, second: False)
        delay = (index + rng.random()) / request["kills"] * 1.1 * duration
        run_forked(args[target], work / "killed.log", kill_after=delay)
        found = digest(out)
        after_kill = {None: "missing", reference[current]: "old", reference[target]: "new"}.get(found, "other")
        leftovers = sorted(p.name for p in out.parent.iterdir() if ".converting-" in p.name)
        status = run_forked(args[target], work / "next.log")[0]
        kills.append(dict(
            delay=delay, swap=swap, after_kill=after_kill, leftovers_after_kill=leftovers,
            next_run_status=status, next_run_stderr=(work / "next.log").read_text(),
            after_next_run="new" if digest(out) == reference[target] else "other",
            leftovers_after_next_run=sorted(p.name for p in out.parent.iterdir() if ".converting-" in p.name),
        ))
        current = target
    return {"duration": duration, "kills": kills}


if __name__ == "__main__":
    request = json.loads(Path(sys.argv[1]).read_text())
    report = main_loop(request)
    Path(request["report"]).write_text(json.dumps(report, indent=1))
