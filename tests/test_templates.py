"""Label masks: exactly the assistant replies (with their end tokens) are trained on, for every template."""

import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from vinstruct.data.encoding import IGNORE_INDEX, EncodingSpec, encode_conversation, encode_prompt
from vinstruct.data.templates import TEMPLATES, get_template
from vinstruct.errors import BadSampleError, VinstructError

CONVERSATION = [
    {"from": "human", "value": "<image>\nWhat colour is the circle?"},
    {"from": "gpt", "value": "The circle is red."},
    {"from": "human", "value": "How many shapes are there?"},
    {"from": "gpt", "value": "There are 3 shapes: a circle, a star and a square."},
]

# What each template appends to a reply as its end (the model learns to emit it).
REPLY_END = {"plain": "\n", "vicuna_v1": "</s>", "llama_2": " </s>", "mistral": " </s>", "chatml": "<|im_end|>"}


def _spec(model, template, **kw):
    return EncodingSpec.for_model(model, template=template, **kw)


def _target_runs(encoded):
    """Contiguous runs of supervised token ids."""
    runs, current = [], []
    for label in encoded.labels:
        if label == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            current.append(label)
    if current:
        runs.append(current)
    return runs


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_unmasked_tokens_are_exactly_the_replies(tiny_model, template):
    tokenizer = tiny_model.tokenizer
    conversation = CONVERSATION[:2] if template == "plain" else CONVERSATION  # plain: one caption pair
    encoded = encode_conversation(_spec(tiny_model, template), conversation, num_images=1, sample_id="s1")
    replies = [t["value"] for t in conversation if t["from"] == "gpt"]
    end = REPLY_END[template].replace("</s>", tokenizer.eos_token)
    runs = [tokenizer.decode(run) for run in _target_runs(encoded)]
    # Tokens of different replies never touch (prompt text lies between them).
    assert [r.strip() for r in runs] == [(reply + end).strip() for reply in replies]
    # Image slots are masked and complete.
    image_positions = [i for i, t in enumerate(encoded.input_ids) if t == tiny_model.image_token_id]
    assert len(image_positions) == tiny_model.num_image_tokens
    assert all(encoded.labels[i] == IGNORE_INDEX for i in image_positions)


def test_plain_template_drops_the_instruction(tiny_model):
    encoded = encode_conversation(_spec(tiny_model, "plain"), CONVERSATION[:2], num_images=1, sample_id="p")
    n = tiny_model.num_image_tokens
    assert encoded.input_ids[1:1 + n] == [tiny_model.image_token_id] * n  # BOS, then the image
    text = tiny_model.tokenizer.decode(encoded.input_ids[1 + n:])
    assert text == "The circle is red.\n"


def test_vicuna_prompt_text_matches_the_official_layout(tiny_model):
    template = get_template("vicuna_v1")
    turns = [("human", "<image>\nHi"), ("gpt", "Hello."), ("human", "Bye")]
    text = template.generation_prompt(turns, None, "</s>")
    assert text.endswith("USER: <image>\nHi ASSISTANT: Hello.</s>USER: Bye ASSISTANT:")
    assert text.startswith("A chat between a curious user and an artificial intelligence assistant.")


def test_plain_template_refuses_multi_turn(tiny_model):
    with pytest.raises(BadSampleError, match="one image-caption exchange"):
        encode_conversation(_spec(tiny_model, "plain"), CONVERSATION, num_images=1, sample_id="m")


def test_system_turn_overrides_the_default_system_prompt(tiny_model):
    conv = [{"from": "system", "value": "Be brief."}] + CONVERSATION[:2]
    encoded = encode_conversation(_spec(tiny_model, "vicuna_v1"), conv, num_images=1, sample_id="sys")
    text = tiny_model.tokenizer.decode([t for t in encoded.input_ids if t != tiny_model.image_token_id])
    assert "Be brief. USER:" in text and "curious user" not in text


def test_generation_prompt_ends_where_the_assistant_speaks(tiny_model):
    ids = encode_prompt(_spec(tiny_model, "vicuna_v1"), [("human", "<image>\nWhat is it?")])
    assert tiny_model.tokenizer.decode(ids).endswith("What is it? ASSISTANT:")
    assert ids.count(tiny_model.image_token_id) == tiny_model.num_image_tokens


def test_truncation_keeps_the_image_and_cuts_the_tail(tiny_model):
    long_conv = CONVERSATION[:1] + [{"from": "gpt", "value": "red " * 600}]
    spec = _spec(tiny_model, "vicuna_v1", max_length=200)
    encoded = encode_conversation(spec, long_conv, num_images=1, sample_id="long")
    assert len(encoded.input_ids) == 200
    assert encoded.input_ids.count(tiny_model.image_token_id) == tiny_model.num_image_tokens
    assert encoded.num_targets > 0


def test_a_sample_whose_image_cannot_fit_is_refused(tiny_model):
    spec = _spec(tiny_model, "vicuna_v1", max_length=20)
    with pytest.raises(BadSampleError, match=r"sample 'big': cannot fit its image"):
        encode_conversation(spec, CONVERSATION, num_images=1, sample_id="big")


@pytest.mark.parametrize(
    "conversation, images, message",
    [
        ([], 1, "empty conversation"),
        ([{"from": "human", "value": "<image> hi"}, {"from": "gpt", "value": "<image> no"}], 1, "assistant"),
        ([{"from": "human", "value": "<image><image> hi"}, {"from": "gpt", "value": "x"}], 1, "2 <image> marker"),
        ([{"from": "human", "value": "hi"}, {"from": "gpt", "value": "x"}], 1, "0 <image> marker"),
        ([{"from": "gpt", "value": "x"}], 0, "expected a 'human' turn"),
        ([{"from": "human"}], 0, "'from' and 'value'"),
    ],
)
def test_bad_conversations_name_the_sample(tiny_model, conversation, images, message):
    with pytest.raises(BadSampleError) as err:
        encode_conversation(_spec(tiny_model, "vicuna_v1"), conversation, num_images=images, sample_id="bad-7")
    assert "sample 'bad-7'" in str(err.value) and message in str(err.value)


def test_unknown_template_is_a_clear_error():
    with pytest.raises(VinstructError, match="unknown chat template 'vicuna2'"):
        get_template("vicuna2")


def _metaspace_tokenizer(texts):
    """A sentencepiece-style tokenizer (Metaspace "▁" prefix), like Llama/Vicuna's."""
    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.normalizer = normalizers.Sequence([])
    core.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    core.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    core.train_from_iterator(texts, trainer=trainer)
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                  pad_token="<unk>")
    tok.add_tokens(["<image>"], special_tokens=True)
    return tok


@pytest.mark.parametrize("mode", ["joined", "chunks"])
def test_masks_with_a_sentencepiece_style_tokenizer(mode):
    texts = [t["value"] for t in CONVERSATION] * 20 + ["USER: ASSISTANT: A chat between a curious user"] * 5
    tok = _metaspace_tokenizer(texts)
    spec = EncodingSpec(tokenizer=tok, image_token_id=tok.convert_tokens_to_ids("<image>"), num_image_tokens=4,
                        template="vicuna_v1", tokenization=mode)
    encoded = encode_conversation(spec, CONVERSATION, num_images=1, sample_id="sp")
    runs = [tok.decode(r).strip() for r in _target_runs(encoded)]
    assert runs == ["The circle is red.</s>", "There are 3 shapes: a circle, a star and a square.</s>"]


def test_chunks_mode_tokenizes_text_after_the_image_on_its_own():
    texts = ["hello world the image shows"] * 30
    tok = _metaspace_tokenizer(texts)
    image_id = tok.convert_tokens_to_ids("<image>")
    joined = EncodingSpec(tokenizer=tok, image_token_id=image_id, num_image_tokens=1, template="plain")
    chunks = EncodingSpec(tokenizer=tok, image_token_id=image_id, num_image_tokens=1, template="plain",
                          tokenization="chunks")
    from vinstruct.data.encoding import encode_text

    segments = [("hello <image>world", False)]
    a, b = encode_text(joined, segments).input_ids, encode_text(chunks, segments).input_ids
    # The chunk after the image starts with its own prefix-space token in "chunks" mode only.
    after_a = tok.convert_ids_to_tokens(a[a.index(image_id) + 1:])
    after_b = tok.convert_ids_to_tokens(b[b.index(image_id) + 1:])
    assert after_b[0].startswith("▁") and not after_a[0].startswith("▁")
    assert b.count(tok.bos_token_id) == 1
