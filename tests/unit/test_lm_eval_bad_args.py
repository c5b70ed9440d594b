"""Bad `lm_eval --model lch --model_args`: reported as lm-eval reports its own bad `--model` (a one-line ValueError)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.lm_eval.adapter import LchLM


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("model={tiny},method=nope", "unknown method 'nope'"),
        ("model={tiny},method=streaming,windw=3", "method 'streaming': unknown option 'windw'. Valid: n_sink"),
        ("model={tiny},method=streaming,window=-5", "method 'streaming': invalid options window=-5"),
        ("model=./nowhere,method=full", "is neither a directory nor a hub id"),
        ("model={tiny},method=uio,checkpoint=./no/such/dir", "UIO checkpoint './no/such/dir' does not exist"),
    ],
)
def test_bad_model_args_raise_one_line_value_error_without_a_chain(args, message, tiny_dir):
    with pytest.raises(ValueError) as caught:
        LchLM.create_from_arg_string(args.replace("{tiny}", tiny_dir))
    text = str(caught.value)
    assert message in text and "\n" not in text
    assert caught.value.__suppress_context__  # no "During handling of the above exception" block


def test_lm_eval_cli_shows_lch_errors_as_it_shows_its_own(tiny_dir):
    """The last line of stderr is `ValueError: <one line>` for lm-eval's unknown --model and lch's unknown method."""

    def last_line(*model_args):
        command = [sys.executable, "-m", "lm_eval", *model_args, "--tasks", "lambada_openai", "--limit", "1"]
        run = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert run.returncode != 0
        return run.stderr.strip().splitlines()[-1], run.stderr

    theirs, _ = last_line("--model", "nosuchmodel")
    ours, stderr = last_line("--model", "lch", "--model_args", f"model={tiny_dir},method=nope")
    assert theirs.startswith("ValueError: Attempted to load model 'nosuchmodel'")
    assert ours.startswith("ValueError: unknown method 'nope'")
    assert "During handling of the above exception" not in stderr and "UserError" not in stderr
