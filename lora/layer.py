"""LoRA: a frozen `nn.Linear` plus a trainable low-rank update, written as the paper's equation, and put into a model.

LoRA (Hu et al. 2021, arXiv:2106.09685, section 4.1) keeps a pretrained weight W (d_out, d_in) frozen and learns
its update as a product of two thin matrices:

    h = W x + (alpha / r) * B A x          A: (r, d_in), B: (d_out, r), r << min(d_in, d_out)

Only A and B train: r * (d_in + d_out) numbers instead of d_in * d_out. B starts at zero, so at step 0 the adapted
model is exactly the pretrained one. Dividing by r means changing r does not force re-tuning the learning rate
much; rsLoRA (Kalajdzievski 2023, arXiv:2312.03732) shows alpha / r shrinks the update too much at large ranks and
uses alpha / sqrt(r) (`use_rslora=True`). Initialisation and dropout follow peft 0.21 (`tuners/lora/layer.py`): A
as `nn.Linear` draws its weight (kaiming_uniform_, a=sqrt(5)), B zeros, dropout on A's input only. The update is
linear, so `merge()` can fold it into W for inference at the plain Linear's cost; `unmerge()` takes it out again.

Which layers (section 4.2 and 7.1): the attention projections, W_q and W_v together working best for a fixed
budget; the seeds do the same on FLAN-T5 (targets "q", "v"). A target is matched against the *last* component of a
module's name, exactly: "v" must never match `relative_attention_bias`, which a substring test would. Everything
is checked before the model is touched, so a failing call leaves it as it was.
"""
from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn


def check_hyperparameters(r, alpha, dropout) -> None:
    """Raise a ValueError naming the bad argument; called before anything in a model is changed."""
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise ValueError(f"LoRA rank r must be a positive integer, got r={r!r} (--lora-r)")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ValueError(f"LoRA alpha must be a positive number, got alpha={alpha!r} (--lora-alpha)")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"LoRA dropout must be in [0, 1), got dropout={dropout!r} (--lora-dropout)")


def lora_scaling(r: int, alpha: float, use_rslora: bool = False) -> float:
    """Hu et al. 2021 sec. 4.1: alpha / r; rsLoRA (Kalajdzievski 2023): alpha / sqrt(r)."""
    return alpha / math.sqrt(r) if use_rslora else alpha / r


class LoRALinear(nn.Module):
    """`base(x) + scaling * B A dropout(x)`, with `base` a frozen `nn.Linear` (Hu et al. 2021, eq. 3). A and B take
    `base.weight`'s device and dtype unless told otherwise; `merged` says whether W currently holds the update.
    LoRA's family builds on it: lora/dora.py and lora/pissa.py subclass it, lora/nf4.py quantises its `base`."""

    variant = "lora"  # what adapter_file.py records; "dora" and "pissa" in the subclasses

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0, use_rslora: bool = False,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise ValueError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        check_hyperparameters(r, alpha, dropout)
        self.base = base.requires_grad_(False)  # W (and its bias) stay as pretrained
        self.r, self.alpha, self.use_rslora = r, alpha, use_rslora
        self.scaling = lora_scaling(r, alpha, use_rslora)
        # Kept apart from the module: cpu_speed.py swaps nn.Dropout, and the adapter file must record what trained.
        self.dropout_p = float(dropout)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        factory = dict(device=device if device is not None else base.weight.device,
                       dtype=dtype if dtype is not None else base.weight.dtype)
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, **factory))   # (r, d_in)
        self.lora_B = nn.Parameter(torch.empty(base.out_features, r, **factory))  # (d_out, r)
        self.merged = False
        self.reset_lora_parameters()

    @property
    def weight(self) -> torch.Tensor:
        """The frozen W, `base.weight`, as peft's layer exposes it: the model around a wrapped Linear may read it
        (T5's feed-forward checks `wo.weight.dtype` before calling `wo`)."""
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def reset_lora_parameters(self) -> None:
        """peft's default init: A as nn.Linear's weight (kaiming_uniform_, a=sqrt(5)), B = 0 so B A = 0."""
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (..., d_in), any number of leading dims
        h = self.base(x)  # (..., d_in) -> (..., d_out): the frozen W x (+ b)
        if self.merged:
            return h  # W already holds W + scaling * B A
        x = self.dropout(x).to(self.lora_A.dtype)  # (..., d_in); dropout only on the adapter's path
        down = x @ self.lora_A.T  # (..., d_in) -> (..., r)
        up = down @ self.lora_B.T  # (..., r) -> (..., d_out)
        return h + (up * self.scaling).to(h.dtype)  # (..., d_out)

    def delta_weight(self) -> torch.Tensor:
        """The update LoRA adds to W: scaling * B A, shape (d_out, d_in), like `base.weight`."""
        return (self.lora_B @ self.lora_A) * self.scaling  # (d_out, r) @ (r, d_in) -> (d_out, d_in)

    def adapter_tensors(self) -> dict[str, torch.Tensor]:
        """This layer's tensors in peft's adapter file, by the last part of their key (lora/adapter_file.py)."""
        return {"lora_A": self.lora_A, "lora_B": self.lora_B}  # (r, d_in), (d_out, r)

    def saved_r_alpha(self) -> tuple[int, float]:
        """The r and alpha the adapter file records for these tensors (PiSSA's conversion doubles them)."""
        return self.r, self.alpha

    def check_mergeable(self) -> None:
        if self.merged:
            raise ValueError("this LoRALinear is already merged; merging twice would add B A to W twice")
        if not isinstance(self.base, nn.Linear):
            raise ValueError(f"this LoRALinear's base is a {type(self.base).__name__}, not an nn.Linear: call "
                             "lora.nf4.dequantize_base(model) to merge into a dequantised base")

    @torch.no_grad()
    def merge(self) -> None:
        """W <- W + scaling * B A: the merged layer is a plain Linear in cost; forward then uses `base` alone."""
        self.check_mergeable()
        self.base.weight += self.delta_weight().to(self.base.weight.dtype)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W <- W - scaling * B A: gives back the frozen weight (up to rounding) so A and B can train again."""
        if not self.merged:
            raise ValueError("this LoRALinear is not merged; call merge() before unmerge()")
        self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
        self.merged = False

    def extra_repr(self) -> str:
        rule = "alpha/sqrt(r)" if self.use_rslora else "alpha/r"
        return (f"d_in={self.base.in_features}, d_out={self.base.out_features}, r={self.r}, alpha={self.alpha}, "
                f"scaling={self.scaling:.4g} ({rule}), dropout={self.dropout_p:g}, merged={self.merged}")


# ---- putting LoRA into a model ---------------------------------------------------------------------------------

def parse_targets(targets: str | Iterable[str]) -> tuple[str, ...]:
    """The one parser of target names: "q,v" (--lora-targets) or ("q", "v") -> ("q", "v"), blanks and repeats
    dropped; raises if no name is left."""
    names = targets.split(",") if isinstance(targets, str) else list(targets)
    names = tuple(dict.fromkeys(name.strip() for name in names if name.strip()))
    if not names:
        raise ValueError(f"LoRA targets must name at least one nn.Linear (e.g. 'q,v'), got {targets!r}")
    return names


@dataclass(frozen=True)
class LoRAConfig:
    """What `add_lora` puts into a model, checked when made. The defaults here are the only ones (run.py's
    --lora-* flags read them): the course's seeds for flan-t5-base, r 32, alpha 32, dropout 0.05 on q and v.

    `init_seed` makes A's draw reproducible from the config alone: add_lora calls `torch.manual_seed(init_seed)`
    before drawing (None: the caller's random state as it stands, as peft does)."""
    targets: tuple[str, ...] = ("q", "v")  # "q,v" is accepted too and becomes ("q", "v")
    r: int = 32
    alpha: float = 32
    dropout: float = 0.05
    use_rslora: bool = False
    init_seed: int | None = None
    variant: str = "lora"  # "dora" (lora/dora.py) or "pissa" (lora/pissa.py): LoRA's family

    def __post_init__(self):
        object.__setattr__(self, "targets", parse_targets(self.targets))  # frozen: set once, here
        check_hyperparameters(self.r, self.alpha, self.dropout)
        if self.init_seed is not None and (isinstance(self.init_seed, bool) or not isinstance(self.init_seed, int)):
            raise ValueError(f"LoRA init_seed must be a whole number or None, got {self.init_seed!r} "
                             "(--lora-init-seed)")
        if self.variant not in VARIANTS:
            raise ValueError(f"--lora-variant {self.variant!r}: expected one of {', '.join(VARIANTS)}")


VARIANTS = ("lora", "dora", "pissa")


def layer_class(variant: str) -> type[LoRALinear]:
    """The layer of each variant, its file imported only when asked for (a plain LoRA run never loads it)."""
    if variant == "dora":
        from lora.dora import DoRALinear

        return DoRALinear
    if variant == "pissa":
        from lora.pissa import PiSSALinear

        return PiSSALinear
    return LoRALinear


def lora_layers(model: nn.Module) -> list[tuple[str, LoRALinear]]:
    """(name, layer) for every LoRALinear in `model`, in `named_modules()` order."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, LoRALinear)]


def find_targets(model: nn.Module, targets: str | Iterable[str]) -> list[str]:
    """Names of the nn.Linear modules whose last name component is one of `targets`; changes nothing.

    Raises a ValueError for a target that matches no nn.Linear, listing the Linear names there are.
    """
    targets = parse_targets(targets)
    linear_names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    last_components = sorted({name.rsplit(".", 1)[-1] for name in linear_names})
    for target in targets:
        if target not in last_components:
            # "query" or "q_proj" (other models' names) -> "q"; "wi" -> "wi_0", "wi_1"; typos -> difflib
            close = [name for name in last_components if target.startswith(name) or name.startswith(target)]
            close = close or difflib.get_close_matches(target, last_components, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(f"LoRA target {target!r} matches no nn.Linear in {type(model).__name__}.{hint} "
                             f"The Linear layers' names (last component) are: {', '.join(last_components)}")
    return [name for name in linear_names if name.rsplit(".", 1)[-1] in targets]


def add_lora(model: nn.Module, config: LoRAConfig) -> list[str]:
    """Wrap every nn.Linear named in `config.targets` (last name components) in a LoRALinear, in place; freeze
    every other parameter; return the wrapped names. With `config.init_seed`, A is drawn after reseeding with it."""
    if not isinstance(config, LoRAConfig):
        raise ValueError(f"add_lora(model, config) takes a LoRAConfig (e.g. LoRAConfig(r=8, alpha=16)), got "
                         f"{type(config).__name__}")
    already = lora_layers(model)
    if already:
        raise ValueError(f"the model already has LoRA layers (e.g. {already[0][0]}); adding LoRA twice would "
                         "wrap a LoRALinear in another. Call lora.merge.unload_lora(model) first")
    names = find_targets(model, config.targets)
    if config.init_seed is not None:
        torch.manual_seed(config.init_seed)  # every A below is drawn from this seed, in named_modules() order
    make = layer_class(config.variant)
    for name in names:
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        layer = make(getattr(parent, child_name), config.r, config.alpha, config.dropout, config.use_rslora)
        setattr(parent, child_name, layer)
    for param in model.parameters():
        param.requires_grad_(False)
    for _, layer in lora_layers(model):
        for name, param in layer.named_parameters():  # lora_A, lora_B (and DoRA's lora_magnitude_vector)
            param.requires_grad_(name.startswith("lora_"))
    return names
