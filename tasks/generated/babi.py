r"""bAbI qa1-qa3 training records in BABILong's shape: a story's facts scattered through book text.

BABILong (Kuratov et al., 2024, https://arxiv.org/abs/2406.10149) hides bAbI facts among the
sentences of a PG19 book, read from a random start. Here the stories come from lch's own simulator
(`tasks.generated.babi_story`), never from bAbI's files, and the background from `noise` books
(`tasks.generated.noise`, which refuses evaluation data), built as the `babilong` task builds its
contexts (`tasks.haystack`): the facts keep their order at seeded sentence boundaries, and the
background's last sentence is cut so that the context, facts included, is exactly `length` tokens.

Prompt: the `babilong` task's plain prompt (BABILong's configuration without instruction, the one its
fine-tuned models are trained and scored with), `<context>\n{context}\n</context>\n\nQuestion: {question}`, so
a memory trained on these records meets at evaluation (`babilong` with `prompt: plain`) the prompt it
trained on; answer: ` {place}`. Record (qa2, SmolLM2, seed 0):
    {"prompt": "<context>\nBut I must try to get a few hours' sleep, as Van Helsing is to call for me at noon.
     Sandra moved to the garden. ... Mary travelled to the office. There is no malign there\n</context>\n\n
     Question: Where is the milk?", "answer": " office", "task": "qa2", "length": 1024, "facts": ["Sandra moved to
     the garden.", "Mary went back to the garden.", "Sandra picked up the apple there.", ...], "question":
     "Where is the milk?", "book": "345_dracula.txt"}
"""

from __future__ import annotations

from typing import Any

from pydantic import model_validator

from tasks.babilong.build import render
from tasks.generated import Generator, LengthConfig, register_generator
from tasks.generated.babi_story import BabiTask, make_story
from tasks.generated.noise import load_noise
from tasks.haystack import Haystack

DEFAULT_FACTS = {"qa1": 10, "qa2": 20, "qa3": 30}
MIN_FACTS = {"qa1": 1, "qa2": 2, "qa3": 3}  # a move; a move and a pick-up; and a move while holding


class BabiDataConfig(LengthConfig):
    """`task`: qa1 (default), qa2 or qa3 (`tasks.generated.babi_story` says what each asks).

    `length`: the context's exact tokens, facts and background, without the question (default 1024),
    or `[min, max]` drawn per record. `facts`: story sentences, supporting and distracting together
    (default: 10 for qa1, 20 for qa2, 30 for qa3). `noise`: a `.txt` book or a folder of them for the
    background (default: the data dir's `books/`; PG19 test books are skipped, bAbI data refused).
    """

    task: BabiTask = "qa1"
    facts: int | None = None
    noise: str | None = None

    @model_validator(mode="after")
    def _check_facts(self) -> BabiDataConfig:
        if self.facts is not None and self.facts < MIN_FACTS[self.task]:
            raise ValueError(f"facts must be at least {MIN_FACTS[self.task]} for {self.task}, got {self.facts}")
        return self

    @property
    def story_facts(self) -> int:
        """The number of facts per story: `facts`, or the task's default."""
        return self.facts or DEFAULT_FACTS[self.task]


@register_generator("babi")
class BabiData(Generator):
    """bAbI-style stories of lch's simulator hidden in book sentences; the answer is " PLACE"."""

    description = "bAbI qa1-qa3 stories (lch's simulator) scattered in book sentences, exact tokens; answer ' PLACE'"
    Config = BabiDataConfig
    needs_tokenizer = True

    def __init__(self, config: BabiDataConfig, tokenizer=None):
        super().__init__(config, tokenizer)
        self.haystack = Haystack(tokenizer, load_noise(config.noise), "babi")

    @property
    def stream(self) -> str:
        """`babi-{task}`: the same seed gives unrelated stories for qa1, qa2 and qa3."""
        return f"babi-{self.config.task}"

    def record(self, seed: int, index: int) -> dict[str, Any]:
        """A story of `facts` facts in `length` tokens of background, its question and the answer."""
        rng = self.rng(seed, index)
        length = self.config.draw_length(rng)
        story = make_story(rng, self.config.task, self.config.story_facts)
        context, book = self.haystack.context(rng, story.facts, length)
        return {
            "prompt": render(self.config.task, context, story.question, instructed=False),
            "answer": " " + story.answer,
            "task": self.config.task,
            "length": length,
            "facts": story.facts,
            "question": story.question,
            "book": book,
        }
