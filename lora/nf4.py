"""A 4-bit frozen base: NormalFloat4 weights under LoRA (QLoRA, Dettmers et al. 2023, arXiv:2305.14314).

QLoRA (section 3) stores every frozen weight in 4 bits and trains LoRA on top in the compute dtype; gradients still
flow through the dequantised W into A and B. Its data type, NF4, has 16 values placed at the quantiles of a
standard normal (pretrained weights are roughly normal), scaled to [-1, 1], with an exact 0 (appendix E; the
table below is bitsandbytes' `get_4bit_type("nf4")`). A weight is quantised in blocks of 64 values:

    c = max |W_block|                               absmax, one float32 per block
    q_i = argmin_j |W_i / c - NF4[j]|               4 bits: the nearest code value (bitsandbytes rounds at midpoints)
    W_i ~ c * NF4[q_i]                              dequantised in the forward pass, (d_out, d_in)

Two 4-bit codes share a byte (the first in the high half, as bitsandbytes packs them): 0.5 byte per weight plus
4 / 64 for the absmax, 4.5 bits. Double quantisation (section 3) quantises the absmax again, in blocks of 256 to
8 bits after subtracting their mean, plus one float32 per 256 blocks: 4 + 8/64 + 32/(64*256) = 4.127 bits.
bitsandbytes' second level uses its 8-bit "dynamic" code; this file uses plain symmetric int8, the same bytes.

Without double quantisation `quantize_nf4` / `dequantize_nf4` equal bitsandbytes' `quantize_4bit` /
`dequantize_4bit` (quant_type "nf4", blocksize 64) value for value: tests/test_lora_family.py.
`quantize_base(model)` replaces every frozen nn.Linear but `lm_head` (bitsandbytes leaves the output layer
unquantised too) by an `NF4Linear`; the backward pass dequantises again rather than keeping W, as bitsandbytes'
`MatMul4Bit` does. To merge LoRA into W, `dequantize_base(model)` first gives back plain Linear layers.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

NF4_CODE = (-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
            -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
            0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
            0.7229568362236023, 1.0)
BLOCK = 64  # weights per absmax (QLoRA's and bitsandbytes' default)
ABSMAX_BLOCK = 256  # absmax values per second-level constant, with double quantisation
SKIPPED = ("lm_head",)  # left in full precision


@dataclass(frozen=True)
class QuantConfig:
    kind: str = "nf4"
    double_quant: bool = False

    def __post_init__(self):
        if self.kind != "nf4":
            raise ValueError(f"--quantize-base {self.kind!r}: only nf4 is implemented")


def quantize_nf4(W: torch.Tensor, block: int = BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """(packed codes: uint8 (ceil(n / 2),), absmax: float32 (ceil(n / block),)) for any tensor of n values."""
    flat = W.detach().reshape(-1).float()  # (n,)
    n = flat.numel()
    blocks = F.pad(flat, (0, -n % block)).view(-1, block)  # (n_blocks, block), the last one padded with zeros
    absmax = blocks.abs().amax(dim=1)  # (n_blocks,): c
    scaled = (blocks * (1.0 / absmax.clamp(min=1e-38))[:, None]).clamp(-1, 1)  # W / c in [-1, 1], as bitsandbytes
    scaled = F.pad(scaled.reshape(-1)[:n], (0, n % 2))  # an even count (a padded 0): two codes per byte
    code = torch.tensor(NF4_CODE, device=W.device)
    q = torch.bucketize(scaled, (code[:-1] + code[1:]) / 2).to(torch.uint8)  # the nearest of the 16 values
    return (q[0::2] << 4) | q[1::2], absmax  # first code in the high 4 bits


def dequantize_nf4(packed: torch.Tensor, absmax: torch.Tensor, shape: torch.Size, dtype: torch.dtype,
                   block: int = BLOCK) -> torch.Tensor:
    """c * NF4[q] for every value, in `shape` and `dtype`."""
    n = shape.numel()
    q = torch.stack([packed >> 4, packed & 0xF], dim=1).reshape(-1)[:n].long()  # (n,) codes
    values = torch.tensor(NF4_CODE, device=packed.device)[q]  # (n,) in [-1, 1]
    values = F.pad(values, (0, -n % block)).view(-1, block) * absmax[:, None]  # (n_blocks, block) * c
    return values.reshape(-1)[:n].reshape(shape).to(dtype)


def quantize_absmax(absmax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Double quantisation: (int8 codes (n_blocks,), float32 scale per 256 of them, the float32 mean)."""
    mean = absmax.mean()
    centred = F.pad(absmax - mean, (0, -absmax.numel() % ABSMAX_BLOCK)).view(-1, ABSMAX_BLOCK)  # (m, 256)
    scale = centred.abs().amax(dim=1).clamp(min=1e-38) / 127  # (m,)
    codes = torch.round(centred / scale[:, None]).to(torch.int8).reshape(-1)[:absmax.numel()]
    return codes, scale, mean


def dequantize_absmax(codes: torch.Tensor, scale: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    n = codes.numel()
    values = F.pad(codes.float(), (0, -n % ABSMAX_BLOCK)).view(-1, ABSMAX_BLOCK) * scale[:, None]
    return values.reshape(-1)[:n] + mean  # (n_blocks,)


class NF4Linear(nn.Module):
    """A frozen Linear whose weight lives as NF4 buffers and is dequantised, in its original dtype, when used."""

    def __init__(self, linear: nn.Linear, double_quant: bool = False):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.shape, self.dtype, self.double_quant = linear.weight.shape, linear.weight.dtype, double_quant
        packed, absmax = quantize_nf4(linear.weight)
        self.register_buffer("packed", packed)  # uint8 (d_out * d_in / 2,)
        if double_quant:
            codes, scale, mean = quantize_absmax(absmax)
            self.register_buffer("absmax_codes", codes)  # int8 (n_blocks,)
            self.register_buffer("absmax_scale", scale)  # float32 (n_blocks / 256,)
            self.register_buffer("absmax_mean", mean)  # float32 ()
        else:
            self.register_buffer("absmax", absmax)  # float32 (n_blocks,)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)
        self.weight = None  # no full-precision W is kept (T5's feed-forward checks `wo.weight` before casting)

    def dequantized_weight(self) -> torch.Tensor:  # (d_out, d_in)
        absmax = (dequantize_absmax(self.absmax_codes, self.absmax_scale, self.absmax_mean) if self.double_quant
                  else self.absmax)
        return dequantize_nf4(self.packed, absmax, self.shape, self.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., d_in) -> (..., d_out)
        h = DequantizedMatmul.apply(x, self)
        return h if self.bias is None else h + self.bias

    def extra_repr(self) -> str:
        return f"d_in={self.in_features}, d_out={self.out_features}, nf4, double_quant={self.double_quant}"


class DequantizedMatmul(torch.autograd.Function):
    """x W^T with W dequantised in the forward pass and again in the backward, so only 4 bits stay in memory."""

    @staticmethod
    def forward(ctx, x, layer: NF4Linear):
        ctx.layer, ctx.x_dtype = layer, x.dtype
        return F.linear(x, layer.dequantized_weight())  # (..., d_in) @ (d_in, d_out); autocast casts both

    @staticmethod
    def backward(ctx, grad):  # grad: (..., d_out) -> dL/dx (..., d_in); W is frozen, so no dL/dW
        W = ctx.layer.dequantized_weight()
        return (grad @ W.to(grad.dtype)).to(ctx.x_dtype), None


def _replace(model: nn.Module, wanted: type, make) -> list[str]:
    names = [name for name, module in model.named_modules()
             if type(module) is wanted and name.rsplit(".", 1)[-1] not in SKIPPED]
    for name in names:
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child_name, make(getattr(parent, child_name)))
    return names


def quantize_base(model: nn.Module, config: QuantConfig = QuantConfig()) -> list[str]:
    """Every frozen nn.Linear (a LoRA layer's `base` too) but `lm_head` becomes an NF4Linear; returns the names."""
    trainable = [name for name, module in model.named_modules() if type(module) is nn.Linear and
                 any(p.requires_grad for p in module.parameters()) and name.rsplit(".", 1)[-1] not in SKIPPED]
    if trainable:
        raise ValueError(f"quantize_base: {trainable[0]} is trainable; only a frozen base is quantised "
                         "(call add_lora first, which freezes it)")
    return _replace(model, nn.Linear, lambda linear: NF4Linear(linear, config.double_quant))


def dequantize_base(model: nn.Module) -> list[str]:
    """Every NF4Linear back to a plain nn.Linear holding its dequantised W (what merging LoRA into W needs)."""
    def plain(layer: NF4Linear) -> nn.Linear:
        linear = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                           device=layer.packed.device, dtype=layer.dtype)
        with torch.no_grad():
            linear.weight.copy_(layer.dequantized_weight())
            if layer.bias is not None:
                linear.bias.copy_(layer.bias)
        return linear.requires_grad_(False)
    return _replace(model, NF4Linear, plain)
