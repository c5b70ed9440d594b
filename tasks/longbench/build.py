"""LongBench v1 records, official prompts and generation budgets, truncation, and where the data lives.

Source: THUDM/LongBench @ 2e00731f (`LongBench/pred.py`, `LongBench/config/dataset2prompt.json`,
`dataset2maxlen.json`, `model2maxlen.json`). The prompt
templates below are data copied byte for byte (quirks such as "asconcisely" included); the unit test
`tests/unit/test_longbench_prompts.py` compares them with the official JSON kept in `tests/golden/longbench/`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from harness.core.errors import UserError
from tasks.data import data_dir as data_dir_of

Truncation = Literal["middle", "left", "none", "skip"]

# Official dataset order (pred.py); the 16 English datasets are the ones without "zh" / dureader / vcsum / lsht.
DATASETS = (
    "narrativeqa", "qasper", "multifieldqa_en", "multifieldqa_zh", "hotpotqa", "2wikimqa", "musique",
    "dureader", "gov_report", "qmsum", "multi_news", "vcsum", "trec", "triviaqa", "samsum", "lsht",
    "passage_count", "passage_retrieval_en", "passage_retrieval_zh", "lcc", "repobench-p",
)  # fmt: skip

# config/dataset2prompt.json (THUDM/LongBench @ 2e00731f), byte-exact.
PROMPTS = {
    "narrativeqa": "You are given a story, which can be either a novel or a movie script, and a question. Answer the question asconcisely as you can, using a single phrase if possible. Do not provide any explanation.\n\nStory: {context}\n\nNow, answer the question based on the story asconcisely as you can, using a single phrase if possible. Do not provide any explanation.\n\nQuestion: {input}\n\nAnswer:",  # noqa: E501
    "qasper": 'You are given a scientific article and a question. Answer the question as concisely as you can, using a single phrase or sentence if possible. If the question cannot be answered based on the information in the article, write "unanswerable". If the question is a yes/no question, answer "yes", "no", or "unanswerable". Do not provide any explanation.\n\nArticle: {context}\n\n Answer the question based on the above article as concisely as you can, using a single phrase or sentence if possible. If the question cannot be answered based on the information in the article, write "unanswerable". If the question is a yes/no question, answer "yes", "no", or "unanswerable". Do not provide any explanation.\n\nQuestion: {input}\n\nAnswer:',  # noqa: E501
    "multifieldqa_en": "Read the following text and answer briefly.\n\n{context}\n\nNow, answer the following question based on the above text, only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:",  # noqa: E501
    "multifieldqa_zh": "阅读以下文字并用中文简短回答：\n\n{context}\n\n现在请基于上面的文章回答下面的问题，只告诉我答案，不要输出任何其他字词。\n\n问题：{input}\n回答：",  # noqa: E501
    "hotpotqa": "Answer the question based on the given passages. Only give me the answer and do not output any other words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the given passages. Only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:",  # noqa: E501
    "2wikimqa": "Answer the question based on the given passages. Only give me the answer and do not output any other words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the given passages. Only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:",  # noqa: E501
    "musique": "Answer the question based on the given passages. Only give me the answer and do not output any other words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the given passages. Only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:",  # noqa: E501
    "dureader": "请基于给定的文章回答下述问题。\n\n文章：{context}\n\n请基于上述文章回答下面的问题。\n\n问题：{input}\n回答：",  # noqa: E501
    "gov_report": "You are given a report by a government agency. Write a one-page summary of the report.\n\nReport:\n{context}\n\nNow, write a one-page summary of the report.\n\nSummary:",  # noqa: E501
    "qmsum": "You are given a meeting transcript and a query containing a question or instruction. Answer the query in one or more sentences.\n\nTranscript:\n{context}\n\nNow, answer the query based on the above meeting transcript in one or more sentences.\n\nQuery: {input}\nAnswer:",  # noqa: E501
    "multi_news": "You are given several news passages. Write a one-page summary of all news. \n\nNews:\n{context}\n\nNow, write a one-page summary of all the news.\n\nSummary:",  # noqa: E501
    "vcsum": "下面有一段会议记录，请你阅读后，写一段总结，总结会议的内容。\n会议记录：\n{context}\n\n会议总结：",  # noqa: E501
    "trec": "Please determine the type of the question below. Here are some examples of questions.\n\n{context}\n{input}",  # noqa: E501
    "triviaqa": "Answer the question based on the given passage. Only give me the answer and do not output any other words. The following are some examples.\n\n{context}\n\n{input}",  # noqa: E501
    "samsum": "Summarize the dialogue into a few short sentences. The following are some examples.\n\n{context}\n\n{input}",  # noqa: E501
    "lsht": "请判断给定新闻的类别，下面是一些例子。\n\n{context}\n{input}",
    "passage_count": "There are some paragraphs below sourced from Wikipedia. Some of them may be duplicates. Please carefully read these paragraphs and determine how many unique paragraphs there are after removing duplicates. In other words, how many non-repeating paragraphs are there in total?\n\n{context}\n\nPlease enter the final count of unique paragraphs after removing duplicates. The output format should only contain the number, such as 1, 2, 3, and so on.\n\nThe final answer is: ",  # noqa: E501
    "passage_retrieval_en": 'Here are 30 paragraphs from Wikipedia, along with an abstract. Please determine which paragraph the abstract is from.\n\n{context}\n\nThe following is an abstract.\n\n{input}\n\nPlease enter the number of the paragraph that the abstract is from. The answer format must be like "Paragraph 1", "Paragraph 2", etc.\n\nThe answer is: ',  # noqa: E501
    "passage_retrieval_zh": '以下是若干段落文字，以及其中一个段落的摘要。请确定给定的摘要出自哪一段。\n\n{context}\n\n下面是一个摘要\n\n{input}\n\n请输入摘要所属段落的编号。答案格式必须是"段落1"，"段落2"等格式\n\n答案是：',  # noqa: E501
    "lcc": "Please complete the code given below. \n{context}Next line of code:\n",
    "repobench-p": "Please complete the code given below. \n{context}{input}Next line of code:\n",
}

# config/dataset2maxlen.json: new-token budget per dataset.
MAX_NEW_TOKENS = {
    "narrativeqa": 128, "qasper": 128, "multifieldqa_en": 64, "multifieldqa_zh": 64, "hotpotqa": 32,
    "2wikimqa": 32, "musique": 32, "dureader": 128, "gov_report": 512, "qmsum": 512, "multi_news": 512,
    "vcsum": 512, "trec": 64, "triviaqa": 32, "samsum": 128, "lsht": 64, "passage_count": 32,
    "passage_retrieval_en": 32, "passage_retrieval_zh": 32, "lcc": 64, "repobench-p": 64,
}  # fmt: skip

# pred.py: "chat models are better off without build prompts on these tasks".
NO_CHAT = frozenset({"trec", "triviaqa", "samsum", "lsht", "lcc", "repobench-p"})

# config/model2maxlen.json gives 3500 prompt tokens for the 4K chat models (llama2-7b-chat-4k).
DEFAULT_MAX_LENGTH = 3500

HUB_ZIP = "https://huggingface.co/datasets/THUDM/LongBench/resolve/main/data.zip"
REQUIRED_FIELDS = ("input", "context", "answers")


def local_file(dataset: str, data_dir: str | None = None) -> Path | None:
    """`<dir>/longbench/<dataset>.jsonl` or `<dir>/<dataset>.jsonl`; None means "fetch from the hub".

    A data directory named explicitly (`data_dir` or `$LCH_DATA_DIR`) must hold the file; only when no
    directory was named and the default one lacks it are the records fetched from the hub.

    Raises:
        UserError: the named directory is missing or lacks the file.

    """
    root = data_dir_of(data_dir)
    if root is None:
        return None
    for path in (root / "longbench" / f"{dataset}.jsonl", root / f"{dataset}.jsonl"):
        if path.is_file():
            return path
    if data_dir or os.environ.get("LCH_DATA_DIR"):
        raise UserError(f"LongBench '{dataset}': no {dataset}.jsonl in {root}/longbench or {root}")
    return None


def load_records(dataset: str, n: int, data_dir: str | None = None) -> list[dict[str, Any]]:
    """Read the first `n` records of `dataset` from its `local_file`, else from the hub."""
    path = local_file(dataset, data_dir)
    return _read_jsonl(path, n) if path is not None else _hub_records(dataset, n)


def _read_jsonl(path: Path, n: int) -> list[dict[str, Any]]:
    records = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if len(records) >= n:
                break
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise UserError(f"{path}:{number}: not valid JSON ({error.msg})") from None
            missing = [key for key in REQUIRED_FIELDS if key not in record]
            if missing:
                raise UserError(f"{path}:{number}: LongBench record lacks field(s) {', '.join(missing)}")
            records.append(record)
    return records


def _hub_records(dataset: str, n: int) -> list[dict[str, Any]]:
    """Read `data/<dataset>.jsonl` inside the hub's `data.zip` through `datasets`.

    `load_dataset("THUDM/LongBench", name)` needs the repo's loading script, which datasets>=4 refuses;
    the JSON builder over the zip member reads the same records (the fix lm-eval made for SCROLLS,
    EleutherAI/lm-evaluation-harness#3975).
    """
    try:
        from datasets import load_dataset

        rows = load_dataset("json", data_files={"test": f"zip://data/{dataset}.jsonl::{HUB_ZIP}"}, split="test")
    except Exception as error:  # noqa: BLE001 - any hub failure (offline, missing) is reported as one line
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(
            f"LongBench '{dataset}': no local file (set data_dir or LCH_DATA_DIR) and the hub download failed: {first}"
        ) from None
    return [dict(rows[i]) for i in range(min(n, len(rows)))]


def render_prompt(dataset: str, record: dict[str, Any]) -> str:
    """Render the official prompt: `dataset2prompt[dataset].format(**record)`."""
    return PROMPTS[dataset].format(**record)


def split_prompt(dataset: str, record: dict[str, Any]) -> tuple[str, str]:
    """The official prompt cut after its context: (instruction and context, what follows: question and answer cue).

    Every template puts `{context}` before `{input}`, so the second part holds the question when there is one.
    """
    template = PROMPTS[dataset]
    end = template.index("{context}") + len("{context}")
    return template[:end].format(**record), template[end:].format(**record)


def truncate(ids: list[int], budget: int, mode: Truncation) -> list[int]:
    """Fit prompt token ids into `budget` tokens.

    `middle` (official, also used to build `skip` instances): keep the first and the last
    `int(budget / 2)` tokens, since instructions sit at both ends of every template. `left`: keep the
    last `budget` tokens. `none`: keep everything.
    """
    if mode == "none" or len(ids) <= budget:
        return list(ids)
    if mode == "left":
        return list(ids[len(ids) - budget :])
    half = budget // 2
    return list(ids[:half]) + list(ids[len(ids) - half :])  # not ids[-half:], which is everything when half == 0


def use_chat_template(dataset: str, policy: Literal["auto", "on", "off"], tokenizer) -> bool:
    """Official rule for `auto`: chat template except on `NO_CHAT`, and only if the tokenizer has one.

    `on` applies it to every dataset (and needs a template); `off` never applies it.
    """
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if policy == "off":
        return False
    if policy == "on":
        if not has_template:
            raise UserError("chat_template=on, but the tokenizer has no chat template (use auto or off)")
        return True
    return has_template and dataset not in NO_CHAT
