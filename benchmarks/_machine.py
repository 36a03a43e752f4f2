"""Describe the machine a benchmark ran on (printed with and saved beside every table)."""
import os
import platform
import subprocess
from pathlib import Path

import torch


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}; {os.cpu_count()} CPU cores visible, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), {dev}, Python {platform.python_version()}")


def git_state() -> str:
    """The commit the benchmark ran at, and the tracked files it had uncommitted changes to."""
    def git(*a):
        return subprocess.run(["git", *a], capture_output=True, text=True, cwd=Path(__file__).parent).stdout
    dirty = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines() if line]
    return git("rev-parse", "--short", "HEAD").strip() + (f" + uncommitted {', '.join(dirty)}" if dirty else "")
