"""Training and command fingerprints: run before and after a change that must not change
behaviour (a regrouping, a refactor) and compare the two files byte for byte.

    python scripts/fingerprint.py OUT.json

Trains five small settings (BPTT, the toolkit's and the authors' synthesizer alternating with
real gradients, cDNI, NT-ASGD) on the packaged wikitext-2-small for three to four epochs of a
few segments each, stops one of them and resumes it, and runs every command on the results.
Records, per setting, the metrics lines without their wall-clock fields, the results without
them, a SHA-256 of every tensor of every checkpoint (weights, synthesizer, optimizer and trainer
state), and every command's output with durations and speeds masked. Takes about a minute on
two CPU cores. The figures are this machine's: compare files written on one machine.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SMALL = [
    "run.epochs=3",
    "run.max_batches=4",
    "run.max_eval_batches=2",
    "model.hidden_size=32",
    "model.emb_size=16",
]
SETTINGS = {
    "bptt": ["recipes/evidence-v2/bptt.toml", *SMALL],
    "toolkit": ["recipes/evidence-v2/alt-rb5-toolkit.toml", *SMALL],
    "authors": ["recipes/evidence-v2/alt-rb5-authors.toml", *SMALL],
    "cdni": ["recipes/evidence-v2/alt-rb5-cdni.toml", *SMALL],
    "ntasgd": [
        "recipes/wt2/awd-lstm.toml",
        *SMALL,
        "run.epochs=4",
        "run.device='cpu'",
        "run.backend='torch'",
        "run.threads=1",
        "data.corpus='wikitext-2-small'",
        "data.download=false",
        "data.batch_size=8",
        "data.eval_batch_size=8",
        "data.test_batch_size=8",
        "model.layers=2",
        "optim.nonmono=1",
    ],
}
WALL_CLOCK = {"seconds", "tokens_per_s", "tok_s", "started", "finished", "date", "time"}
MASKS = [  # what depends on the machine and the moment, not on the code
    (re.compile(r"warning: this machine is busy[^\n]*\n"), ""),
    (re.compile(r"\| [\d.]+ \|\n"), "| N |\n"),  # altgrad-report's last column: train time
    (re.compile(r"[\d,]+(\.\d+)? tok/s"), "N tok/s"),
    (re.compile(r"eta \S+"), "eta N"),
    (re.compile(r"\b\d+(\.\d+)? ?(s|ms|min|h)\b"), "N s"),
    (re.compile(r"/tmp/tmp\w+"), "TMP"),
]


def command(*args: str) -> str:
    """One command's exit code, stdout and stderr, durations masked."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys; from altgrad_triton.cli.{args[0]} import main; "
            "sys.exit(main(sys.argv[1:]))",
            *args[1:],
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    text = f"exit {done.returncode}\n{done.stdout}\n--- stderr\n{done.stderr}"
    for pattern, mask in MASKS:
        text = pattern.sub(mask, text)
    return text


def without_wall_clock(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in WALL_CLOCK}


def tensor_hashes(path: Path) -> dict[str, str]:
    """SHA-256 of each tensor in a checkpoint file (nested state flattened by key path)."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=False)
    out: dict[str, str] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, torch.Tensor):
            data = value.detach().contiguous().cpu()
            out[prefix] = hashlib.sha256(data.view(-1).view(torch.uint8).numpy()).hexdigest()
        elif isinstance(value, dict):
            for key in sorted(value, key=str):
                if key not in WALL_CLOCK:
                    walk(f"{prefix}.{key}", value[key])
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                walk(f"{prefix}[{i}]", item)
        elif isinstance(value, int | float | str | bool) or value is None:
            out[prefix] = repr(value)
        else:
            out[prefix] = type(value).__name__

    walk("", state)
    return out


def run_fingerprint(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    results = json.loads((run / "results.json").read_text())
    tensors = {
        str(f.relative_to(run)): tensor_hashes(f)
        for f in sorted((run / "checkpoints").rglob("*"))
        if f.suffix in (".safetensors", ".pt")
    }
    return {
        "files": sorted(str(f.relative_to(run)) for f in run.rglob("*") if f.is_file()),
        "metrics": [without_wall_clock(r) for r in rows],
        "results": without_wall_clock(results),
        "tensors": tensors,
    }


def main() -> int:
    out_path = Path(sys.argv[1])
    found: dict = {"settings": {}, "commands": {}}
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        for name, args in SETTINGS.items():
            log = command("train", *args, f"run.out_dir='{runs}'", f"run.name='{name}'")
            found["settings"][name] = {"output": log, **run_fingerprint(runs / name)}
            print(f"{name}: trained", flush=True)
        # stopped after epoch 2 (run.epochs=2), resumed to 3: the resumed run's fingerprint
        stop = [*SETTINGS["toolkit"], "run.epochs=2", f"run.out_dir='{runs}'", "run.name='re'"]
        first = command("train", *stop)
        again = command("train", "--resume", str(runs / "re"), "run.epochs=3")
        found["settings"]["resumed"] = {"output": first + again, **run_fingerprint(runs / "re")}
        run = str(runs / "toolkit")
        calls = {
            "recipes ls": ("recipes", "ls"),
            "dump-config": ("train", "recipes/wt2.toml", "--dump-config"),
            "eval": ("eval", run, "--split", "valid"),
            "eval json": ("eval", run, "--json"),
            "generate": ("generate", run, "--words", "20", "--seed", "3"),
            "probe": (
                "probe",
                run,
                "--boundaries",
                "2",
                "--max-horizon",
                "2",
                "--out",
                str(Path(tmp) / "probe.json"),
            ),
            "report": ("report", str(runs), "--out", str(Path(tmp) / "reports")),
            "bad key": ("train", "recipes/wt2.toml", "optim.lrr=1"),
            "bad value": ("train", "recipes/wt2.toml", "optim.lr=-1"),
            "missing run": ("eval", str(Path(tmp) / "nothing")),
            "tune dry-run": ("tune", "recipes/wt2.toml", "--dry-run"),
            "doctor": ("doctor",),
            "horizon": (
                "horizon",
                "--truncations",
                "2",
                "--methods",
                "bptt",
                "sg",
                "--budget",
                "300",
                "--hidden",
                "16",
                "--out",
                str(Path(tmp) / "h"),
            ),
            "suite dry-run": ("suite", "recipes/evidence-v2", "--dry-run", "--seeds", "1", "2"),
            "finetune": (
                "train",
                "--finetune",
                str(runs / "ntasgd"),
                "run.epochs=1",
                f"run.out_dir='{runs}'",
                "run.name='ft'",
            ),
            "suite help": ("suite", "--help"),
            "bench help": ("bench", "--help"),
        }
        for label, args in calls.items():
            found["commands"][label] = command(*args)
            print(f"{label}: done", flush=True)
        found["commands"]["probe json"] = (Path(tmp) / "probe.json").read_text()
        found["commands"]["horizon results"] = [
            without_wall_clock(json.loads(line))
            for line in (Path(tmp) / "h" / "results.jsonl").read_text().splitlines()
        ]
        found["settings"]["finetune"] = run_fingerprint(runs / "ft")
    text = json.dumps(found, indent=1, sort_keys=True) + "\n"
    out_path.write_text(text.replace(tmp, "TMP"))
    print(f"fingerprint: {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
