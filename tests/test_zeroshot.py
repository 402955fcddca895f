"""Zero-shot accuracy through lm-eval (``dsa eval --tasks``), offline, on a tiny random LLaMA and the
local yes/no task of tests/data/zeroshot (boolq's format, 16 examples written for these tests)."""
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from conftest import TINY_VOCAB, make_tiny_llama

pytest.importorskip("lm_eval")

from dsa.errors import UserError  # noqa: E402
from dsa.cli import main as cli_main  # noqa: E402
from dsa.outputs.zeroshot import PAPER_TASKS, parse_tasks, task_manager, zero_shot  # noqa: E402

TASKS = Path(__file__).parent / "data" / "zeroshot"
DATA = TASKS / "tiny_yesno.jsonl"
CHOICES = ["no", "yes"]  # tiny_yesno.yaml's doc_to_choice: label 0 = "no"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def rows(path=DATA):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def prompt(row):  # tiny_yesno.yaml's doc_to_text
    return f"{row['passage']}\nQuestion: {row['question']}?\nAnswer:"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(folder, model, tokenizer): a tiny LLaMA whose word-level, lower-casing tokenizer knows every
    word of the task, so that prompts and the two answers are distinct tokens (no [UNK] ties)."""
    words = sorted({w for row in rows() for w in re.findall(r"\w+|[^\w\s]+", prompt(row).lower())} | set(CHOICES))
    assert len(words) < TINY_VOCAB - 1
    tok = Tokenizer(models.WordLevel({"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    root = tmp_path_factory.mktemp("zeroshot") / "model"
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(root)
    make_tiny_llama(seed=3, layers=2).save_pretrained(root)
    tokenizer = AutoTokenizer.from_pretrained(root)
    assert tokenizer.unk_token_id not in tokenizer(prompt(rows()[0]) + " yes").input_ids
    return root, AutoModelForCausalLM.from_pretrained(root).eval(), tokenizer


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Offline for real: any connection attempt fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:]}")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_task(folder: Path, name: str, data: list[dict], extra: str = "") -> None:
    """A copy of tiny_yesno under another name, on other rows (an lm-eval `include` of the YAML)."""
    (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))
    (folder / f"{name}.yaml").write_text(f"include: {TASKS / 'tiny_yesno.yaml'}\ntask: {name}\n"
                                         f"dataset_kwargs:\n  data_file: {folder / (name + '.jsonl')}\n{extra}")


def choice_logprobs(model, tokenizer, row) -> list[float]:
    """log p(choice | prompt), summed over the choice's tokens: computed here, not by lm-eval."""
    context = tokenizer(prompt(row)).input_ids
    out = []
    for choice in CHOICES:
        target = tokenizer(choice).input_ids
        ids = torch.tensor([context + target])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
        out.append(sum(float(logp[len(context) - 1 + i, t]) for i, t in enumerate(target)))
    return out


def test_accuracy_counts_and_mean(tiny, tmp_path):
    _, model, tokenizer = tiny
    flipped = [{**r, "label": 1 - r["label"]} for r in rows()]
    write_task(tmp_path, "tiny_flipped", flipped, "metric_list:\n  - metric: acc\n  - metric: acc_norm\n")
    result = zero_shot(model, tokenizer, ["tiny_yesno", "tiny_flipped"], batch_size=4,
                       include_path=[TASKS, tmp_path])
    acc, acc_flipped = (result["tasks"][t]["acc"] for t in ("tiny_yesno", "tiny_flipped"))
    assert 0.0 <= acc <= 1.0 and result["tasks"]["tiny_yesno"]["n"] == len(rows()) == 16
    assert acc_flipped == pytest.approx(1 - acc)  # every answer flipped: each hit becomes a miss
    assert result["mean_acc"] == pytest.approx((acc + acc_flipped) / 2) == pytest.approx(0.5)
    assert result["metric"] == "acc" and "acc_norm" not in result["tasks"]["tiny_yesno"]
    assert 0 <= result["tasks"]["tiny_flipped"]["acc_norm"] <= 1  # reported where the task has it, not averaged

    limited = zero_shot(model, tokenizer, ["tiny_yesno"], limit=5, include_path=TASKS)
    assert limited["tasks"]["tiny_yesno"]["n"] == 5 and limited["limit"] == 5


def test_accuracy_matches_own_loglikelihoods(tiny, tmp_path):
    """lm-eval's acc is the argmax of the choices' log-likelihoods: relabel the rows with the answer
    this model prefers (computed here) → acc 1; with the one it rejects → acc 0; the real labels →
    the share of rows where the preferred answer is the label."""
    _, model, tokenizer = tiny
    data = rows()
    preferred = [max(range(2), key=lambda c: lp[c]) for lp in (choice_logprobs(model, tokenizer, r) for r in data)]
    assert 0 < sum(preferred) < len(data), "a degenerate model prefers one answer everywhere"
    write_task(tmp_path, "tiny_preferred", [{**r, "label": p} for r, p in zip(data, preferred)])
    write_task(tmp_path, "tiny_rejected", [{**r, "label": 1 - p} for r, p in zip(data, preferred)])
    result = zero_shot(model, tokenizer, ["tiny_yesno", "tiny_preferred", "tiny_rejected"], batch_size=3,
                       include_path=f"{TASKS},{tmp_path}")["tasks"]
    assert result["tiny_preferred"]["acc"] == 1.0 and result["tiny_rejected"]["acc"] == 0.0
    mine = sum(p == r["label"] for p, r in zip(preferred, data)) / len(data)
    assert result["tiny_yesno"]["acc"] == pytest.approx(mine)


def test_task_names():
    paper = "boolq,rte,hellaswag,winogrande,arc_easy,arc_challenge,openbookqa"
    assert parse_tasks("paper") == list(PAPER_TASKS) == parse_tasks(paper) == paper.split(",")
    assert parse_tasks(" boolq, rte ,boolq") == ["boolq", "rte"]
    with pytest.raises(UserError, match="empty"):
        parse_tasks(" , ")
    for text in ("boolq,,rte", "boolq,", ",rte"):  # an empty item is refused, not dropped
        with pytest.raises(UserError, match="has an empty item"):
            parse_tasks(text)
    with pytest.raises(UserError, match="folder not found"):
        task_manager(["tiny_yesno"], TASKS / "missing")
    assert cli_main(["eval", "--no-perplexity"]) == 2  # nothing to evaluate (test_cli_errors checks the line)


def test_lm_eval_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as if not installed
    with pytest.raises(UserError, match=re.escape("pip install -e .[zeroshot]")):
        task_manager(["tiny_yesno"], TASKS)
    code = "import sys, dsa.cli, dsa.run.llm, dsa.outputs.zeroshot; assert 'lm_eval' not in sys.modules"  # imported lazily
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent.parent).returncode == 0


def dsa(*args):
    return subprocess.run([sys.executable, "-m", "dsa.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=Path(__file__).parent.parent,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **OFFLINE})


def test_cli_eval_tasks(tiny, tmp_path):
    root, model, tokenizer = tiny
    text = tmp_path / "text.txt"
    text.write_text("\n".join(prompt(r) + " " + CHOICES[r["label"]] for r in rows() * 4))
    report = tmp_path / "eval.json"
    out = dsa("eval", "--model", root, "--data", text, "--calib", text, "--seqlen", 32, "--nsamples", 2,
              "--calib-seqlen", 32, "--allocation", "uniform", "--sparsity", 0.5, "--tasks", "tiny_yesno",
              "--tasks-path", TASKS, "--zeroshot-limit", 12, "--json", report, "--no-progress")
    assert out.returncode == 0, out.stderr
    result = json.loads(report.read_text())
    assert result["perplexity"] > 1 and result["allocation"] == "uniform"
    zs = result["zeroshot"]
    assert zs["tasks"]["tiny_yesno"]["n"] == 12 and 0 <= zs["mean_acc"] <= 1
    assert zs["mean_acc"] == zs["tasks"]["tiny_yesno"]["acc"]


def test_cli_unknown_task(tiny):
    root, _, _ = tiny
    out = dsa("eval", "--model", root, "--no-perplexity", "--tasks", "tiny_yesno,boolqq", "--tasks-path", TASKS)
    assert out.returncode == 2, out.stderr
    assert "unknown lm-eval task: boolqq (list the names with `lm-eval ls tasks`" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Loading" not in out.stderr  # before loading the model
