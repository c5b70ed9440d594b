"""lch's own bAbI-style world simulator (Weston et al., 2015, https://arxiv.org/abs/1502.05698), tasks qa1-qa3.

Four people move between six places and pick up and drop three objects, with bAbI's vocabulary;
no bAbI file is read. A story is a list of facts (sentences) and one question about its end:

* qa1 (single supporting fact): people only move; "Where is Mary?" -> her last place.
* qa2 (two supporting facts): "Where is the football?" -> the place of its holder when last held,
  or the place where it was dropped.
* qa3 (three supporting facts): "Where was the football before the kitchen?" -> the place the object
  was in just before it last came into the kitchen (an object's places change as its holder moves).

Sentences: "Mary went to the kitchen.", "Mary grabbed the football there.", "Mary dropped the football."
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

PEOPLE = ("Mary", "John", "Daniel", "Sandra")
PLACES = ("bathroom", "hallway", "kitchen", "garden", "office", "bedroom")
OBJECTS = ("football", "apple", "milk")
MOVES = ("moved to", "went to", "journeyed to", "travelled to", "went back to")
PICKS = ("got", "grabbed", "picked up", "took")
DROPS = ("dropped", "discarded", "put down", "left")
BabiTask = Literal["qa1", "qa2", "qa3"]


@dataclass
class Story:
    """The facts in order, the question, and its answer (one word, a place)."""

    facts: list[str]
    question: str
    answer: str


@dataclass
class World:
    """Where each person is, who holds each object, and the places each object has been in, in order."""

    person_at: dict[str, str] = field(default_factory=dict)
    holder: dict[str, str] = field(default_factory=dict)
    trail: dict[str, list[str]] = field(default_factory=dict)  # an object's places; its last one is where it is

    def step(self, rng: random.Random, objects: bool) -> str:
        """Let one thing happen (a move; with `objects`, also a pick-up or a drop); return its sentence."""
        located = [person for person in PEOPLE if person in self.person_at]
        picks = [
            (person, thing)
            for person in located
            for thing in OBJECTS
            if thing not in self.holder
            and self.trail.get(thing, [self.person_at[person]])[-1] == self.person_at[person]
        ]
        drops = sorted((person, thing) for thing, person in self.holder.items())
        kinds = ["move", "move"] + (["pick"] if objects and picks else []) + (["drop"] if objects and drops else [])
        kind = rng.choice(kinds)
        if kind == "pick":
            person, thing = rng.choice(picks)
            self.holder[thing] = person
            self.trail.setdefault(thing, [self.person_at[person]])
            return f"{person} {rng.choice(PICKS)} the {thing} there."
        if kind == "drop":
            person, thing = rng.choice(drops)
            del self.holder[thing]
            return f"{person} {rng.choice(DROPS)} the {thing}."
        person = rng.choice(PEOPLE)
        place = rng.choice([place for place in PLACES if place != self.person_at.get(person)])
        self.person_at[person] = place
        for thing, holder in self.holder.items():
            if holder == person:
                self.trail[thing].append(place)
        return f"{person} {rng.choice(MOVES)} the {place}."

    def question(self, rng: random.Random, task: BabiTask) -> tuple[str, str] | None:
        """A question of `task` about the world now and its answer, or None when there is none to ask."""
        if task == "qa1":
            people = [person for person in PEOPLE if person in self.person_at]
            if not people:
                return None
            person = rng.choice(people)
            return f"Where is {person}?", self.person_at[person]
        if task == "qa2":
            things = [thing for thing in OBJECTS if thing in self.trail]
            if not things:
                return None
            thing = rng.choice(things)
            return f"Where is the {thing}?", self.trail[thing][-1]
        # qa3: a place the object came into (not where it started), at its last coming there.
        visits = [
            (thing, index)
            for thing, trail in sorted(self.trail.items())
            for index in range(1, len(trail))
            if trail[index] not in trail[index + 1 :]
        ]
        if not visits:
            return None
        thing, index = rng.choice(visits)
        trail = self.trail[thing]
        return f"Where was the {thing} before the {trail[index]}?", trail[index - 1]


def make_story(rng: random.Random, task: BabiTask, facts: int) -> Story:
    """A story of `facts` sentences ending in a question of `task` that they answer.

    A story without such a question (qa3 needs an object carried into a second place) is drawn again.
    """
    for _ in range(1000):
        world = World()
        sentences = [world.step(rng, objects=task != "qa1") for _ in range(facts)]
        asked = world.question(rng, task)
        if asked is not None:
            return Story(sentences, *asked)
    raise ValueError(f"no {task} story of {facts} facts has a question; give more facts")
