"""Associative retrieval: K letter-digit pairs, then a query letter; the answer is the letter's digit.

The RMT paper's synthetic task (Bulatov et al., 2022, https://arxiv.org/abs/2207.06881, its algorithmic tasks),
from Ba et al., 2016 (https://arxiv.org/abs/1610.06258), whose example is `c9k8j3f1??c` -> `9`.
Here the pairs are separated by spaces so that each letter and each digit is one token in
SmolLM2's tokenizer (which reads `c9k8` as other pieces): the prompt is the pairs, `??`, and the
query, and the answer is the digit with no space before it, as it follows its letter in the pairs.

Record (`k` 4):
    {"prompt": "c9 k8 j3 f1 ?? k", "answer": "8", "pairs": [["c", "9"], ["k", "8"], ["j", "3"], ["f", "1"]],
     "query": "k"}

In SmolLM2's tokenizer that prompt is `c 9 ␣k 8 ␣j 3 ␣f 1 ␣? ? ␣k` and the answer `8`.
"""

from __future__ import annotations

import string
from typing import Any

from pydantic import Field

from tasks.generated import Generator, GeneratorConfig, register_generator


class AssocRetrievalConfig(GeneratorConfig):
    """`k`: letter-digit pairs per record (default 4), 1 to 26; the letters of a record are distinct."""

    k: int = Field(4, ge=1, le=26)


@register_generator("assoc-retrieval")
class AssocRetrieval(Generator):
    """Letter-digit pairs and a query letter among them; the answer is its digit."""

    description = "RMT's associative retrieval: 'c9 k8 j3 f1 ?? k' -> '8' (k pairs, letters distinct)"
    Config = AssocRetrievalConfig

    def record(self, seed: int, index: int) -> dict[str, Any]:
        """`k` distinct letters with a digit each, a query drawn among them; the answer is its digit."""
        rng = self.rng(seed, index)
        letters = rng.sample(string.ascii_lowercase, self.config.k)
        pairs = [[letter, str(rng.randrange(10))] for letter in letters]
        query = rng.randrange(self.config.k)
        prompt = " ".join(letter + digit for letter, digit in pairs) + f" ?? {letters[query]}"
        return {"prompt": prompt, "answer": pairs[query][1], "pairs": pairs, "query": letters[query]}
