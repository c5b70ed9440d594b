"""Passkey instances: exact token length, needle placement by depth, determinism, and the scoring rule."""

from __future__ import annotations

import pytest
import torch

from methods.base import LongContextModel
from tasks.base import TASKS
from tasks.passkey import NEEDLE


def passkey(tokenizer, **options):
    cls = TASKS.get("passkey")
    return cls(cls.Config(**options), tokenizer)


@pytest.mark.parametrize("length", [300, 777, 2048])
def test_length_is_exact_in_tokens(length, tiny_llama):
    task = passkey(tiny_llama[1], depths=[0.0, 0.3, 1.0])
    for instance in task.instances(length, 3, seed=0):
        assert len(instance.input_ids) == length


def test_needle_position_follows_depth(tiny_llama):
    tokenizer = tiny_llama[1]
    instances = passkey(tokenizer, depths=[0.0, 0.5, 1.0]).instances(1000, 3, seed=0)
    starts = [i.metadata["needle_token"] for i in instances]
    assert starts[0] < starts[1] < starts[2]
    for instance in instances:
        text = tokenizer.decode(instance.input_ids)
        assert NEEDLE.format(key=instance.target) in text
    last = tokenizer.decode(instances[2].input_ids)
    assert last.index(NEEDLE.format(key=instances[2].target)) > len(last) - 120  # depth 1: just before the question


def test_instances_are_deterministic_and_prefix_stable(tiny_llama):
    task = passkey(tiny_llama[1])
    five = task.instances(500, 5, seed=7)
    two = task.instances(500, 2, seed=7)
    assert [i.input_ids for i in two] == [i.input_ids for i in five[:2]]
    assert [i.target for i in task.instances(500, 5, seed=8)] != [i.target for i in five]
    assert all(len(i.target) == 5 and i.target.isdigit() for i in five)
    assert [i.metadata["depth"] for i in five] == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_too_short_length_is_an_error(tiny_llama):
    with pytest.raises(ValueError, match="too short"):
        passkey(tiny_llama[1]).instances(50, 1, seed=0)


def test_bad_depths_rejected():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="depths"):
        TASKS.get("passkey").Config(depths=[1.5])


class Parrot(LongContextModel):
    """Answers a fixed text, to test scoring without a model."""

    def __init__(self, tokenizer, answer: str):
        self.tokenizer = tokenizer
        self.answer = answer

    def reset(self):
        pass

    def score(self, input_ids):
        return torch.zeros(len(input_ids) - 1)

    def prefill(self, input_ids):
        self.prompt = input_ids

    def decode(self, max_new_tokens, stop_ids):
        return self.tokenizer(self.answer, add_special_tokens=False).input_ids[:max_new_tokens]

    def state_bytes(self):
        return 0


@pytest.mark.parametrize(
    ("answer", "accuracy", "contains"),
    [(" {key}.", 1.0, 1.0), (" 1{key}", 0.0, 1.0), (" is 12 and {key}", 0.0, 1.0), (" no idea", 0.0, 0.0)],
)
def test_score_is_first_integer_equals_key(answer, accuracy, contains, tiny_llama):
    task = passkey(tiny_llama[1], max_new_tokens=30)
    instance = task.instances(400, 1, seed=0)[0]
    score = task.evaluate(Parrot(tiny_llama[1], answer.format(key=instance.target)), instance)
    assert score.metrics == {"accuracy": accuracy, "contains": contains}
    assert score.score == accuracy
