"""How a fine-tuning worker starts: one Python process, or ``torchrun`` with one process
per GPU (or ``processes`` of them on CPU, where the Trainer uses gloo). The choice is made
when a job is submitted and kept in its record, so a resumed job starts the same way.

The rules, with the GPU count given (``visible_gpus()`` counts them for real):

>>> choose_launch("auto", 0, "lora", gpus=1)
Launch(launcher='python', processes=1, note='')
>>> choose_launch("auto", 0, "lora", gpus=4)
Launch(launcher='torchrun', processes=4, note='')
>>> choose_launch("auto", 2, "lora", gpus=0)  # auto needs more than one GPU
Launch(launcher='python', processes=1, note='')
>>> choose_launch("torchrun", 2, "lora", gpus=0)  # CPU processes on gloo
Launch(launcher='torchrun', processes=2, note='')
>>> choose_launch("python", 0, "dpo", gpus=8)
Launch(launcher='python', processes=1, note='')
>>> choose_launch("torchrun", 2, "reft", gpus=0).launcher
'python'
>>> choose_launch("torchrun", 0, "lora", gpus=0)
Traceback (most recent call last):
...
common.jobs.JobError: training.launcher is 'torchrun' but no GPU is visible: set training.processes to the number of CPU processes to run (2 or more), or set the launcher to 'python' or 'auto'.
"""
from __future__ import annotations

from dataclasses import dataclass

from common.jobs import JobError

LAUNCHERS = ("auto", "python", "torchrun")
REFT_NOTE = ("ReFT trains in one process: pyreft's trainer does not split its data between "
             "processes, so more of them would only repeat the same work")


@dataclass(frozen=True)
class Launch:
    launcher: str  # "python" or "torchrun"
    processes: int  # the world size
    note: str = ""  # why it differs from what the settings asked

    def python_args(self) -> list[str]:
        """What goes between the Python interpreter and ``-m <worker>``: nothing, or
        torchrun as a module of the same interpreter (no PATH lookup).

        >>> Launch("torchrun", 2).python_args()
        ['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2']
        """
        if self.launcher != "torchrun":
            return []
        return ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                str(self.processes)]


def choose_launch(launcher: str, processes: int, method: str, gpus: int) -> Launch:
    """The launch for a ``method`` job under the settings ``training.launcher`` and
    ``training.processes`` (0: one per GPU) on a machine with ``gpus`` visible GPUs.
    Refused (``JobError``) when the settings cannot be met."""
    if launcher not in LAUNCHERS:
        raise JobError(f"Unknown training.launcher {launcher!r}; use one of {LAUNCHERS}.")
    if launcher == "python" or (launcher == "auto" and gpus < 2):
        return Launch("python", 1)
    count = _process_count(processes, gpus)
    if method == "reft":
        return Launch("python", 1, REFT_NOTE if count > 1 else "")
    if launcher == "auto" and count < 2:
        return Launch("python", 1)
    return Launch("torchrun", count)


def _process_count(processes: int, gpus: int) -> int:
    if gpus == 0 and processes == 0:
        raise JobError("training.launcher is 'torchrun' but no GPU is visible: set "
                       "training.processes to the number of CPU processes to run (2 or more), "
                       "or set the launcher to 'python' or 'auto'.")
    if gpus and processes > gpus:
        raise JobError(f"training.processes is {processes} but {gpus} GPU(s) are visible: "
                       "torchrun runs one process per GPU at most; set it to "
                       f"{gpus} or less (0: one per GPU).")
    return processes or gpus


def visible_gpus() -> int:
    """The GPUs this process may use (CUDA_VISIBLE_DEVICES respected), counted without
    starting CUDA here; 0 on a CPU-only torch."""
    import torch

    return torch.cuda.device_count()
