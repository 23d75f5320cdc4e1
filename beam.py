"""
Beam search for gpt2.py's GPT: the semantics of Hugging Face transformers' generate(num_beams=k, do_sample=False)
(transformers 5.x, generation/utils.py _beam_search). Each prompt keeps k running beams, each scored by the sum of
its new tokens' log-probabilities. Every step:
  1. every beam's next-token log-probabilities (log_softmax in float32) are added to its score, and the 2k best of
     all k * vocab continuations are kept, best first (2k, so that k go on even if k of them end);
  2. those of the first k that end in eos (at the last step: all of the first k) are finished hypotheses, scored
     sum / length ** length_penalty, length the number of new tokens, eos included; the k best are kept;
  3. the k best that did not end are the next beams, and the KV cache is reordered to follow them: a step costs
     one position per beam.
A prompt is done when it has k finished hypotheses and either early_stopping=True, or its best running beam, scored
at its current length (at max_new_tokens if early_stopping='never' and length_penalty > 0), cannot beat the worst
of them. The answer is its best finished hypothesis. At the start all k beams are the prompt, and only the first
one's continuations count (the others score -1e9), so that the k beams differ.
"""
import torch
from torch.nn import functional as F


@torch.no_grad()
def beam_search(model, idx, max_new_tokens, num_beams, eos=None, length_penalty=1.0, early_stopping=False):
    """idx (B, T) followed by each row's best hypothesis of at most max_new_tokens new tokens (a row that ends
    sooner than the longest is padded with eos). num_beams=1 is greedy decoding. The model should be in eval mode.
    Beam search cannot slide past block_size as GPT.stream does: T + max_new_tokens must fit in it."""
    (B, T), k, V, dev = idx.shape, num_beams, model.config.vocab_size, idx.device
    L, inf, stop = T + max_new_tokens, float('inf'), -1 if eos is None else eos  # stop: no token is -1
    if L > model.config.block_size:
        raise ValueError(f'beam search needs the prompt and all new tokens in one window: {T} + {max_new_tokens} '
                         f'tokens is longer than block_size={model.config.block_size}')
    if max_new_tokens == 0:
        return idx
    def head(h):  # (N, n_embd) -> (N, V) logits: padding ids are never chosen (a quantized head works too)
        return model.lm_head(h)[:, :V]

    cache = [[] for _ in model.transformer.h]
    logits = head(model.hidden(idx, cache)[:, -1]).repeat_interleave(k, 0)  # (B * k, V): the prompt once per row,
    cache = [[kv.repeat_interleave(k, 0) for kv in c] for c in cache]  # and its keys and values copied to its k beams
    seqs = torch.full((B, k, L), stop, dtype=idx.dtype, device=dev)  # running beams
    seqs[:, :, :T] = idx[:, None]
    scores = torch.full((B, k), -1e9, device=dev)  # (B, k) their sums of log-probabilities
    scores[:, 0] = 0
    done, done_scores = seqs.clone(), torch.full((B, k), -inf, device=dev)  # finished hypotheses, best first; -inf: none
    is_open = torch.ones(B, dtype=torch.bool, device=dev)  # rows whose finished hypotheses can still change
    first_k = torch.arange(2 * k, device=dev) < k
    for t in range(T, L):  # the new token goes at position t
        n = t + 1 - T  # tokens generated, this one included
        logp = F.log_softmax(logits.float(), dim=-1).view(B, k, V) + scores[:, :, None]  # (B, k, V)
        top, i = logp.view(B, k * V).topk(2 * k)  # (B, 2k) the best continuations of all beams
        beam, tok = i // V, i % V  # (B, 2k) the beam each continues, and its new token
        cand = seqs.gather(1, beam[:, :, None].expand(-1, -1, L))  # (B, 2k, L)
        cand[:, :, t] = tok
        ends = (tok == stop) | (n == max_new_tokens)  # (B, 2k)
        new = (top / n ** length_penalty).masked_fill(~(ends & first_k & is_open[:, None]), -inf)
        done_scores, j = torch.cat([done_scores, new], 1).topk(k)  # (B, k) the k best finished so far
        done = torch.cat([done, cand], 1).gather(1, j[:, :, None].expand(-1, -1, L))
        if n == max_new_tokens:
            break
        scores, j = top.masked_fill(ends, -inf).topk(k)  # (B, k) the k best that go on
        seqs, beam = cand.gather(1, j[:, :, None].expand(-1, -1, L)), beam.gather(1, j)
        length = max_new_tokens if early_stopping == 'never' and length_penalty > 0 else n
        full = done_scores[:, -1] > -inf  # (B,) rows with k finished hypotheses
        is_open &= ~full | ((early_stopping is not True) & (scores[:, 0] / length ** length_penalty > done_scores[:, -1]))
        if not is_open.any():
            break
        rows = (beam + torch.arange(B, device=dev)[:, None] * k).view(-1)  # (B * k,) the old beam of each new one
        for c in cache:
            for kv in c:  # (B * k, n_head, block_size, head_size), filled up to t
                kv[:, :, :t] = kv[:, :, :t].index_select(0, rows)
        logits = head(model.hidden(seqs[:, :, t].reshape(B * k, 1), cache, t)[:, -1])  # (B * k, V)
    out = done[:, 0]  # (B, L) the best of each row; after its end, eos
    if eos is not None:  # crop to the longest: a hypothesis has eos only at its end (if it ended early)
        L = T + min(int((out[:, T:] != eos).sum(1).max()) + 1, max_new_tokens)
    return out[:, :L]
