"""The demo notebooks, as code: their cells, and how they are executed.

``python notebooks/demos.py`` writes ``kv_attention.ipynb`` and
``quickstart.ipynb`` from the cells below and executes them, the way the
saved outputs are explained in the notebooks themselves:

1. a cold Run All of a variant with one cell edited (the temperature, the
   revenue period), in a fresh kernel against an empty cache;
2. a kernel restart and a Run All of the notebook as written: what was not
   edited is restored, the edited cell and its dependents run; these are the
   outputs saved in the ``.ipynb``;
3. a restart and a Run All again: everything restored (the warm time).

Cold and warm times are printed (the sum of the cells' execution times,
kernel start-up excluded).  Each cell has a stable id, sent with every
execute request as JupyterLab does (nbclient alone sends none), so
``%incrcell why`` says "source changed" exactly as it would in JupyterLab.

``execute`` is also what ``tests/test_notebooks.py`` uses.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
KV_PATH = HERE / "kv_attention.ipynb"
QUICKSTART_PATH = HERE / "quickstart.ipynb"

#: Training steps of the quick variant the tests run (the default is in the notebook).
QUICK_STEPS = "80"


def md(cell_id: str, text: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_markdown_cell(text.strip("\n"))
    cell.id = cell_id
    return cell


def code(cell_id: str, text: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(text.strip("\n"))
    cell.id = cell_id
    return cell


# ---------------------------------------------------------------------------
# kv_attention.ipynb
# ---------------------------------------------------------------------------

KV_CELLS = [
    md("title", r"""
# KV-cached attention, and why incrcell is the same idea

A small decoder-only transformer in plain numpy: token embeddings, multi-head
causal self-attention, an MLP, layer norm, a hand-written backward pass and
Adam, trained on a character-level corpus the notebook generates itself
(nothing is downloaded).

A transformer writes text one token at a time, and token *t+1* attends to every
token before it. Without a cache, each new token runs the whole sequence through
the model again: the keys and values of the prefix are recomputed at every
step. A **KV cache** keeps each layer's keys and values, so generating token
*t+1* only computes them, and the attention, for the new token. Work already
done for a prefix is never redone.

**incrcell does the same for this notebook.** Each cell is keyed by its source
and the content of everything it reads; a cell whose key is in the cache is not
run: its variables and outputs are restored.

**Try it.** Run All: the training cell takes under a minute (on a 2-core VM).
Restart the kernel and Run All again: every cell comes back from the cache with
a small *restored by incrcell* note, in about a second in total. Then change
`temperature`, restart, Run All: the training is restored in milliseconds and
only the two generation cells run. `%incrcell status`, at the end, shows it.

*The outputs saved in this file come from exactly that last step:* a first Run
All with `temperature = 1.0`, a kernel restart, `temperature` set to `0.8`,
Run All. That is why the training cell says *restored by incrcell* while the
generation cells show fresh text.
"""),
    code("load", "%load_ext incrcell"),
    md("settings-md", r"""
## Settings

`INCRCELL_DEMO_STEPS=80` in the environment gives a quick run (the tests use
it); the default trains for real. incrcell keys a cell that reads an environment
variable on its value: set another number of steps and the training runs again.
"""),
    code("settings", r"""
import os

STEPS = int(os.environ.get("INCRCELL_DEMO_STEPS", "600"))
print(f"training steps: {STEPS}")
"""),
    code("setup", r"""
import time

import matplotlib.pyplot as plt
import numpy as np

SEED = 1337
N_LAYER, N_HEAD, D_MODEL = 2, 4, 64  # two blocks, four heads of 16 dimensions each
BLOCK = 64                           # the context the model is trained on, in characters
BATCH, LR, WARMUP = 16, 1e-2, 50
"""),
    md("data-md", r"""
## Data: a character-level corpus

Sentences from a tiny grammar (subject, verb, object, sometimes a place or a
second verb), generated with a fixed seed. The vocabulary is the set of
characters.
"""),
    code("data", r"""
def make_corpus(n_sentences, rng):
    subjects = ["the cat", "the dog", "a small bird", "my old friend", "the queen", "a tired robot",
                "the baker", "our teacher", "the fox", "a young girl", "the farmer", "an old man"]
    verbs = ["sees", "likes", "follows", "paints", "finds", "remembers", "carries", "chases",
             "hides", "wants"]
    objects = ["the moon", "a red ball", "the river", "an apple", "the little boat", "a secret",
               "the garden", "some bread", "a blue kite", "the key"]
    places = ["in the morning", "at night", "by the sea", "under the bridge", "after the rain",
              "near the old mill", "in the snow", "before dinner"]
    sentences = []
    for _ in range(n_sentences):
        sentence = f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}"
        if rng.random() < 0.6:
            sentence += f" {rng.choice(places)}"
        if rng.random() < 0.3:
            sentence += f" and {rng.choice(verbs)} {rng.choice(objects)}"
        sentences.append(sentence + ".")
    return "\n".join(sentences) + "\n"


text = make_corpus(5_000, np.random.default_rng(SEED))
chars = sorted(set(text))
stoi = {c: i for i, c in enumerate(chars)}


def encode(s):
    return [stoi[c] for c in s]


def decode(tokens):
    return "".join(chars[t] for t in tokens)


data = np.array(encode(text))
split = int(0.9 * len(data))
train_data, val_data = data[:split], data[split:]
print(f"{len(text):,} characters, {len(chars)} distinct: {''.join(chars)!r}")
print(text[:160])
"""),
    md("model-md", r"""
## The model

A residual stream of `D_MODEL` numbers per position. Each of the `N_LAYER`
blocks adds to it the output of causal multi-head self-attention, then of an
MLP, each behind a layer norm (pre-norm, as in GPT-2). Positions are fixed
sine/cosine codes, so the same function serves any sequence length.

Every piece has its backward pass next to it; a gradient check below compares
them with finite differences.
"""),
    code("blocks", r"""
def sinusoids(positions, d):
    # fixed position codes (Vaswani et al., 2017): one row per position
    angles = np.asarray(positions)[:, None] * np.exp(-np.log(10_000.0) * np.arange(0, d, 2) / d)
    codes = np.empty((len(angles), d))
    codes[:, 0::2], codes[:, 1::2] = np.sin(angles), np.cos(angles)
    return codes


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def layer_norm(x, gain, bias, eps=1e-5):
    centred = x - x.mean(-1, keepdims=True)
    rstd = 1.0 / np.sqrt((centred * centred).mean(-1, keepdims=True) + eps)
    xhat = centred * rstd
    return xhat * gain + bias, (xhat, rstd, gain)


def layer_norm_back(dout, ctx):
    xhat, rstd, gain = ctx
    dxhat = dout * gain
    dx = rstd * (dxhat - dxhat.mean(-1, keepdims=True)
                 - xhat * (dxhat * xhat).mean(-1, keepdims=True))
    rows = (-1, dout.shape[-1])
    return dx, (dout * xhat).reshape(rows).sum(0), dout.reshape(rows).sum(0)


GELU_C = np.sqrt(2 / np.pi)


def gelu(x):
    t = np.tanh(GELU_C * (x + 0.044715 * x * x * x))
    return 0.5 * x * (1 + t), t


def gelu_back(dout, x, t):
    return dout * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * GELU_C * (1 + 3 * 0.044715 * x * x))
"""),
    code("params", r"""
def init_params(rng):
    D, scale = D_MODEL, 0.02
    residual_scale = scale / np.sqrt(2 * N_LAYER)  # GPT-2: keep the residual stream's variance
    params = {"wte": rng.normal(0, 1.0, (len(chars), D))}
    for l in range(N_LAYER):
        params |= {
            f"h{l}.ln1_g": np.ones(D), f"h{l}.ln1_b": np.zeros(D),
            f"h{l}.w_qkv": rng.normal(0, scale, (D, 3 * D)),
            f"h{l}.w_o": rng.normal(0, residual_scale, (D, D)),
            f"h{l}.ln2_g": np.ones(D), f"h{l}.ln2_b": np.zeros(D),
            f"h{l}.w_fc": rng.normal(0, scale, (D, 4 * D)), f"h{l}.b_fc": np.zeros(4 * D),
            f"h{l}.w_proj": rng.normal(0, residual_scale, (4 * D, D)), f"h{l}.b_proj": np.zeros(D),
        }
    params |= {"lnf_g": np.ones(D), "lnf_b": np.zeros(D),
               "w_head": rng.normal(0, scale, (D, len(chars)))}
    return params


print(f"{sum(p.size for p in init_params(np.random.default_rng(SEED)).values()):,} parameters")
"""),
    code("forward", r"""
def forward(params, idx):
    # The whole sequence at once: used for training, and by generation without a cache.
    # idx: (batch, time) token ids -> logits (batch, time, vocabulary), and what backward needs.
    B, T = idx.shape
    H, hd = N_HEAD, D_MODEL // N_HEAD
    h = params["wte"][idx] + sinusoids(np.arange(T), D_MODEL)
    future = np.triu(np.full((T, T), -np.inf), 1)  # causal: position t sees positions <= t
    layers = []
    for l in range(N_LAYER):
        a, ln1 = layer_norm(h, params[f"h{l}.ln1_g"], params[f"h{l}.ln1_b"])
        q, k, v = (z.reshape(B, T, H, hd).transpose(0, 2, 1, 3)
                   for z in np.split(a @ params[f"h{l}.w_qkv"], 3, axis=-1))
        att = softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd) + future)  # (B, H, T, T)
        y = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, D_MODEL)
        h = h + y @ params[f"h{l}.w_o"]
        m, ln2 = layer_norm(h, params[f"h{l}.ln2_g"], params[f"h{l}.ln2_b"])
        pre = m @ params[f"h{l}.w_fc"] + params[f"h{l}.b_fc"]
        f, t = gelu(pre)
        h = h + f @ params[f"h{l}.w_proj"] + params[f"h{l}.b_proj"]
        layers.append((a, ln1, q, k, v, att, y, m, ln2, pre, f, t))
    out, lnf = layer_norm(h, params["lnf_g"], params["lnf_b"])
    return out @ params["w_head"], (idx, layers, out, lnf)
"""),
    code("backward", r"""
def loss_and_grads(params, idx, targets):
    # Mean cross-entropy of the next character, and its gradient for every parameter.
    logits, (idx, layers, out, lnf) = forward(params, idx)
    B, T = idx.shape
    N, D, H, hd = B * T, D_MODEL, N_HEAD, D_MODEL // N_HEAD
    probs = softmax(logits).reshape(N, -1)
    rows = np.arange(N)
    loss = -np.log(probs[rows, targets.ravel()]).mean()
    dlogits = probs
    dlogits[rows, targets.ravel()] -= 1
    dlogits /= N
    g = {"w_head": out.reshape(N, D).T @ dlogits}
    dh, g["lnf_g"], g["lnf_b"] = layer_norm_back((dlogits @ params["w_head"].T).reshape(B, T, D), lnf)
    for l in reversed(range(N_LAYER)):
        a, ln1, q, k, v, att, y, m, ln2, pre, f, t = layers[l]
        # MLP
        g[f"h{l}.w_proj"] = f.reshape(N, -1).T @ dh.reshape(N, D)
        g[f"h{l}.b_proj"] = dh.reshape(N, D).sum(0)
        dpre = gelu_back(dh @ params[f"h{l}.w_proj"].T, pre, t)
        g[f"h{l}.w_fc"] = m.reshape(N, D).T @ dpre.reshape(N, -1)
        g[f"h{l}.b_fc"] = dpre.reshape(N, -1).sum(0)
        dm, g[f"h{l}.ln2_g"], g[f"h{l}.ln2_b"] = layer_norm_back(dpre @ params[f"h{l}.w_fc"].T, ln2)
        dh = dh + dm
        # attention
        g[f"h{l}.w_o"] = y.reshape(N, D).T @ dh.reshape(N, D)
        dy = (dh @ params[f"h{l}.w_o"].T).reshape(B, T, H, hd).transpose(0, 2, 1, 3)
        datt = dy @ v.transpose(0, 1, 3, 2)
        dv = att.transpose(0, 1, 3, 2) @ dy
        dscores = att * (datt - (datt * att).sum(-1, keepdims=True)) / np.sqrt(hd)
        dq, dk = dscores @ k, dscores.transpose(0, 1, 3, 2) @ q
        dqkv = np.concatenate([z.transpose(0, 2, 1, 3).reshape(B, T, D) for z in (dq, dk, dv)], -1)
        g[f"h{l}.w_qkv"] = a.reshape(N, D).T @ dqkv.reshape(N, -1)
        da, g[f"h{l}.ln1_g"], g[f"h{l}.ln1_b"] = layer_norm_back(dqkv @ params[f"h{l}.w_qkv"].T, ln1)
        dh = dh + da
    g["wte"] = np.zeros_like(params["wte"])
    np.add.at(g["wte"], idx.ravel(), dh.reshape(N, D))
    return loss, g
"""),
    code("gradcheck", r"""
# the backward pass against central finite differences, one random coordinate per parameter
check_rng = np.random.default_rng(0)
probe = {k: v + check_rng.normal(0, 0.1, v.shape) for k, v in init_params(check_rng).items()}
x_probe = check_rng.integers(0, len(chars), (2, 8))
y_probe = check_rng.integers(0, len(chars), (2, 8))
_, analytic = loss_and_grads(probe, x_probe, y_probe)
worst = 0.0
for name, value in probe.items():
    i = np.unravel_index(check_rng.integers(value.size), value.shape)
    saved, eps = value[i], 1e-5
    value[i] = saved + eps
    up = loss_and_grads(probe, x_probe, y_probe)[0]
    value[i] = saved - eps
    down = loss_and_grads(probe, x_probe, y_probe)[0]
    value[i] = saved
    numeric = (up - down) / (2 * eps)
    worst = max(worst, abs(numeric - analytic[name][i]) / max(abs(numeric) + abs(analytic[name][i]), 1e-8))
assert worst < 1e-5, worst
print(f"gradient check passed: largest relative error {worst:.1e}")
"""),
    md("train-md", r"""
## Training: the expensive cell

Adam, a short warm-up then cosine decay, batches of `BATCH` random windows of
`BLOCK` characters. The validation loss is measured on the last 10% of the
corpus, which the model never trains on. This cell takes tens of seconds; after
a restart incrcell restores `params` and the printed losses in milliseconds (the
note under the cell says how long the training took).
"""),
    code("batches", r"""
def get_batch(split, rng):
    starts = rng.integers(0, len(split) - BLOCK - 1, BATCH)
    x = np.stack([split[s:s + BLOCK] for s in starts])
    y = np.stack([split[s + 1:s + BLOCK + 1] for s in starts])
    return x, y


def evaluate(params, split, batches=8):
    rng = np.random.default_rng(0)  # the same batches every time
    losses = []
    for _ in range(batches):
        x, y = get_batch(split, rng)
        probs = softmax(forward(params, x)[0])
        losses.append(-np.log(np.take_along_axis(probs, y[..., None], -1)).mean())
    return float(np.mean(losses))
"""),
    code("train", r"""
params = init_params(np.random.default_rng(SEED))
batch_rng = np.random.default_rng(SEED + 1)
moment1 = {k: np.zeros_like(v) for k, v in params.items()}
moment2 = {k: np.zeros_like(v) for k, v in params.items()}
beta1, beta2 = 0.9, 0.99
val_before = evaluate(params, val_data)
losses = []
for step in range(1, STEPS + 1):
    loss, grads = loss_and_grads(params, *get_batch(train_data, batch_rng))
    lr = LR * min(1.0, step / WARMUP) * (0.1 + 0.45 * (1 + np.cos(np.pi * step / STEPS)))
    for k, g in grads.items():
        moment1[k] = beta1 * moment1[k] + (1 - beta1) * g
        moment2[k] = beta2 * moment2[k] + (1 - beta2) * g * g
        params[k] -= lr * (moment1[k] / (1 - beta1 ** step)) / (np.sqrt(moment2[k] / (1 - beta2 ** step)) + 1e-8)
    losses.append(float(loss))
    if step == 1 or step % max(1, STEPS // 10) == 0:
        print(f"step {step:4d}   training loss {loss:.3f}")
val_after = evaluate(params, val_data)
print(f"validation loss: {val_before:.3f} before training, {val_after:.3f} after {STEPS} steps")
"""),
    code("loss-curve", r"""
fig, ax = plt.subplots(figsize=(6, 2.6))
ax.plot(np.arange(1, len(losses) + 1), losses, lw=0.8)
ax.axhline(val_after, color="tab:orange", ls="--", lw=1, label=f"validation, after: {val_after:.2f}")
ax.set(xlabel="step", ylabel="training loss (nats/char)", title="Training")
ax.legend()
plt.show()
"""),
    md("kv-md", r"""
## Generation, with and without a KV cache

Without a cache, each new token runs `forward` over the whole sequence so far.
With one, `step` runs only the new token through the model: at each layer it
computes the token's query, key and value, appends the key and value to the
cache, and attends from the one new query to all cached keys. Same arithmetic,
same result, a fraction of the work.
"""),
    code("kv-cache", r"""
class KVCache:
    # every layer's keys and values for the tokens seen so far: (layer, head, position, dim)

    def __init__(self, capacity=128):
        shape = (N_LAYER, N_HEAD, capacity, D_MODEL // N_HEAD)
        self.keys, self.values = np.zeros(shape), np.zeros(shape)
        self.length = 0

    def add(self, layer, k, v):
        # store the new token's key and value at `layer`; return all keys and values so far
        t = self.length
        if t == self.keys.shape[2]:  # full: double the capacity
            self.keys = np.concatenate([self.keys, np.zeros_like(self.keys)], axis=2)
            self.values = np.concatenate([self.values, np.zeros_like(self.values)], axis=2)
        self.keys[layer, :, t], self.values[layer, :, t] = k, v
        return self.keys[layer, :, :t + 1], self.values[layer, :, :t + 1]


def step(params, token, cache):
    # one new token through the model, reusing the cached keys and values: returns its logits
    H, hd = N_HEAD, D_MODEL // N_HEAD
    h = params["wte"][token] + sinusoids([cache.length], D_MODEL)[0]
    for l in range(N_LAYER):
        a, _ = layer_norm(h, params[f"h{l}.ln1_g"], params[f"h{l}.ln1_b"])
        q, k, v = (z.reshape(H, hd) for z in np.split(a @ params[f"h{l}.w_qkv"], 3))
        keys, values = cache.add(l, k, v)                                # (H, t+1, hd)
        att = softmax(np.einsum("hd,htd->ht", q, keys) / np.sqrt(hd))    # one row, not a matrix
        h = h + np.einsum("ht,htd->hd", att, values).reshape(D_MODEL) @ params[f"h{l}.w_o"]
        m, _ = layer_norm(h, params[f"h{l}.ln2_g"], params[f"h{l}.ln2_b"])
        f, _ = gelu(m @ params[f"h{l}.w_fc"] + params[f"h{l}.b_fc"])
        h = h + f @ params[f"h{l}.w_proj"] + params[f"h{l}.b_proj"]
    cache.length += 1
    out, _ = layer_norm(h, params["lnf_g"], params["lnf_b"])
    return out @ params["w_head"]
"""),
    code("generate", r"""
def sample(logits, temperature, rng):
    # the most likely token at temperature 0, else one drawn from softmax(logits / temperature)
    if temperature == 0:
        return int(np.argmax(logits))
    return int(rng.choice(len(logits), p=softmax(logits / temperature)))


def generate_uncached(params, prompt, n_new, temperature, rng):
    # yields n_new tokens, running the whole sequence through the model for each one
    tokens = list(prompt)
    for _ in range(n_new):
        logits, _ = forward(params, np.array([tokens]))
        tokens.append(sample(logits[0, -1], temperature, rng))
        yield tokens[-1]


def generate_cached(params, prompt, n_new, temperature, rng):
    # yields n_new tokens, computing keys, values and attention for the newest token only
    cache = KVCache()
    for token in prompt:  # prefill: the prompt's keys and values
        logits = step(params, token, cache)
    for i in range(n_new):
        token = sample(logits, temperature, rng)
        yield token
        if i + 1 < n_new:
            logits = step(params, token, cache)
"""),
    md("temperature-md", r"""
The sampling temperature has a cell of its own: change it, restart, Run All,
and only the two generation cells below run again (everything above is
restored, and so is the speed measurement, which decodes greedily).
"""),
    code("temperature", r"""
temperature = 0.8  # 0: always the most likely character; higher: more adventurous
"""),
    code("generate-uncached", r"""
PROMPTS = ["the cat", "a young girl", "our teacher", "the fox"]
uncached = [list(generate_uncached(params, encode(p), BLOCK - len(p), temperature, np.random.default_rng(i)))
            for i, p in enumerate(PROMPTS)]
for p, new in zip(PROMPTS, uncached):
    print(p + decode(new).split("\n")[0])  # the first sentence
"""),
    code("generate-cached", r"""
cached = [list(generate_cached(params, encode(p), BLOCK - len(p), temperature, np.random.default_rng(i)))
          for i, p in enumerate(PROMPTS)]
for p, new in zip(PROMPTS, cached):
    print(p + decode(new).split("\n")[0])
assert cached == uncached, "the KV cache changed the generated text"
print(f"\nthe same {sum(map(len, cached))} tokens with and without the KV cache")
"""),
    md("speed-md", r"""
## Speed against sequence length

Greedy decoding of 256 tokens, timing every token (the fastest of three runs).
Without the cache, the cost
of a token grows with the length of the sequence (a full forward pass over it);
with the cache it stays flat. (Past the 64 characters it was trained on, the
model writes gibberish: only the time matters here.)

A cell that reads the clock gives other numbers at every run, so incrcell does
not cache it unless told to: `%%incrcell cache` says that replaying the
measurement recorded last time is fine.
"""),
    code("speed", r"""
%%incrcell cache
N_BENCH, REPEATS = 256, 3
bench_prompt = encode("the ")
seconds_per_token, bench_tokens = {}, {}
for name, generate in [("without cache", generate_uncached), ("with KV cache", generate_cached)]:
    runs = []
    for _ in range(REPEATS):  # the fastest of three runs: other programs only ever slow it down
        stamps, tokens = [time.perf_counter()], []
        for token in generate(params, bench_prompt, N_BENCH, 0, None):
            tokens.append(token)
            stamps.append(time.perf_counter())
        runs.append(np.diff(stamps))
    seconds_per_token[name], bench_tokens[name] = np.min(runs, axis=0), tokens
assert bench_tokens["without cache"] == bench_tokens["with KV cache"]
length = len(bench_prompt) + np.arange(1, N_BENCH + 1)  # sequence length after each new token

print(f"{'length':>6}  {'without cache':>15}  {'with KV cache':>15}")
for n in (32, 64, 128, 256):
    window = (length > n - 16) & (length <= n)
    plain, kv = (1 / np.median(seconds_per_token[name][window]) for name in seconds_per_token)
    print(f"{n:>6}  {plain:>9.0f} tok/s  {kv:>9.0f} tok/s")

fig, ax = plt.subplots(figsize=(6, 3))
for name, seconds in seconds_per_token.items():  # a running median over 9 tokens
    ax.plot(length[4:-4], 1000 * np.median(np.lib.stride_tricks.sliding_window_view(seconds, 9), axis=1),
            label=name)
ax.set(xlabel="sequence length (tokens)", ylabel="ms per new token",
       title="The cost of one more token")
ax.legend()
plt.show()
"""),
    md("status-md", r"""
## What incrcell did

`%incrcell status` lists every cell of this session: *restored* (and the time it
saved), *ran* (and why), or *uncacheable* (and why: here, only the magics).
After a restart with only `temperature` changed, the training is restored, the
two generation cells ran because their input `temperature` changed, and the
speed measurement after them was restored: it does not read `temperature`.
"""),
    code("status", "%incrcell status"),
    md("parallel", r"""
## The parallel

| a transformer with a KV cache | a notebook with incrcell |
| --- | --- |
| a token | a cell |
| the keys and values each layer computed for the prefix | the variables and outputs each cell produced |
| generating token *t+1* computes attention for the new token only | Run All computes only the cells whose source or inputs changed |
| editing token *k* invalidates the keys and values from *k* on | editing cell *k* invalidates cell *k* and the cells that read what it wrote |
| the cache lives as long as the sequence | the cache lives on disk: it survives kernel restarts |

Work already done for a prefix is never redone. One difference works in the
notebook's favour: in a transformer every later position attends to token *k*,
so the whole suffix after an edit is recomputed; a cell reads only some earlier
cells, so incrcell reruns only the part of the suffix that depends on the edit
— here the speed measurement, after the edited `temperature` cell, stayed restored.

And one that keeps it honest: incrcell's key is the *content* of what a cell
reads (values, files, modules, package versions), not its position, so a cell
is never restored from a stale prefix.
"""),
]


# ---------------------------------------------------------------------------
# quickstart.ipynb
# ---------------------------------------------------------------------------

QUICKSTART_CELLS = [
    md("title", r"""
# incrcell quickstart: a pandas pipeline

A small, realistic pipeline: load a CSV export of orders, clean it, compute
per-customer features, aggregate revenue by region and month, and plot it. The
slow step (a `groupby().apply` over 4,000 customers) takes a few seconds, like
the slow steps of real notebooks.

1. **Cold run.** Run All. Every cell runs, and incrcell records what each one
   wrote (variables, outputs) under a key: its source plus the content of
   everything it reads.
2. **Restart, Run All.** Every cell whose key is unchanged is restored from the
   cache instead of running, with a small *restored by incrcell, saved ...*
   note under its outputs. The whole notebook takes a second or two.
3. **Edit a cell in the middle.** Change `PERIOD = "M"` to `"Q"` in section 5,
   restart, Run All: that cell runs, the plot that reads its result runs, and
   everything else, before and after, is restored. `%incrcell why` says why a
   cell ran; `%incrcell status` sums it up.
4. **Steer it** with `%%incrcell nocache`, `rerun` and `cache` (section 6).

*The outputs saved in this file come from step 3:* a first Run All with
`PERIOD = "Q"`, a restart, `PERIOD` changed to `"M"`, Run All.
"""),
    code("load", r"""
%load_ext incrcell
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
"""),
    md("export-md", r"""
## 1. The export

A real project starts from a file someone exported; this cell writes one:
120,000 orders with the usual defects (a region spelled three ways, returns as
negative quantities, missing prices, duplicated rows).

incrcell sees the files a cell reads and writes. A cell that writes files is
cached with them: restoring it writes the same bytes back. A cell that reads a
file, like the next one, is keyed on the file's *content*: change a single byte
of `orders.csv` and it runs again, with everything that depends on it.
"""),
    code("export", r"""
export_rng = np.random.default_rng(2024)
N_ORDERS, N_CUSTOMERS = 120_000, 4_000
PRICES = {"books": 14.0, "games": 45.0, "garden": 32.0, "kitchen": 27.0, "toys": 19.0}
customer = export_rng.integers(1, N_CUSTOMERS + 1, N_ORDERS)
home = export_rng.choice(["North", "South", "East", "West"], N_CUSTOMERS + 1, p=[0.3, 0.2, 0.3, 0.2])
category = export_rng.choice(list(PRICES), N_ORDERS)
day = export_rng.integers(0, 730, N_ORDERS)
export = pd.DataFrame({
    "order_id": np.arange(100_000, 100_000 + N_ORDERS),
    "date": (pd.Timestamp("2023-01-01") + pd.to_timedelta(day, unit="D")).strftime("%Y-%m-%d"),
    "customer_id": customer,
    "region": home[customer],
    "category": category,
    "channel": export_rng.choice(["web", "store"], N_ORDERS, p=[0.6, 0.4]),
    "quantity": export_rng.integers(1, 6, N_ORDERS),
    "unit_price": (pd.Series(category).map(PRICES).to_numpy()
                   * export_rng.lognormal(0, 0.3, N_ORDERS)).round(2),
    "discount": export_rng.choice([0, 0, 0, 0.05, 0.1, 0.2], N_ORDERS),
})
messy = export_rng.random(N_ORDERS)
export.loc[messy < 0.10, "region"] = export["region"].str.upper()
export.loc[(messy >= 0.10) & (messy < 0.15), "region"] = " " + export["region"].str.lower()
export.loc[export_rng.random(N_ORDERS) < 0.03, "quantity"] *= -1
export.loc[export_rng.random(N_ORDERS) < 0.01, "unit_price"] = np.nan
export = pd.concat([export, export.sample(1_500, random_state=1)]).sort_values("order_id")
export.to_csv("orders.csv", index=False)
print(f"wrote orders.csv: {len(export):,} rows")
"""),
    md("load-md", "## 2. Load and clean"),
    code("read", r"""
raw = pd.read_csv("orders.csv", parse_dates=["date"])
raw.head()
"""),
    code("clean", r"""
orders = raw.drop_duplicates().dropna(subset=["unit_price"]).copy()
orders["region"] = orders["region"].str.strip().str.title()
orders["is_return"] = orders["quantity"] < 0
orders["revenue"] = orders["quantity"] * orders["unit_price"] * (1 - orders["discount"])
print(f"{len(raw) - len(orders):,} duplicated or unpriced rows dropped, {len(orders):,} left, "
      f"{orders['is_return'].sum():,} returns")
print("regions:", ", ".join(sorted(orders["region"].unique())))
"""),
    md("features-md", r"""
## 3. Features per customer: the slow cell

A `groupby().apply` with a Python function: a few seconds here, minutes on real
data. After a restart it comes back from the cache in milliseconds.
"""),
    code("features", r"""
def customer_features(g):
    bought = g[~g["is_return"]]
    return pd.Series({
        "orders": len(bought),
        "revenue": g["revenue"].sum(),
        "return_rate": g["is_return"].mean(),
        "days_active": (g["date"].max() - g["date"].min()).days,
        "favourite": bought["category"].mode().iat[0],
        "web_share": (g["channel"] == "web").mean(),
    })


customers = orders.groupby("customer_id").apply(customer_features).infer_objects()
customers["region"] = orders.groupby("customer_id")["region"].first()
customers.head()
"""),
    md("segments-md", "## 4. Segments"),
    code("segments", r"""
customers["tier"] = pd.qcut(customers["revenue"], 4, labels=["bronze", "silver", "gold", "platinum"])
segments = customers.groupby("tier", observed=True).agg(
    customers=("orders", "size"),
    mean_revenue=("revenue", "mean"),
    mean_orders=("orders", "mean"),
    return_rate=("return_rate", "mean"),
    web_share=("web_share", "mean"),
)
segments.round(2)
"""),
    md("revenue-md", r"""
## 5. Revenue by region over time: the cell to edit

Change `PERIOD` to `"Q"` (quarters), restart the kernel and Run All: this cell
and the plot below run again; the load, the cleaning, the slow features, the
segments and the report are restored. `%incrcell why`, right below, explains
the last cell that ran: after the edit, the cell above (*source changed*);
when the cell above was restored, the last one that did run.
"""),
    code("revenue", r"""
PERIOD = "M"  # "M": months, "Q": quarters
sales = orders[~orders["is_return"]]
revenue = (sales.groupby([sales["date"].dt.to_period(PERIOD), "region"])["revenue"].sum()
           .unstack("region").round(0))
revenue.tail(4)
"""),
    code("why", "%incrcell why"),
    code("plot", r"""
fig, ax = plt.subplots(figsize=(7, 3.2))
(revenue / 1000).plot(ax=ax, lw=1.5)
ax.set(xlabel="", ylabel="revenue (thousands)",
       title=f"Revenue by region and {'month' if PERIOD == 'M' else 'quarter'}")
ax.legend(ncols=4, fontsize=8)
plt.show()
"""),
    md("directives-md", r"""
## 6. Steering the cache: `nocache`, `rerun`, `cache`

incrcell keys a cell on what it reads: values, files, modules, package
versions, environment variables. A cell that reads what cannot be pinned down
(the clock, fresh entropy, the network, other processes) runs every time, and
`%incrcell status` says why. Three directives, on the first line of a cell,
override its judgement:

- `%%incrcell nocache`: never cache this cell. For instance a cell that is
  cheap to run but makes something big to store, like the join below (a fraction
  of a second, a frame of tens of MB). It runs every time; the cell after it is
  keyed on the frame's content and is restored as usual.
- `%%incrcell rerun`: run the cell although it is cached, and record it again,
  when you know something incrcell cannot see has changed (a table refreshed
  in a database that a library reads through its own C code, say).
- `%%incrcell cache`: cache the cell although it reads the clock (a timing
  printout you do not mind seeing replayed).
"""),
    code("enrich", r"""
%%incrcell nocache
enriched = orders.merge(customers[["tier", "favourite"]], left_on="customer_id", right_index=True)
"""),
    code("report", r"""
web_share = enriched.pivot_table(index="tier", columns="channel", values="revenue",
                                 aggfunc="sum", observed=True)
web_share = (web_share["web"] / web_share.sum(axis=1)).rename("web share of revenue")
web_share.round(3)
"""),
    md("rerun-md", r"""
Left in place, as below, `%%incrcell rerun` runs its cell every time and keeps
its cache entry up to date.
"""),
    code("check", r"""
%%incrcell rerun
assert orders["order_id"].is_unique, "duplicated orders survived the cleaning"
assert (customers["orders"] > 0).all()
print(f"checks passed: {len(orders):,} unique orders, {len(customers):,} customers")
"""),
    md("status-md", r"""
## 7. What incrcell did

Every cell this session saw: *restored* (with the time it saved), *ran* (and
why: first run, source changed, an input changed, forced with `rerun`), or
*uncacheable* (and why: magics, `nocache`).
"""),
    code("status", "%incrcell status"),
    md("next", r"""
## Next

- `%incrcell why 5` explains any cell by its execution count; `%incrcell --help`
  lists every command.
- Change a byte of `orders.csv` (and comment out the export cell): the cells
  that read it, and their dependents, run again.
- `notebooks/kv_attention.ipynb`: a numpy transformer, its KV cache, and why a
  KV cache and incrcell are the same idea.
"""),
]


# ---------------------------------------------------------------------------
# building and executing
# ---------------------------------------------------------------------------

def notebook(cells: list[nbformat.NotebookNode]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = copy.deepcopy(cells)
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
        "language_info": {"name": "python"},
    }
    return nb


def cell(nb: nbformat.NotebookNode, cell_id: str) -> nbformat.NotebookNode:
    for c in nb.cells:
        if c.get("id") == cell_id:
            return c
    raise KeyError(cell_id)


def edited(nb: nbformat.NotebookNode, cell_id: str, old: str, new: str) -> nbformat.NotebookNode:
    """A copy of ``nb`` with ``old`` replaced by ``new`` in the source of one cell."""
    nb = copy.deepcopy(nb)
    target = cell(nb, cell_id)
    assert old in target.source, (cell_id, old)
    target.source = target.source.replace(old, new)
    return nb


class _JupyterLabLikeClient(NotebookClient):
    """nbclient, but every execute request carries its cell's id, as JupyterLab's do."""

    async def async_execute_cell(self, cell: Any, cell_index: int, execution_count: Any = None,
                                 store_history: bool = True) -> Any:
        kc = self.kc
        assert kc is not None

        def execute(code: str, silent: bool = False, store_history: bool = True,
                    user_expressions: Any = None, allow_stdin: Any = None,
                    stop_on_error: bool = True) -> str:
            content = {"code": code, "silent": silent, "store_history": store_history,
                       "user_expressions": user_expressions or {}, "allow_stdin": False,
                       "stop_on_error": stop_on_error}
            msg = kc.session.msg("execute_request", content, metadata={"cellId": cell.get("id")})
            kc.shell_channel.send(msg)
            return msg["header"]["msg_id"]

        kc.execute = execute  # type: ignore[method-assign]
        try:
            return await super().async_execute_cell(cell, cell_index, execution_count, store_history)
        finally:
            del kc.execute


def _seconds(timing: dict[str, str], start: str, end: str) -> float:
    def parse(stamp: str) -> datetime:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (parse(timing[end]) - parse(timing[start])).total_seconds()


def cell_seconds(nb: nbformat.NotebookNode) -> dict[str, float]:
    """Execution time of each code cell (busy to idle), from nbclient's timing metadata."""
    return {c.id: _seconds(c.metadata["execution"], "iopub.status.busy", "iopub.status.idle")
            for c in nb.cells if c.cell_type == "code" and "execution" in c.metadata}


def execute(nb: nbformat.NotebookNode, workdir: Path, env: dict[str, str],
            timeout: int = 900) -> tuple[nbformat.NotebookNode, float]:
    """Run All in a fresh kernel started in ``workdir`` with ``env`` added to the environment.

    Returns the executed copy and the sum of its cells' execution times
    (kernel start-up excluded).  Errors stay in the outputs (``allow_errors``).
    """
    nb = copy.deepcopy(nb)
    client = _JupyterLabLikeClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                                   record_timing=True,
                                   resources={"metadata": {"path": str(workdir)}})
    client.execute(env={**os.environ, **env})
    return nb, sum(cell_seconds(nb).values())


def restored(c: nbformat.NotebookNode) -> bool:
    """Whether a cell's outputs carry incrcell's *restored* marker."""
    return any(o.get("metadata", {}).get("incrcell", {}).get("restored") for o in c.get("outputs", []))


def errors(nb: nbformat.NotebookNode) -> list[str]:
    return [f"{c.id}: {o['ename']}: {o['evalue']}" for c in nb.cells if c.cell_type == "code"
            for o in c.outputs if o["output_type"] == "error"]


def warm_matplotlib(env: dict[str, str]) -> None:
    """Build matplotlib's font cache once, as any earlier use on the machine would have.

    The very first import of matplotlib in a fresh ``MPLCONFIGDIR`` writes the
    cache and says so on stderr; that happens once per machine, not per run.
    """
    subprocess.run([sys.executable, "-c", "import matplotlib.pyplot"],
                   env={**os.environ, **env}, check=True, capture_output=True)


def _clean_for_saving(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    nb = copy.deepcopy(nb)
    for c in nb.cells:
        c.metadata.pop("execution", None)
    return nb


# (notebook path, cells, the edit made before the saved run: cell id, old text, new text)
DEMOS = {
    "kv_attention": (KV_PATH, KV_CELLS,
                     ("temperature", "temperature = 1.0", "temperature = 0.8")),
    "quickstart": (QUICKSTART_PATH, QUICKSTART_CELLS,
                   ("revenue", 'PERIOD = "Q"', 'PERIOD = "M"')),
}


def build(name: str, run: bool = True) -> None:
    path, cells, (cell_id, before, after) = DEMOS[name]
    nb = notebook(cells)
    nbformat.validate(nb)
    nbformat.write(nb, path)
    print(f"wrote {path.relative_to(HERE.parent)} (no outputs yet)")
    if not run:
        return
    with tempfile.TemporaryDirectory(prefix="incrcell-demos-") as tmp:
        root = Path(tmp)
        workdir = root / "work"
        workdir.mkdir()
        env = {"INCRCELL_CACHE_DIR": str(root / "cache"), "XDG_CONFIG_HOME": str(root / "config"),
               "MPLBACKEND": "module://matplotlib_inline.backend_inline",
               "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        warm_matplotlib(env)
        variant = edited(nb, cell_id, after, before)
        started = time.perf_counter()
        cold, cold_s = execute(variant, workdir, env)
        cold_wall = time.perf_counter() - started
        assert not errors(cold), errors(cold)
        saved, edit_s = execute(nb, workdir, env)
        assert not errors(saved), errors(saved)
        started = time.perf_counter()
        warm, warm_s = execute(nb, workdir, env)
        warm_wall = time.perf_counter() - started
        assert not errors(warm), errors(warm)
        nbformat.write(_clean_for_saving(saved), path)
        print(f"{name}: cold Run All {cold_s:.1f} s of cells ({cold_wall:.1f} s with kernel start), "
              f"after the edit {edit_s:.1f} s, warm {warm_s:.2f} s ({warm_wall:.1f} s with kernel start); "
              f"warm/cold = {warm_s / cold_s:.3f}")
        for c_id, seconds in cell_seconds(cold).items():
            print(f"    {c_id:<20} cold {seconds:7.2f} s   after edit {cell_seconds(saved)[c_id]:7.2f} s"
                  f"{' (restored)' if restored(cell(saved, c_id)) else ''}"
                  f"   warm {cell_seconds(warm)[c_id]:6.2f} s")
        shutil.rmtree(root / "cache", ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"one of {', '.join(DEMOS)} (default: all)")
    parser.add_argument("--no-run", action="store_true", help="write the notebooks without outputs")
    args = parser.parse_args()
    for name in args.names or list(DEMOS):
        if name not in DEMOS:
            parser.error(f"unknown notebook {name!r}: choose from {', '.join(DEMOS)}")
        build(name, run=not args.no_run)


if __name__ == "__main__":
    main()
