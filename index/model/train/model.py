"""model.py - ctxd's reference model in PyTorch: llama.cpp's `llama` layout.

Pre-norm decoder: RMSNorm, attention with grouped K/V heads (query head h uses
K/V head h // (n_head / n_kv_head), as llama.cpp groups them) and RoPE in
llama.cpp's NORM mode (adjacent pairs (2i, 2i+1) rotated), SwiGLU feed-forward,
a final RMSNorm and the token embedding as output matrix (tied; llama.cpp's
llama architecture falls back to token_embd when the GGUF has no output.weight).
Parameter names follow the GGUF tensor names (export.py maps them 1:1).
"""
import math
from dataclasses import dataclass, asdict

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class Config:
    vocab: int = 50257
    d: int = 384
    n_layer: int = 8
    n_head: int = 6
    n_kv_head: int = 2
    ff: int = 1024
    ctx: int = 2048
    rope_base: float = 10000.0
    eps: float = 1e-5

    def dict(self):
        return asdict(self)


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight.type_as(x)


def rope_tables(T, hd, base, device):
    inv = base ** (-torch.arange(0, hd, 2, dtype=torch.float64, device=device) / hd)
    ang = torch.arange(T, dtype=torch.float64, device=device)[:, None] * inv[None, :]
    return torch.cos(ang).float(), torch.sin(ang).float()  # [T, hd/2]


def rope(x, cos, sin):
    """x [B, H, T, hd]; rotate pairs (2i, 2i+1) by pos * base^(-2i/hd)."""
    x0, x1 = x[..., 0::2].float(), x[..., 1::2].float()
    y0 = x0 * cos - x1 * sin
    y1 = x0 * sin + x1 * cos
    return torch.stack([y0, y1], dim=-1).flatten(-2).type_as(x)


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        hd = c.d // c.n_head
        self.attn_norm = RMSNorm(c.d, c.eps)
        self.attn_q = nn.Linear(c.d, c.n_head * hd, bias=False)
        self.attn_k = nn.Linear(c.d, c.n_kv_head * hd, bias=False)
        self.attn_v = nn.Linear(c.d, c.n_kv_head * hd, bias=False)
        self.attn_output = nn.Linear(c.n_head * hd, c.d, bias=False)
        self.ffn_norm = RMSNorm(c.d, c.eps)
        self.ffn_gate = nn.Linear(c.d, c.ff, bias=False)
        self.ffn_up = nn.Linear(c.d, c.ff, bias=False)
        self.ffn_down = nn.Linear(c.ff, c.d, bias=False)

    def forward(self, x, cos, sin, want_qk=False):
        c = self.c
        B, T, _ = x.shape
        hd = c.d // c.n_head
        h = self.attn_norm(x)
        q = self.attn_q(h).view(B, T, c.n_head, hd).transpose(1, 2)
        k = self.attn_k(h).view(B, T, c.n_kv_head, hd).transpose(1, 2)
        v = self.attn_v(h).view(B, T, c.n_kv_head, hd).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        rep = c.n_head // c.n_kv_head
        kr = k.repeat_interleave(rep, dim=1)
        vr = v.repeat_interleave(rep, dim=1)
        if hasattr(F, "scaled_dot_product_attention"):
            o = F.scaled_dot_product_attention(q, kr, vr, is_causal=True)
        else:  # PyTorch < 2.0 (Debian 12's python3-torch, used for checks on the CPU)
            s = (q.float() @ kr.float().transpose(-1, -2)) / math.sqrt(hd)
            s = s.masked_fill(torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
            o = (torch.softmax(s, -1) @ vr.float()).type_as(q)
        x = x + self.attn_output(o.transpose(1, 2).reshape(B, T, c.n_head * hd))
        h = self.ffn_norm(x)
        x = x + self.ffn_down(F.silu(self.ffn_gate(h)) * self.ffn_up(h))
        return (x, q, kr) if want_qk else (x, None, None)


class LM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.token_embd = nn.Embedding(c.vocab, c.d)
        self.blocks = nn.ModuleList([Block(c) for _ in range(c.n_layer)])
        self.output_norm = RMSNorm(c.d, c.eps)
        hd = c.d // c.n_head
        cos, sin = rope_tables(c.ctx, hd, c.rope_base, None)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.apply(self._init)
        for b in self.blocks:  # scaled residual projections (GPT-2)
            nn.init.normal_(b.attn_output.weight, std=0.02 / math.sqrt(2 * c.n_layer))
            nn.init.normal_(b.ffn_down.weight, std=0.02 / math.sqrt(2 * c.n_layer))

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, ids, want_qk=False):
        """ids [B, T] -> final hidden states [B, T, d] (and the last layer's
        post-RoPE q [B, H, T, hd] and grouped k [B, H, T, hd])."""
        T = ids.shape[1]
        cos, sin = self.cos[:T], self.sin[:T]
        x = self.token_embd(ids)
        q = k = None
        for i, b in enumerate(self.blocks):
            x, q, k = b(x, cos, sin, want_qk and i == len(self.blocks) - 1)
        return self.output_norm(x), q, k

    def logits(self, h):
        return h @ self.token_embd.weight.type_as(h).t()


def question_attention(q, k, rows):
    """Attention of chosen query rows of the last layer, summed mass on a span.
    q, k [B, H, T, hd]; rows [B, R, 4] = (position, span start, span end, valid).
    Returns (mean over heads of the mass each row puts on its span [B, R], valid)."""
    B, H, T, hd = q.shape
    pos = rows[..., 0].clamp(0, T - 1)
    qs = torch.gather(q, 2, pos[:, None, :, None].expand(B, H, pos.shape[1], hd))  # [B,H,R,hd]
    s = (qs.float() @ k.float().transpose(-1, -2)) / math.sqrt(hd)  # [B,H,R,T]
    j = torch.arange(T, device=q.device)
    s = s.masked_fill((j[None, None, None, :] > pos[:, None, :, None]), float("-inf"))
    p = torch.softmax(s, dim=-1)
    span = (j[None, None, :] >= rows[..., 1:2]) & (j[None, None, :] < rows[..., 2:3])  # [B,R,T]
    mass = (p * span[:, None].float()).sum(-1).mean(1)  # [B,R]
    return mass, rows[..., 3] > 0
