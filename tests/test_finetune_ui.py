"""The Fine-tune tab and the chat model menu, driven through their callbacks on an
Assistant over a temp data dir (scripted LLM, hash embedder): no model is loaded and no
training runs; jobs and adapters are records written on disk as the worker writes them."""
from __future__ import annotations

import json
import time
from pathlib import Path

import gradio as gr
import pytest

from assistant.core import Assistant
from assistant.ui import adapters_panel as ap
from assistant.ui import finetune_data_panel as dp
from assistant.ui import finetune_jobs_panel as jp
from assistant.ui import finetune_train_panel as tp
from assistant.ui.app import build_ui
from assistant.ui.chat_tab import _respond
from assistant.ui.finetune_format import CHAT_COLUMNS
from finetune.registry import AdapterRegistry
from tests.conftest import make_settings
from tests.fakes import HashEmbedder, ScriptedLLM

PAIRS = [("What are the visiting hours?", "From 2 pm to 7 pm."),
         ("Can children visit?", "Children under 12 visit with an adult."),
         ("Is parking free?", "Parking is free for the first hour.")]


@pytest.fixture
def assistant(tmp_path):
    a = Assistant(make_settings(tmp_path), llm=ScriptedLLM("I don't know."),
                  embedder=HashEmbedder())
    yield a
    a.close()


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _faq(tmp_path: Path, n: int = 3) -> Path:
    rows = [{"prompt": q, "response": a} for q, a in PAIRS]
    rows += [{"prompt": f"Question {i}?", "response": f"Answer {i}."} for i in range(n - 3)]
    return _jsonl(tmp_path / "faq.jsonl", rows[:n])


def _ids(el) -> set[str]:
    return {b.elem_id for b in el.blocks.values() if getattr(b, "elem_id", None)}


def test_app_has_finetune_tab_and_chat_model_menu(assistant):
    demo = build_ui(assistant)
    ids = _ids(demo)
    assert {"ft-upload", "ft-import", "ft-preview", "ft-dataset", "ft-estimate", "ft-start",
            "ft-jobs", "ft-loss", "ft-log", "ft-cancel", "ft-resume", "ft-adapters",
            "ft-export", "chat-model", "chat", "question", "ask"} <= ids
    menu = next(b for b in demo.blocks.values() if getattr(b, "elem_id", "") == "chat-model")
    assert menu.value == assistant.serving.chat_model()
    qlora = next(b for b in demo.blocks.values() if getattr(b, "elem_id", "") == "ft-qlora")
    from finetune.specs import qlora_unavailable_reason

    reason = qlora_unavailable_reason()
    assert qlora.interactive is (not reason) and (not reason or qlora.info == reason)


# --- data ------------------------------------------------------------------------------
def test_import_preview_and_edit_dataset(assistant, tmp_path):
    message, ds_id = dp.import_file(assistant, str(_faq(tmp_path)), "clinic faq")
    assert message.startswith("Imported **clinic faq**") and "3 training" in message
    assert [i for _, i in dp.dataset_choices(assistant)] == [ds_id]
    headers, rows = dp.preview_table(assistant, ds_id)
    assert headers == CHAT_COLUMNS
    assert rows[0] == ["", PAIRS[0][0], PAIRS[0][1], ""]

    assert dp.save_edits(assistant, ds_id, headers, rows) == ("No changes to save.", ds_id)
    rows[0][2] = "Visiting hours are 2 pm to 7 pm every day."
    rows[1] = ["", "", "", ""]  # a cleared row is deleted
    message, new_id = dp.save_edits(assistant, ds_id, headers, rows)
    assert new_id and new_id != ds_id and "2 training" in message
    assert dp.preview_table(assistant, new_id)[1][0][2] == rows[0][2]
    assert len(dp.dataset_choices(assistant)) == 2  # the original is kept


def test_editing_keeps_rows_beyond_the_preview_and_the_heldout_split(assistant, tmp_path):
    _, ds_id = dp.import_file(assistant, str(_faq(tmp_path, 40)), "big")
    original = next(r for r in assistant.datasets.list() if r.id == ds_id)
    assert original.heldout > 0
    headers, rows = dp.preview_table(assistant, ds_id)
    assert len(rows) == dp.PREVIEW_ROWS
    rows[0][2] = "Edited answer."
    _, new_id = dp.save_edits(assistant, ds_id, headers, rows)
    edited = next(r for r in assistant.datasets.list() if r.id == new_id)
    assert edited.train + edited.heldout == 40


def test_bad_rows_are_named_and_edits_are_validated(assistant, tmp_path):
    bad = _jsonl(tmp_path / "bad.jsonl", [{"prompt": "Hours?", "response": "2-7 pm"},
                                          {"prompt": "Parking?"}])
    message, ds_id = dp.import_file(assistant, str(bad))
    assert ds_id is None and "Not imported" in message
    assert "row 2" in message and "'response' is missing" in message
    assert dp.import_file(assistant, None)[1] is None
    message, ds_id = dp.import_file(assistant, str(_faq(tmp_path)), "x", "no-such-kb")
    assert ds_id is None and "no-such-kb" in message

    _, ds_id = dp.import_file(assistant, str(_faq(tmp_path)))
    headers, rows = dp.preview_table(assistant, ds_id)
    rows[2][2] = ""  # an answer emptied but its question kept
    message, new_id = dp.save_edits(assistant, ds_id, headers, rows)
    assert new_id is None and "row 3" in message


def test_generate_reports_an_empty_knowledge_base(assistant):
    message, ds_id = dp.generate(assistant, "default", 5, True, 0.0)
    assert ds_id is None and "no documents" in message


def test_generate_with_quoted_answers_stores_the_passage_sentences(tmp_path):
    from ingest.pipeline import drain

    text = ("Visiting hours are from 2 pm to 7 pm every day. Children under 12 visit with an "
            "adult. Parking is free for the first hour. Flowers are not allowed in the "
            "intensive care unit. Visitors sign in at the front desk and wear a badge.")
    (tmp_path / "visits.txt").write_text(text, encoding="utf-8")
    a = Assistant(make_settings(tmp_path / "data"), llm=ScriptedLLM("When are visiting hours?"),
                  embedder=HashEmbedder())
    try:
        drain(a.documents.ingest([tmp_path / "visits.txt"]))
        message, ds_id = dp.generate(a, "default", 1, False, 1.0, per_passage=1,
                                     answers="quoted")
        assert ds_id and "Generated" in message, message
        (row,) = a.datasets.preview(ds_id, 5)
        answer = row["messages"][-1]["content"]
        # the passage's own sentences, each citing the passage's number among the sources
        assert "Visiting hours are from 2 pm to 7 pm every day [1]." in answer
    finally:
        a.close()


# --- train -------------------------------------------------------------------------------
def test_estimate_and_refusals(assistant, tmp_path):
    _, ds_id = dp.import_file(assistant, str(_faq(tmp_path, 40)))
    form = {"lr": 2e-4, "epochs": 1.0, "max_steps": 0, "micro_batch_size": 2.0,
            "grad_accum": 4.0, "max_length": 256.0, "dropout": 0.05,
            "target_modules": ["q_proj", "v_proj"], "r": 8.0, "alpha": 0, "qlora": False}
    spec = tp.spec_values("lora", form)
    assert spec["r"] == 8 and isinstance(spec["micro_batch_size"], int)
    text = tp.estimate_text(assistant, "lora", spec, "qwen2.5-coder-0.5b", ds_id)
    assert "630M parameters" in text and "GB" in text and "s per step" in text
    assert "5 steps" in text  # 36 training rows in 18 micro-batches, 4 per step
    assert tp.estimate_text(assistant, "lora", {**spec, "r": 0}, "qwen2.5-coder-0.5b",
                            ds_id).startswith("⚠️ LoRA rank r must be between 1 and 512")

    message, job_id = tp.start_job(assistant, "dpo", tp.spec_values("dpo", form),
                                   "qwen2.5-coder-0.5b", ds_id)
    assert job_id is None and "needs a preference dataset" in message
    assert tp.start_job(assistant, "lora", spec, "qwen2.5-coder-0.5b", None)[1] is None
    assert assistant.training.jobs() == []  # nothing was queued


# --- jobs --------------------------------------------------------------------------------
def _write_job(data_dir: Path, job_id: str, status: str, rows: list[dict], **extra) -> Path:
    """A job folder as finetune.jobs and the worker write it."""
    folder = data_dir / "jobs" / job_id
    folder.mkdir(parents=True)
    now = time.time()
    record = {"id": job_id, "method": "lora", "spec": {"r": 8}, "base_model": "qwen2.5-coder-0.5b",
              "dataset_id": "faq-12345678", "status": status, "name": "faq", "data_dir": str(data_dir),
              "models_dir": "", "kb": "", "created": now - 100, "started": now - 90,
              "ended": 0.0, "pid": 0, "error": "", "adapter_id": "", "resume": False,
              "attempts": 1, "result": {}, "estimate": {"memory_gb": 4.2, "seconds_per_step": 2.5},
              "format_version": 1, **extra}
    (folder / "job.json").write_text(json.dumps(record), encoding="utf-8")
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "train.log").write_text("\n".join(f"log line {i}" for i in range(100)) + "\n")
    return folder


def test_jobs_table_loss_curve_log_and_actions(assistant):
    data_dir = assistant.paths.data_dir
    rows = [{"step": s, "total": 10, "loss": 2.0 - s / 10, "lr": 1e-4, "elapsed": 2.5 * s,
             "eta": 2.5 * (10 - s)} for s in (1, 2, 3)]
    rows.append({"step": 3, "total": 10, "loss": 1.65, "lr": 1e-4, "elapsed": 9.0, "eta": 17.5})
    _write_job(data_dir, "20250101-120000-aaaaaa", "succeeded", rows, ended=time.time(),
               adapter_id="lora-0123456789")
    # a "running" job whose worker is gone (the app restarted): shown as interrupted
    _write_job(data_dir, "20250101-130000-bbbbbb", "running", rows[:1], pid=999_999_999,
               created=time.time())

    table = jp.job_rows(assistant)
    assert [r[0] for r in table] == ["20250101-130000-bbbbbb", "20250101-120000-aaaaaa"]
    assert table[0][3] == "interrupted"
    assert table[1][2:6] == ["LoRA", "succeeded", "3/10", "1.6500"]
    assert table[1][6] == "9 s" and table[1][7] == "–"

    frame = jp.loss_frame(assistant, "20250101-120000-aaaaaa")
    assert frame["step"].tolist() == [1, 2, 3] and frame["loss"].tolist()[-1] == 1.65
    details, curve, log = jp.job_view(assistant, "20250101-120000-aaaaaa")
    assert "lora-0123456789" in details and "4.2 GB" in details and len(curve) == 3
    assert log.splitlines()[-1] == "log line 99" and len(log.splitlines()) == jp.LOG_LINES

    assert "only queued or running jobs" in jp.cancel_job(assistant, "20250101-120000-aaaaaa")
    assert "only interrupted, failed" in jp.resume_job(assistant, "20250101-120000-aaaaaa")
    assert jp.cancel_job(assistant, None) == "Pick a job first."

    first = jp.poll(assistant, None, None)
    assert first[1].value == "20250101-130000-bbbbbb"  # the newest job is selected
    again = jp.poll(assistant, first[1].value, first[-1])
    assert all(isinstance(x, type(gr.skip())) for x in again)  # nothing changed: no redraw


# --- adapters and the chat model menu --------------------------------------------------
def _register(assistant: Assistant, tmp_path: Path, name: str, payload: bytes):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.safetensors").write_bytes(payload)
    metrics = {"steps": 23, "train_loss": 1.2, "trainable_params": 1_081_344,
               "total_params": 494_032_768, "heldout": 20, "mode": "closed-book",
               "base": {"token_f1": 0.31, "exact": 0.05},
               "adapter": {"token_f1": 0.55, "exact": 0.25},
               "rag": {"mode": "with RAG", "base": {"token_f1": 0.6, "exact": 0.1},
                       "adapter": {"token_f1": 0.7, "exact": 0.3}},
               "samples": [{"question": "Hours?", "reference": "2-7 pm", "base": "9-5",
                            "adapter": "2-7 pm"}]}
    return AdapterRegistry(assistant.paths.data_dir / "adapters").register(
        folder, method="lora", base_model="qwen2.5-coder-0.5b", dataset_hash="d1",
        spec={"r": 8}, metrics=metrics, name=name)


def test_model_menu_lists_adapters_with_side_by_side_metrics(assistant, tmp_path):
    base = assistant.serving.chat_model()
    assert ap.model_choices(assistant) == [(f"{base} (base)", base)]
    first = _register(assistant, tmp_path, "clinic faq", b"one")
    second = _register(assistant, tmp_path, "visitor rules", b"two")  # adapters coexist
    choices = ap.model_choices(assistant)
    assert choices[0][1] == base  # then the adapters (same second: in id order)
    assert sorted(i for _, i in choices[1:]) == sorted([first.adapter_id, second.adapter_id])
    assert dict(choices)["clinic faq (lora on qwen2.5-coder-0.5b)"] == first.adapter_id

    row = next(r for r in ap.adapter_rows(assistant) if r[0] == first.adapter_id)
    assert row[1:4] == ["clinic faq", "LoRA", "qwen2.5-coder-0.5b"]
    assert row[6] == "token F1 31.0 → 55.0"
    md = ap.adapter_metrics(assistant, first.adapter_id)
    assert "| Base (closed-book) | Adapter (closed-book) | Change | Base (with RAG) |" in md
    assert "| token F1 (%) | 31.0 | 55.0 | +24.0 pts | 60.0 | 70.0 | +10.0 pts |" in md
    assert "1,081,344 trainable parameters" in md and "| Hours? | 2-7 pm | 9-5 | 2-7 pm |" in md

    # the page shows the first adapter in chat; deleting it falls back to the base model
    shown = ap.refresh(assistant, first.adapter_id, first.adapter_id, None)
    assert shown[3].value == first.adapter_id
    assert ap.refresh(assistant, first.adapter_id, first.adapter_id, shown[-1])[0] == gr.skip()
    assert ap.delete_adapter(assistant, first.adapter_id) == f"Deleted adapter {first.adapter_id}."
    after = ap.refresh(assistant, first.adapter_id, first.adapter_id, shown[-1])
    assert after[3].value == base and after[1].value == second.adapter_id
    assert [i for _, i in ap.model_choices(assistant)] == [base, second.adapter_id]
    assert "Not exported" in ap.export_adapter(assistant, "no-such-adapter", "gguf:Q8_0")


def test_chat_passes_the_chosen_model_for_the_turn(assistant):
    base = assistant.serving.chat_model()
    events = list(_respond(assistant, "", "What are the visiting hours?", [], "default", None, [],
                           base))
    history, _, _, cid, answered = events[-1]
    assert cid and len(answered) == 1
    assert assistant.conversations.turns(cid)[0].question == "What are the visiting hours?"
    events = list(_respond(assistant, "", "And on Sunday?", history, "default", cid, answered,
                           "no-such-adapter"))
    assert "No adapter 'no-such-adapter'" in events[-1][0][-1]["content"]
