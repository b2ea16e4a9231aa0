#!/usr/bin/env python3
"""train.py - trains ctxd's reference model (model.py) on the GPU machine.

Each call trains until --deadline seconds after it started (the device runs
a command for at most 10 minutes), with a warm-up-stable-decay learning rate:
peak LR until --decay seconds before the deadline, then a linear decay to 10%.
When the decay starts it saves the full state (weights, AdamW, step, RNG
seeds) to --stable; a later call with --resume continues from that state at
the peak LR and decays again at its own end, so each call ends with a finished
model and the next one extends the stable phase. At the end it evaluates
(held-out perplexity, synthetic recall, attention mass on needles) and writes
the weights as float16 (weights.npz, cut into parts under 15 MiB for the
device's file limit) and a log to --out.

Sequences: a --synth share are tasks.py's long-context tasks (needles in
prose, questions at the end), the rest plain prose. Loss: next-token cross
entropy over all positions, plus --ans-weight x the cross entropy of answer
tokens alone, plus --aux-weight x -log(mean over heads of the last layer's
attention mass that each question token puts on its needle).
"""
import argparse
import json
import lzma
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bpe as bpe_mod  # noqa: E402
import model as M  # noqa: E402
import tasks  # noqa: E402

T0 = time.time()


def log(*a):
    msg = "[%7.1fs] " % (time.time() - T0) + " ".join(str(x) for x in a)
    print(msg, flush=True)
    if ARGS.out:
        with open(os.path.join(ARGS.out, "train.log"), "a") as f:
            f.write(msg + "\n")


def load_tokens(path):
    if os.path.exists(path + ".xz"):
        with lzma.open(path + ".xz") as f:
            return np.frombuffer(f.read(), dtype=np.uint16)
    return np.fromfile(path, dtype=np.uint16)


class Stream(torch.utils.data.IterableDataset):
    def __init__(self, prose, vocab, syn, T, seed, synth):
        self.prose, self.vocab, self.syn, self.T, self.seed, self.synth = prose, vocab, syn, T, seed, synth

    def __iter__(self):
        wi = torch.utils.data.get_worker_info()
        wid = wi.id if wi else 0
        g = tasks.Generator(bpe_mod.BPE(self.vocab), self.prose, self.T, [self.seed, wid], self.syn)
        while True:
            ids, ans, rows = g.sequence() if g.rng.random() < self.synth else g.prose_sequence()
            yield torch.from_numpy(ids), torch.from_numpy(ans), torch.from_numpy(rows)


def step_loss(model, ids, ans, rows, aux_w, ans_w):
    x, tgt = ids[:, :-1], ids[:, 1:]
    h, q, k = model(x, want_qk=aux_w > 0)
    logits = model.logits(h).float()
    ce = F.cross_entropy(logits.view(-1, logits.shape[-1]), tgt.reshape(-1), reduction="none").view(tgt.shape)
    lm = ce.mean()
    af = ans.float()
    al = (ce * af).sum() / af.sum().clamp(min=1)
    loss = lm + ans_w * al
    aux = torch.zeros((), device=ids.device)
    if aux_w > 0:
        mass, valid = M.question_attention(q, k, rows)
        vf = valid.float()
        aux = -(torch.log(mass + 1e-6) * vf).sum() / vf.sum().clamp(min=1)
        loss = loss + aux_w * aux
    return loss, lm, al, aux


def lr_at(step, now, a, t_decay, deadline):
    lr = a.lr * min(1.0, (step + 1) / a.warmup)
    if now >= t_decay:
        f = min(1.0, (now - t_decay) / max(1.0, deadline - t_decay))
        lr = lr * (1.0 - 0.9 * f)
    return lr


@torch.no_grad()
def evaluate(model, heldout, vocab, syn, a, dev):
    model.eval()
    T = a.seq
    res = {}
    # held-out perplexity: non-overlapping windows of T tokens, every target scored
    n_win = min(a.eval_windows, (len(heldout) - 1) // T)
    tot, cnt = 0.0, 0
    for i in range(0, n_win, 8):
        xs = [torch.from_numpy(heldout[w * T:w * T + T + 1].astype(np.int64)) for w in range(i, min(n_win, i + 8))]
        ids = torch.stack(xs).to(dev)
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
            h, _, _ = model(ids[:, :-1])
            logits = model.logits(h).float()
        ce = F.cross_entropy(logits.view(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum")
        tot += ce.item()
        cnt += ids[:, 1:].numel()
    res["heldout_tokens"] = cnt
    res["heldout_ppl"] = math.exp(tot / max(1, cnt))
    # synthetic tasks over held-out prose: answers exactly right (greedy, teacher
    # forced), attention mass on the needle, needle in the top 300 of head-summed attention
    g = tasks.Generator(bpe_mod.BPE(vocab), heldout, T, 12345, syn)
    ok, n, mass_sum, top_hit, rows_n = 0, 0, 0.0, 0, 0
    for _ in range(a.eval_tasks // 16):
        batch = [g.sequence() for _ in range(16)]
        ids = torch.stack([torch.from_numpy(b[0]) for b in batch]).to(dev)
        ans = torch.stack([torch.from_numpy(b[1]) for b in batch]).to(dev)
        rows = torch.stack([torch.from_numpy(b[2]) for b in batch]).to(dev)
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
            h, q, k = model(ids[:, :-1], want_qk=True)
            pred = model.logits(h).argmax(-1)
        right = ((pred == ids[:, 1:]) | ~ans).all(-1)
        ok += int(right.sum())
        n += len(batch)
        mass, valid = M.question_attention(q, k, rows)
        mass_sum += float((mass * valid).sum())
        rows_n += int(valid.sum())
        # InfiniRetri-like check: head-summed attention of the question rows, summed over
        # rows; is any needle token among the 300 best columns?
        B, H, Tq, hd = q.shape
        for bi in range(B):
            v = rows[bi, :, 3] > 0
            if not v.any():
                continue
            r = rows[bi][v]
            qs = q[bi][:, r[:, 0]]  # [H,R,hd]
            s = (qs.float() @ k[bi].float().transpose(-1, -2)) / math.sqrt(hd)
            j = torch.arange(Tq, device=dev)
            s = s.masked_fill(j[None, None, :] > r[None, :, 0:1], float("-inf"))
            att = torch.softmax(s, -1).sum(0).sum(0)  # [T]
            qstart = int(r[:, 0].min())
            att[qstart:] = -1
            top = torch.topk(att, min(300, att.numel())).indices
            hit = True
            for s0, s1 in {(int(x[1]), int(x[2])) for x in r}:
                hit &= bool(((top >= s0) & (top < s1)).any())
            top_hit += int(hit)
    res["task_exact"] = ok / max(1, n)
    res["needle_mass"] = mass_sum / max(1, rows_n)
    res["needle_top300"] = top_hit / max(1, n)
    model.train()
    return res


def save_weights(model, out):
    sd = {k: v.detach().to(torch.float16).cpu().numpy() for k, v in model.state_dict().items()}
    path = os.path.join(out, "weights.npz")
    np.savez(path, **sd)
    data = open(path, "rb").read()
    os.remove(path)
    part = 15 << 20
    for i in range(0, len(data), part):
        with open("%s.part%d" % (path, i // part), "wb") as f:
            f.write(data[i:i + part])


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="folder of train.u16[.xz], heldout.u16[.xz]")
    ap.add_argument("--vocab", required=True)
    ap.add_argument("--synsets", default="")
    ap.add_argument("--out", default="")
    ap.add_argument("--stable", required=True, help="full state saved when the decay starts")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--deadline", type=float, default=500.0)
    ap.add_argument("--decay", type=float, default=90.0)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--accum", type=int, default=2)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--synth", type=float, default=0.5)
    ap.add_argument("--aux-weight", type=float, default=0.3)
    ap.add_argument("--ans-weight", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--workers", type=int, default=10)
    ap.add_argument("--compile", type=int, default=1)
    ap.add_argument("--eval-windows", type=int, default=256)
    ap.add_argument("--eval-tasks", type=int, default=256)
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (smoke tests)")
    ap.add_argument("--cpu", action="store_true", help="smoke test on the CPU")
    ARGS = a = ap.parse_args()
    if a.out:
        os.makedirs(a.out, exist_ok=True)
    dev = "cpu" if a.cpu else "cuda"
    torch.manual_seed(a.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    prose = load_tokens(os.path.join(a.data, "train.u16"))
    heldout = load_tokens(os.path.join(a.data, "heldout.u16"))
    syn = json.load(open(a.synsets)) if a.synsets else None
    log("train tokens", len(prose), "held-out tokens", len(heldout))
    cfg = M.Config(ctx=a.seq)
    model = M.LM(cfg).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    log("config", cfg.dict(), "params", n_params)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8, **({} if a.cpu else {"fused": True}))
    step, tokens_seen, part = 0, 0, 0
    if a.resume:
        st = torch.load(a.stable, map_location=dev)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step, tokens_seen, part = st["step"], st["tokens"], st["part"] + 1
        log("resumed at step", step, "tokens", tokens_seen, "part", part)
    ds = Stream(prose, a.vocab, syn, a.seq, a.seed + 1000 * part, a.synth)
    dl = torch.utils.data.DataLoader(ds, batch_size=a.batch, num_workers=a.workers, pin_memory=not a.cpu,
                                     prefetch_factor=4, persistent_workers=True)
    it = iter(dl)
    fn = step_loss
    if a.compile and not a.cpu:
        fn = torch.compile(step_loss)
    t_decay = a.deadline - a.decay
    saved_stable = False
    t_last = time.time()
    while True:
        now = time.time() - T0
        if now >= a.deadline or (a.max_steps and step >= a.max_steps):
            break
        if now >= t_decay and not saved_stable:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                        "tokens": tokens_seen, "part": part, "config": cfg.dict()}, a.stable)
            saved_stable = True
            log("stable state saved at step", step)
        lr = lr_at(step, now, a, t_decay, a.deadline)
        for g in opt.param_groups:
            g["lr"] = lr
        stats = torch.zeros(4, device=dev)
        for _ in range(a.accum):
            ids, ans, rows = (t.to(dev, non_blocking=True) for t in next(it))
            with torch.autocast(dev, dtype=torch.bfloat16, enabled=not a.cpu):
                try:
                    loss, lm, al, aux = fn(model, ids, ans, rows, a.aux_weight, a.ans_weight)
                except Exception as e:  # a compiler failure must not cost the call
                    if fn is step_loss:
                        raise
                    log("torch.compile failed, running eagerly:", repr(e)[:400])
                    fn = step_loss
                    loss, lm, al, aux = fn(model, ids, ans, rows, a.aux_weight, a.ans_weight)
            (loss / a.accum).backward()
            stats += torch.stack([loss.detach(), lm.detach(), al.detach(), aux.detach()]) / a.accum
            tokens_seen += ids.numel()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        if step % 25 == 0 or step <= 3:
            s = stats.tolist()
            dt = time.time() - t_last
            t_last = time.time()
            log("step %d lr %.2e loss %.3f lm %.3f ans %.3f aux %.3f gnorm %.2f tokens %.1fM (%.1fs)"
                % (step, lr, s[0], s[1], s[2], s[3], float(gn), tokens_seen / 1e6, dt))
    if not saved_stable:
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                    "tokens": tokens_seen, "part": part, "config": cfg.dict()}, a.stable)
    log("trained: steps", step, "tokens", tokens_seen)
    res = evaluate(model, heldout, a.vocab, syn, a, dev)
    res.update(steps=step, tokens=tokens_seen, part=part, params=n_params, args=vars(a))
    log("eval", json.dumps(res))
    if a.out:
        with open(os.path.join(a.out, "result.json"), "w") as f:
            json.dump(res, f, indent=1)
        save_weights(model, a.out)
        with open(os.path.join(a.out, "config.json"), "w") as f:
            json.dump(cfg.dict(), f)
    log("done")


if __name__ == "__main__":
    main()
