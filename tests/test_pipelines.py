"""transformers pipelines on saved Hydra checkpoints (loaded as remote code) with the bert-base-uncased tokenizer."""

import pytest
import torch
from transformers import AutoTokenizer, pipeline

from conftest import TOKENIZER_DIR, tiny_config
from modeling_hydra import HydraForMaskedLM, HydraForSequenceClassification

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: threads only contend

VOCAB = 30528  # bert-base-uncased's 30522 ids padded to a multiple of 8, as the released model


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(TOKENIZER_DIR)


def test_fill_mask(tmp_path, tokenizer):
    model = HydraForMaskedLM(tiny_config(vocab_size=VOCAB)).eval()
    model.save_pretrained(tmp_path)
    fill = pipeline("fill-mask", model=str(tmp_path), tokenizer=tokenizer, trust_remote_code=True, device="cpu")
    assert type(fill.model).__module__.startswith("transformers_modules")
    text = f"the capital of france is {tokenizer.mask_token}."
    predictions = fill(text, top_k=3)

    encoded = tokenizer(text, return_tensors="pt")
    position = int((encoded.input_ids[0] == tokenizer.mask_token_id).nonzero())
    with torch.no_grad():
        logits = model(**encoded).logits[0, position]
    probs = logits.softmax(-1)
    top = probs.topk(3)
    assert [p["token"] for p in predictions] == top.indices.tolist()
    for p, score in zip(predictions, top.values.tolist()):
        assert p["score"] == pytest.approx(score, abs=1e-6)


def test_text_classification(tmp_path, tokenizer):
    labels = {0: "negative", 1: "neutral", 2: "positive"}
    config = tiny_config(vocab_size=VOCAB, num_labels=3, id2label=labels, label2id={v: k for k, v in labels.items()})
    model = HydraForSequenceClassification(config).eval()
    with torch.no_grad():  # spread the logits so that the top class is clear
        model.classifier.weight.mul_(50)
    model.save_pretrained(tmp_path)
    classify = pipeline("text-classification", model=str(tmp_path), tokenizer=tokenizer, trust_remote_code=True,
                        device="cpu")

    assert type(classify.model).__module__.startswith("transformers_modules")
    texts = ["a gripping, beautifully shot film.", "it was fine."]
    results = classify(texts)

    encoded = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        probs = model(**encoded).logits.softmax(-1)
    for result, p in zip(results, probs):
        assert result["label"] == labels[int(p.argmax())]
        assert result["score"] == pytest.approx(float(p.max()), abs=1e-6)
