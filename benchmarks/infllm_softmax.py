"""Would one fused softmax speed up InfLLM's attention? An A/B of `two_stage_attention`'s softmax on CPU.

InfLLM needs the softmax probabilities themselves (the attention each local key receives picks its block's
representative tokens), so it cannot use SDPA; today it takes the softmax over the local and the far logits
in place, as separate passes (max, subtract-exp, sum). The alternative: both logit matmuls written into one
buffer and one `torch.softmax` over it. Shapes: the embedded model at 8K (3 KV heads x 3 query heads, 512 query
rows, 2,560 local and 2,176 far keys). Prints the best of 5 per variant, twice, and the largest difference.

    OMP_NUM_THREADS=2 python benchmarks/infllm_softmax.py
"""

import time

import torch

KV_HEADS, REP, ROWS, DIM, NEAR, FAR = 3, 3, 512, 64, 2560, 2176


def separate(qn, kn, vn, qf, kf, vf):
    """Today's passes: a shared row maximum, exp in place, one sum; the local keys' received attention."""
    logits = [qn @ kn.transpose(-1, -2), qf @ kf.transpose(-1, -2)]
    peak = torch.stack([s.amax(-1) for s in logits]).amax(0)[..., None]
    for stage in logits:
        stage.sub_(peak).exp_()
    total = logits[0].sum(-1, keepdim=True) + logits[1].sum(-1, keepdim=True)
    out = (logits[0] @ vn + logits[1] @ vf) / total
    weights = total.reciprocal().unflatten(2, (-1, ROWS)).transpose(-1, -2)
    return out, (weights @ logits[0].unflatten(2, (-1, ROWS))).squeeze(-2)


def fused(qn, kn, vn, qf, kf, vf):
    """Both logit matmuls into one buffer, one `torch.softmax`."""
    logits = torch.empty(1, KV_HEADS, REP * ROWS, NEAR + FAR)
    torch.matmul(qn, kn.transpose(-1, -2), out=logits[..., :NEAR])
    torch.matmul(qf, kf.transpose(-1, -2), out=logits[..., NEAR:])
    probs = torch.softmax(logits, -1)
    near, far = probs[..., :NEAR], probs[..., NEAR:]
    return near @ vn + far @ vf, near.unflatten(2, (-1, ROWS)).sum(-2)


def best_ms(variant, inputs, repeats: int = 5) -> float:
    """The fastest of `repeats` calls, in milliseconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        variant(*inputs)
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def main() -> None:
    """Time both variants twice, alternating, and compare their results."""
    torch.manual_seed(0)
    shapes = ((REP * ROWS, 8.0), (NEAR, 1.0), (NEAR, 1.0), (REP * ROWS, 8.0), (FAR, 1.0), (FAR, 1.0))
    inputs = tuple(torch.randn(1, KV_HEADS, n, DIM) / scale for n, scale in shapes)  # queries scaled as by 1/sqrt(d)
    for variant in (separate, fused, separate, fused):
        print(f"{variant.__name__}: {best_ms(variant, inputs):.1f} ms")
    (out_a, got_a), (out_b, got_b) = separate(*inputs), fused(*inputs)
    print(f"largest difference: output {(out_a - out_b).abs().max():.1e}, received {(got_a - got_b).abs().max():.1e}")


if __name__ == "__main__":
    main()
