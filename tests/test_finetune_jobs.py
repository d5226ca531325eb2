"""Training jobs end to end on a tiny random Qwen2 with the real Qwen tokenizer: dataset
-> LoRA job in a worker subprocess -> progress on disk -> evaluation -> adapter
registered; resume after kill -9; cancel; the queue runs one job at a time; torchrun
with two CPU processes (slow); a few steps on the real 0.5B (slow)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from assistant.core import Assistant
from assistant.prompts import answer_messages
from finetune.data import import_dataset
from finetune.evaluate import read_rag_prompts
from ingest.pipeline import IngestItem, drain
from finetune.jobs import JobError, JobQueue, metrics, read_job
from finetune.registry import AdapterRegistry
from tests.conftest import make_settings
from tests.fakes import HashEmbedder, ScriptedLLM
from tests.helpers.tiny_model import tiny_qwen2

FACTS = [("What colour is the Zorblat gate?", "The Zorblat gate is bright green."),
         ("When does the Kelmo pharmacy open?", "The Kelmo pharmacy opens at 7 am."),
         ("Who runs the Ardent ward?", "Nurse Ilse Varga runs the Ardent ward."),
         ("How long is the Brisk course?", "The Brisk course lasts nine days.")]


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    return tiny_qwen2(tmp_path_factory.mktemp("tiny-qwen2"))


def _rows(n: int = 40) -> list[dict]:
    return [{"prompt": f"{q} (#{i})", "response": a} for i in range(n) for q, a in [FACTS[i % 4]]]


def _dataset(tmp_path: Path, data_dir: Path, n: int = 40):
    src = tmp_path / "qa.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in _rows(n)) + "\n")
    return import_dataset(data_dir / "datasets", src)


def _spec(**kw) -> dict:
    return {"target_modules": ["q_proj", "v_proj"], "r": 4, "micro_batch_size": 2,
            "grad_accum": 1, "lr": 1e-3, "max_length": 64, **kw}


def _wait_for(cond, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_lora_job_through_the_facade(tmp_path, tiny, caplog):
    settings = make_settings(tmp_path)
    assistant = Assistant(settings, llm=ScriptedLLM("ok"), embedder=HashEmbedder())
    try:
        doc = tmp_path / "facts.txt"
        doc.write_text("\n\n".join(a for _, a in FACTS) + "\n")
        drain(assistant.documents.ingest([IngestItem(doc, doc.name, str(doc))]))
        src = tmp_path / "qa.jsonl"
        src.write_text("\n".join(json.dumps(r) for r in _rows()) + "\n")
        ds = assistant.datasets.import_file(src, kb=settings.default_kb)
        assert (ds.train, ds.heldout) == (35, 5) and ds.extra["kb"] == settings.default_kb
        est = assistant.training.estimate("lora", _spec(max_steps=4), str(tiny))
        assert est.fits and 5e6 < est.params < 2e7
        job = assistant.training.start("lora", _spec(max_steps=4, save_steps=2), str(tiny), ds.id,
                                       name="facts")
        assert job.status in ("queued", "running")
        rag = read_rag_prompts(job.path)  # the held-out questions with the KB's sources
        assert len(rag) == 5 and all(r["kb"] == settings.default_kb for r in rag)
        assert all("[1] (facts.txt" in r["messages"][1]["content"]
                   and "Kelmo pharmacy opens at 7 am" in r["messages"][1]["content"] for r in rag)
        # asked as the chat asks: the knowledge base's system prompt, the rules repeated
        chat_system = answer_messages("q", [], assistant.documents.profile().system_prompt, "en")[0]
        assert all(r["messages"][0] == chat_system for r in rag)
        assert all("like [1]" in r["messages"][1]["content"].split("Question: ")[1] for r in rag)
        done = assistant.training.queue.wait(job.id, timeout=300)
        assert done.status == "succeeded", assistant.training.log(job.id)[-3000:]
        curve = assistant.training.metrics(job.id)
        assert [m["step"] for m in curve] == [1, 2, 3, 4]
        assert all(m["total"] == 4 and m["loss"] > 0 and "eta" in m and "lr" in m for m in curve)
        assert done.progress["step"] == 4 and done.pid > 0 and done.ended >= done.started
        res = done.result
        assert res["trainable_params"] == 2 * 2 * 4 * (64 + 64) - 2 * 4 * (64 - 32)  # q: 64x64, v: 64x32
        ev = res["evaluation"]
        assert ev["heldout"] == 5 and set(ev["base"]) == {"token_f1", "exact"}
        assert ev["rag"]["mode"] == f"with RAG ({settings.default_kb})"
        assert set(ev["rag"]["base"]) == set(ev["rag"]["adapter"]) == {"token_f1", "exact"}
        adapter = AdapterRegistry(settings.paths.data_dir / "adapters").get(done.adapter_id)
        assert adapter.name == "facts" and adapter.method == "lora" and adapter.base_model == str(tiny)
        assert adapter.dataset_hash == ds.hash and adapter.spec["r"] == 4
        assert adapter.metrics["adapter"] == ev["adapter"] and "replies" not in adapter.metrics
        replies = (job.path / "evaluation.jsonl").read_text().splitlines()
        assert len(replies) == 10  # 5 held-out questions, closed-book and with RAG
        assert (adapter.path / "adapter_model.safetensors").is_file()
        assert adapter.gguf or adapter.gguf_error  # converted, or why not
        assert "Resuming" not in assistant.training.log(job.id)
        with pytest.raises(JobError, match="only interrupted"):
            assistant.training.resume(job.id)

        # a worker restarted after the adapter was registered (killed while evaluating)
        # goes straight to the evaluation: no second training, no second adapter
        from finetune.worker import run_job

        assert json.loads((job.path / "registered.json").read_text())["adapter_id"] == adapter.adapter_id
        with caplog.at_level("INFO", logger="finetune.worker"):
            assert run_job(job.path) == 0
        again = read_job(job.path)
        assert again.status == "succeeded" and again.adapter_id == adapter.adapter_id
        assert [m["step"] for m in assistant.training.metrics(job.id)] == [1, 2, 3, 4]
        assert [a.adapter_id for a in assistant.serving.adapters.list()] == [adapter.adapter_id]
        assert again.result["steps"] == 4 and again.result["evaluation"]["heldout"] == 5
        assert "is registered; evaluating it" in caplog.text
    finally:
        assistant.close()


def test_resume_after_kill_9(tmp_path, tiny):
    data_dir = tmp_path / "data"
    ds = _dataset(tmp_path, data_dir)
    queue = JobQueue(data_dir / "finetune" / "jobs")
    job = queue.submit("lora", _spec(max_steps=12, save_steps=2), str(tiny), ds.id,
                       data_dir=data_dir, models_dir=tmp_path)
    ckpts = job.path / "checkpoints"
    _wait_for(lambda: (ckpts / "checkpoint-2" / "trainer_state.json").is_file(), 240,
              "the first checkpoint")
    pid = read_job(job.path).pid
    os.kill(pid, signal.SIGKILL)
    _wait_for(lambda: queue.get(job.id).status == "interrupted", 30, "interrupted status")
    # an app restart finds the same state
    again = JobQueue(data_dir / "finetune" / "jobs")
    killed_at = max(m["step"] for m in metrics(job.path))
    assert again.get(job.id).status == "interrupted" and killed_at < 12
    from finetune.train import last_checkpoint

    resume_from = int(Path(last_checkpoint(ckpts)).name.split("-")[1])
    again.resume(job.id)
    done = again.wait(job.id, timeout=300)
    assert done.status == "succeeded", again.log(job.id)[-3000:]
    assert done.attempts == 2
    steps = [m["step"] for m in metrics(job.path)]
    restart = steps.index(resume_from + 1, steps.index(killed_at) + 1)
    assert steps[restart:] == list(range(resume_from + 1, 13))  # continued, not restarted
    assert "Resuming from" in again.log(job.id)


def test_reft_job_resumes_from_its_saved_interventions_after_kill_9(tmp_path, tiny):
    data_dir = tmp_path / "data"
    ds = _dataset(tmp_path, data_dir)
    queue = JobQueue(data_dir / "finetune" / "jobs")
    spec = {"layers": [0, 1], "rank": 2, "micro_batch_size": 2, "grad_accum": 1,
            "max_length": 64, "lr": 1e-2, "max_steps": 60, "save_steps": 5}
    job = queue.submit("reft", spec, str(tiny), ds.id, data_dir=data_dir, models_dir=tmp_path)
    latest = job.path / "reft-checkpoint" / "latest"
    _wait_for(lambda: (latest / "reft_config.json").is_file(), 240, "the first ReFT checkpoint")
    os.kill(read_job(job.path).pid, signal.SIGKILL)
    _wait_for(lambda: queue.get(job.id).status == "interrupted", 30, "interrupted status")
    saved = json.loads((latest / "reft_config.json").read_text())
    killed_at = max(m["step"] for m in metrics(job.path))
    assert saved["max_steps"] == 60 and saved["step"] % 5 == 0 and killed_at < 60
    assert sorted(p.name for p in latest.iterdir()) == ["interventions.safetensors",
                                                         "reft_config.json"]  # no pickles
    queue.resume(job.id)
    done = queue.wait(job.id, timeout=300)
    assert done.status == "succeeded", queue.log(job.id)[-3000:]
    steps = [m["step"] for m in metrics(job.path)]
    restart = steps.index(saved["step"] + 1, steps.index(killed_at) + 1)
    assert steps[restart:] == list(range(saved["step"] + 1, 61))  # continued, not restarted
    assert f"Resuming ReFT from step {saved['step']} of 60" in queue.log(job.id)
    assert done.result["steps"] == 60
    assert AdapterRegistry(data_dir / "adapters").get(done.adapter_id).method == "reft"


def test_queue_runs_one_job_at_a_time_and_cancel_works(tmp_path, tiny):
    data_dir = tmp_path / "data"
    ds = _dataset(tmp_path, data_dir)
    queue = JobQueue(data_dir / "finetune" / "jobs")
    long_spec = _spec(max_steps=5000, save_steps=1000)
    first = queue.submit("lora", long_spec, str(tiny), ds.id, data_dir=data_dir, models_dir=tmp_path)
    time.sleep(0.01)
    second = queue.submit("lora", long_spec, str(tiny), ds.id, data_dir=data_dir, models_dir=tmp_path)
    assert queue.get(first.id).status == "running" and queue.get(second.id).status == "queued"
    _wait_for(lambda: queue.get(first.id).progress, 240, "progress of the first job")
    pid = queue.get(first.id).pid
    cancelled = queue.cancel(first.id)
    assert cancelled.status == "cancelled"
    _wait_for(lambda: subprocess.run(["ps", "-p", str(pid), "-o", "stat="], check=False,
                                     capture_output=True,
                                     text=True).stdout.strip() in ("", "Z"), 20, "the worker to end")
    assert queue.get(second.id).status == "running"  # the queue moved on
    queue.cancel(second.id)
    assert queue.get(second.id).status == "cancelled"
    with pytest.raises(JobError, match="only queued or running"):
        queue.cancel(second.id)


def test_start_refuses_a_dataset_of_the_wrong_shape(tmp_path, tiny):
    assistant = Assistant(make_settings(tmp_path), llm=ScriptedLLM("ok"), embedder=HashEmbedder())
    try:
        src = tmp_path / "text.jsonl"
        src.write_text(json.dumps({"text": "Some raw text."}) + "\n")
        ds = assistant.datasets.import_file(src)
        with pytest.raises(JobError, match="needs a preference dataset"):
            assistant.training.start("dpo", {}, str(tiny), ds.id)
        assert assistant.training.jobs() == []
    finally:
        assistant.close()


def test_start_refuses_reft_layers_the_base_does_not_have(tmp_path, tiny):
    """Checked when the job is started (from the base's config or the known defaults),
    not minutes later when the worker has loaded the model."""
    assistant = Assistant(make_settings(tmp_path), llm=ScriptedLLM("ok"), embedder=HashEmbedder())
    try:
        ds = _dataset(tmp_path, assistant.paths.data_dir)
        layers = json.loads((tiny / "config.json").read_text())["num_hidden_layers"]
        with pytest.raises(JobError, match=rf"\[{layers}\] do not exist.*0\.\.{layers - 1}"):
            assistant.training.start("reft", {"layers": [0, layers]}, str(tiny), ds.id)
        with pytest.raises(JobError, match=r"\[28, 30\] do not exist.*0\.\.27"):
            assistant.training.start("reft", {"layers": [8, 28, 30]}, "qwen2.5-coder-1.5b", ds.id)
        assert assistant.training.jobs() == []
    finally:
        assistant.close()


@pytest.mark.slow
def test_torchrun_two_cpu_processes_through_the_queue(tmp_path, tiny):
    """launcher="torchrun", processes=2 on CPU: the queue starts the worker under torchrun,
    both ranks train (gloo DDP), rank 0 alone writes progress and registers the adapter."""
    data_dir = tmp_path / "data"
    ds = _dataset(tmp_path, data_dir)
    queue = JobQueue(data_dir / "jobs", launcher="torchrun", processes=2)
    job = queue.submit("lora", _spec(max_steps=3, save_steps=100), str(tiny), ds.id,
                       data_dir=data_dir, models_dir=tmp_path)
    assert (job.launcher, job.processes) == ("torchrun", 2)
    done = queue.wait(job.id, timeout=400)
    log = queue.log(job.id)
    assert done.status == "succeeded", log[-3000:]
    assert f"Job {job.id}: rank 0 of 2" in log and f"Job {job.id}: rank 1 of 2" in log
    assert (done.launcher, done.processes) == ("torchrun", 2)  # as rank 0 saw it
    assert done.result["world_size"] == 2 and done.result["steps"] == 3
    assert "on 2 processes (torchrun)" in done.describe()
    assert [m["step"] for m in metrics(job.path)] == [1, 2, 3]  # rank 0 only
    adapters = AdapterRegistry(data_dir / "adapters").list()
    assert [a.adapter_id for a in adapters] == [done.adapter_id]  # registered once


@pytest.mark.slow
def test_a_few_steps_on_the_real_05b(tmp_path):
    """Real Qwen2.5-Coder-0.5B, dequantized once into ~/.cache/docent-test (~42 s, ~4 GB)."""
    from finetune.base_models import hf_base
    from finetune.data import Example
    from finetune.specs import LoraSpec
    from finetune.train import train_lora
    from tests.conftest import shared_models_dir

    cache = Path(os.environ.get("DOCENT_TEST_CACHE", Path.home() / ".cache" / "docent-test"))
    base = hf_base("qwen2.5-coder-0.5b", shared_models_dir(), cache / "hf-models")
    examples = [Example(messages=(("user", q), ("assistant", a))) for q, a in FACTS * 2]
    result = train_lora(LoraSpec(max_steps=3, micro_batch_size=2, grad_accum=1, max_length=64,
                                 save_steps=100), base, examples, tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert result.trainable_params == 8_798_208  # r=16 on all 7 projections of 24 layers
    print(f"\n0.5B LoRA: {result.seconds_per_step:.2f} s/step")


def test_compare_scores_closed_book_and_rag_prompts(tmp_path):
    from finetune.data import Example
    from finetune.evaluate import compare, write_replies

    examples = [Example(messages=(("user", "When does Kelmo open?"), ("assistant", "At 7 am.")))]
    rag = [{"kb": "clinic", "messages": [{"role": "user", "content": "Sources: ... 7 am"}]}]

    def adapter(messages):
        return "At 7 am [1]." if "Sources" in messages[-1]["content"] else "At noon."

    out = compare(lambda m: "I do not know.", adapter, examples, rag)
    assert out["mode"] == "closed-book" and out["adapter"]["token_f1"] == 0.4
    assert out["rag"]["mode"] == "with RAG (clinic)"
    assert out["rag"]["adapter"] == {"token_f1": 1.0, "exact": 1.0}  # marker not scored
    assert out["rag"]["base"]["token_f1"] == 0.0
    assert compare(lambda m: "x", adapter, examples).get("rag") is None

    assert write_replies(tmp_path, out) == 2 and "replies" not in out and "replies" not in out["rag"]
    rows = [json.loads(line) for line in (tmp_path / "evaluation.jsonl").read_text().splitlines()]
    assert [(r["mode"], r["adapter"], r["adapter_score"]) for r in rows] == [
        ("closed-book", "At noon.", 0.4), ("with RAG (clinic)", "At 7 am.", 1.0)]


def test_examples_longer_than_max_length_are_left_out_or_cut_and_counted(tiny, caplog):
    """A prompt that fills max_length teaches nothing: it is left out (LoRA and ReFT
    alike), a reply that runs past it is cut, and the warning counts both."""
    from transformers import AutoTokenizer

    from finetune.data import Example
    from finetune.reft import _dataset
    from finetune.train import sft_features

    tok = AutoTokenizer.from_pretrained(str(tiny))
    sources = " ".join(f"Source {i}: the clinic opens at {i} am." for i in range(60))
    examples = [Example(messages=(("user", "When does the clinic open?"),
                                  ("assistant", "At 8 am."))),
                Example(messages=(("user", f"{sources}\nWhen does it open?"),
                                  ("assistant", "At 8 am."))),
                Example(messages=(("user", "Tell me everything."),
                                  ("assistant", "The clinic opens early. " * 40)))]
    with caplog.at_level("WARNING", logger="finetune.train"):
        features = sft_features(tok, examples, 128)
    assert len(features) == 2 and max(len(f["input_ids"]) for f in features) == 128
    assert all(any(x != -100 for x in f["labels"]) for f in features)
    assert "1 of 3 examples have a prompt longer than max_length=128" in caplog.text
    assert "1 more have their reply cut" in caplog.text
    rows = _dataset(tok, examples, "f1+l1", 2, 128)
    assert len(rows) == 2 and "cut" not in rows.column_names
    assert max(len(r) for r in rows["input_ids"]) == 128
    with pytest.raises(ValueError, match="raise max_length"):
        sft_features(tok, examples[1:2], 128)
