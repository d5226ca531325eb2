"""How the queue starts a fine-tuning worker (``finetune.launch``): one Python process or
torchrun, from ``training.launcher`` / ``training.processes`` and the GPUs visible (faked
here). Training under torchrun for real is tests/test_finetune_jobs.py's slow test."""
from __future__ import annotations

import sys

import pytest

from finetune.jobs import FINETUNE, WORKER, JobError, JobQueue, JobRecord
from finetune.launch import REFT_NOTE, Launch, choose_launch

TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]


@pytest.mark.parametrize("launcher, processes, method, gpus, expected", [
    ("python", 0, "lora", 8, Launch("python", 1)),
    ("python", 4, "lora", 0, Launch("python", 1)),
    ("auto", 0, "lora", 0, Launch("python", 1)),
    ("auto", 0, "lora", 1, Launch("python", 1)),
    ("auto", 3, "lora", 0, Launch("python", 1)),  # auto wants more than one GPU
    ("auto", 0, "lora", 2, Launch("torchrun", 2)),
    ("auto", 0, "dpo", 4, Launch("torchrun", 4)),
    ("auto", 2, "cpt", 4, Launch("torchrun", 2)),
    ("auto", 1, "lora", 4, Launch("python", 1)),  # one process asked: no launcher needed
    ("torchrun", 0, "lora", 1, Launch("torchrun", 1)),
    ("torchrun", 0, "lora", 2, Launch("torchrun", 2)),
    ("torchrun", 2, "lora", 0, Launch("torchrun", 2)),  # CPU processes on gloo
    ("torchrun", 2, "reft", 0, Launch("python", 1, REFT_NOTE)),
    ("auto", 0, "reft", 4, Launch("python", 1, REFT_NOTE)),
    ("torchrun", 1, "reft", 0, Launch("python", 1)),
])
def test_the_launch_follows_the_settings_and_the_gpus(launcher, processes, method, gpus,
                                                      expected):
    assert choose_launch(launcher, processes, method, gpus) == expected


@pytest.mark.parametrize("launcher, processes, gpus, why", [
    ("torchrun", 0, 0, "no GPU is visible: set training.processes"),
    ("torchrun", 4, 2, "training.processes is 4 but 2 GPU"),
    ("auto", 3, 2, "training.processes is 3 but 2 GPU"),
])
def test_settings_that_cannot_be_met_are_refused_with_the_fix(launcher, processes, gpus, why):
    with pytest.raises(JobError, match=why):
        choose_launch(launcher, processes, "lora", gpus)


def test_the_worker_command_is_torchrun_as_a_module_of_the_same_python(tmp_path):
    def record(launch: Launch) -> JobRecord:
        return JobRecord("j", "lora", {}, "tiny", "ds", launcher=launch.launcher,
                         processes=launch.processes, path=tmp_path)

    two = record(Launch("torchrun", 2))
    assert FINETUNE.launch(two) == TORCHRUN + ["2"]
    assert FINETUNE.launch(record(Launch("python", 1))) == []
    assert two.launch == Launch("torchrun", 2)
    assert "j queued on 2 processes (torchrun)" == two.describe()
    assert "j queued" == record(Launch("python", 1)).describe()
    assert WORKER == "finetune.worker"


def test_a_queue_decides_from_its_settings_and_refuses_before_writing_a_job(tmp_path):
    four_gpus = JobQueue(tmp_path / "a", sys.executable, launcher="auto", gpus=lambda: 4)
    assert four_gpus.choose_launch("lora") == Launch("torchrun", 4)
    cpu = JobQueue(tmp_path / "b", launcher="torchrun", processes=0, gpus=lambda: 0)
    with pytest.raises(JobError, match="no GPU is visible"):
        cpu.submit("lora", {}, "tiny", "ds", data_dir=tmp_path, models_dir=tmp_path)
    assert cpu.list() == [] and not any((tmp_path / "b").glob("*/job.json"))


def test_the_app_queue_takes_the_training_settings(tmp_path):
    from assistant.background import job_queue
    from knowledge.library import Library
    from tests.conftest import make_settings
    from tests.fakes import HashEmbedder

    settings = make_settings(tmp_path, training={"launcher": "torchrun", "processes": 2})
    library = Library(settings.paths.kb_dir, HashEmbedder(), 220, 40)
    try:
        queue = job_queue(settings, library)
        assert (queue.launcher, queue.processes) == ("torchrun", 2)
        assert queue.choose_launch("lora") == Launch("torchrun", 2)
    finally:
        library.close()
