"""Hessian of the mean training NLL of a causal LM as a linear operator, and its spectrum.

Finzi et al. (ICLR 2025), App. B: quantizability is explained through Tr(H^1/2) of the loss
Hessian at the trained weights; we estimate it with stochastic Lanczos quadrature (SLQ,
``lanczos.py``) on exact Hessian-vector products (Pearlmutter: H v = d/dt grad L(theta + t v),
computed reverse-over-reverse as grad(grad(L) . v), or forward-over-reverse with
``torch.func.jvp(grad)``).

The loss is the *mean next-token NLL over every target in a fixed batch of token windows*:
``input_ids`` of shape (B, T); each window's positions 1..T-1 are targets with the preceding
positions of the same window as context, so there are B * (T - 1) targets, each weighted equally.
**The caller guarantees that the windows are training data** of the checkpoint (e.g. drawn with a
fixed seed from the training token stream prefix the checkpoint consumed): Appendix B is about the
Hessian of the training loss at the solution, not of a held-out loss.

Attention must be ``eager``: PyTorch's fused SDPA kernels on CPU have no double backward
(``derivative for aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented``),
so :class:`HessianOperator` *raises* :class:`EagerAttentionRequired` for any other
implementation rather than silently switching the caller's model.  Load checkpoints with
:func:`load_model_for_hessian` (or ``attn_implementation="eager"``).

Everything one algorithm needs from the model goes through one object with ``shape`` and
``matvec`` (curvlinops-style), so SLQ, Hutchinson, dense checks and scipy all consume the same
operator.  Why not curvlinops (3.0.1; it does accept dict inputs via ``batch_size_fn``): its
HVP is ``torch.func.jvp(torch.func.jacrev(loss))``, and on GPT-NeoX that composition returns a
*wrong* Hessian column (``attention.dense.bias``: off by ~1e-2 absolute on the test fixture, as
does ``torch.func.hessian``), while ``jvp(grad(loss))``, double backward and finite differences
agree; its Lanczos density has no reorthogonalization and one probe; and it pulls backpack,
linear_operator and einconv into a pinned environment.  See docs/hessian.md.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .lanczos import (
    DenseOperator,
    HutchinsonResult,
    SLQResult,
    as_operator,
    hutchinson_trace,
    lanczos,
    rademacher,
    slq,
)

__all__ = [
    "DenseOperator",
    "EagerAttentionRequired",
    "HessianOperator",
    "HutchinsonResult",
    "SLQResult",
    "as_operator",
    "hessian_spectrum",
    "hutchinson_trace",
    "lanczos",
    "load_model_for_hessian",
    "rademacher",
    "require_eager_attention",
    "slq",
]

ParamSelector = None | Sequence[str] | Callable[[str, torch.nn.Parameter], bool]

#: Attention used *inside* HessianOperator calls on an eager model: transformers' eager attention
#: with the softmax in the model's dtype.  transformers' own eager attention computes the softmax
#: in float32 and casts back, which caps float64 HVPs at ~1e-8 relative accuracy (and makes the
#: HVP only approximately linear and symmetric); for float32 models the two are identical.
NATIVE_EAGER = "genbound_eager_native"


def _eager_attention_native(
    module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs
):
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    if key.shape[1] != query.shape[1]:  # grouped-query attention: repeat the kv heads
        rep = query.shape[1] // key.shape[1]
        key = key.repeat_interleave(rep, dim=1)
        value = value.repeat_interleave(rep, dim=1)
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask[..., : key.shape[-2]]
    attn_weights = F.softmax(attn_weights, dim=-1)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


def _register_native_eager() -> bool:
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, eager_mask
    except ImportError:  # pragma: no cover - transformers without the attention interface
        return False
    AttentionInterface.register(NATIVE_EAGER, _eager_attention_native)
    AttentionMaskInterface.register(NATIVE_EAGER, eager_mask)
    return True


_HAVE_NATIVE_EAGER = _register_native_eager()


class EagerAttentionRequired(ValueError):
    """The model's attention implementation cannot be differentiated twice."""


def require_eager_attention(model: torch.nn.Module) -> None:
    """Raise :class:`EagerAttentionRequired` unless ``model.config`` says ``eager`` attention."""
    config = getattr(model, "config", None)
    if config is None:
        return  # not a transformers model: nothing to check
    impl = getattr(config, "_attn_implementation", None)
    if impl != "eager":
        raise EagerAttentionRequired(
            f"Hessian-vector products need attn_implementation='eager', this model uses {impl!r} "
            "(fused SDPA/flash kernels have no double backward). Build it with "
            "<Arch>Config(..., attn_implementation='eager'), load it with "
            "load_model_for_hessian(path) / from_pretrained(path, attn_implementation='eager'), "
            "or call model.set_attn_implementation('eager') first."
        )


def load_model_for_hessian(
    path: str, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", **kwargs
):
    """``AutoModelForCausalLM.from_pretrained`` with eager attention, in ``dtype``, in eval mode."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        path, attn_implementation="eager", dtype=dtype, **kwargs
    )
    return model.to(device).eval()


def _select_params(model: torch.nn.Module, params: ParamSelector) -> list[tuple[str, Any]]:
    """Chosen (name, parameter) pairs in model order.  A tied parameter (shared input/output
    embedding) is one parameter, listed once under its first name; its other name selects it
    too."""
    named = list(model.named_parameters())
    if params is None:
        chosen = named
    elif callable(params):
        chosen = [(n, p) for n, p in named if params(n, p)]
    else:
        wanted = list(params)
        if isinstance(params, str):
            raise TypeError("params must be a sequence of names, not one string")
        by_name = dict(named)
        first: dict[int, str] = {}
        alias: dict[str, str] = {}
        for n, p in model.named_parameters(remove_duplicate=False):
            alias[n] = first.setdefault(id(p), n)
        unknown = [n for n in wanted if n not in by_name and n not in alias]
        if unknown:
            raise KeyError(f"unknown parameter names: {unknown[:5]}")
        keep = {alias.get(n, n) for n in wanted}
        chosen = [(n, p) for n, p in named if n in keep]  # model order, not caller order
    if not chosen:
        raise ValueError("parameter selection is empty")
    return chosen


class HessianOperator:
    """H = d^2/dtheta^2 of the mean training NLL over ``input_ids``, theta = a parameter subset.

    Parameters
    ----------
    model : a transformers causal LM returning ``.logits`` (GPT-NeoX, Llama, GPT-2, ...), with
        eager attention (transformers' attention interface; models with their own eager code
        path keep it).
    input_ids : LongTensor (B, T), T >= 2: fixed *training* windows (see the module docstring).
    params : None (all parameters, in ``named_parameters`` order), a sequence of parameter names,
        or a predicate ``(name, param) -> bool``.  The flattened vector concatenates the chosen
        parameters in model order; :attr:`param_names` / :attr:`offsets` give the layout.
    micro_batch_size : windows per forward/backward (gradient accumulation: the HVP is summed
        over micro-batches, each contributing its NLL sum / the total target count); default B.
    dtype : float32 or float64.  A model in another dtype is deep-copied and cast (the caller's
        model is never modified); a model already in ``dtype`` is used in place (its
        ``requires_grad`` flags and train/eval mode are restored after every call).
    device : where to compute; default the model's device.
    method : ``"double_backward"`` (default): reverse-over-reverse, ``autograd.grad`` of
        (grad . v), ~2.8x a forward+backward on CPU (bench/bench_hvp.py); ``"fwd_rev"``:
        forward-over-reverse, ``torch.func.jvp`` of ``torch.func.grad`` through
        ``functional_call``, ~4-5x on CPU (torch.func overhead; worth re-timing on a GPU).  Both
        are Pearlmutter's exact H v and agree to float64 rounding (tests).
    cache_graph : (double_backward only) keep the first-order gradient graph of every micro-batch (built with
        ``create_graph`` at the first ``matvec``) so each HVP is a single extra backward pass
        instead of forward + backward + double backward.  Holds all activations of the whole batch
        twice over: for small models (tests, the demo), not Pythia.  Stale if the weights change
        (:meth:`clear_cache`).

    ``matvec`` accepts a 1-D torch tensor (any float dtype/device) or numpy array and returns the
    same kind; :attr:`n_matvecs` counts HVPs (one HVP = one pass of the chosen method over every
    micro-batch).  Note: transformers' eager GPT-NeoX attention runs its softmax in float32 even
    for float64 models, so float64 HVPs are accurate to ~1e-10 relative, not 1e-16.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        input_ids: torch.Tensor,
        *,
        params: ParamSelector = None,
        micro_batch_size: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
        method: str = "double_backward",
        cache_graph: bool = False,
    ):
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        if method not in ("fwd_rev", "double_backward"):
            raise ValueError(f"method must be 'fwd_rev' or 'double_backward', got {method!r}")
        if cache_graph and method != "double_backward":
            raise ValueError("cache_graph needs method='double_backward'")
        self.method = method
        require_eager_attention(model)
        ids = torch.as_tensor(input_ids)
        if ids.ndim != 2 or ids.shape[1] < 2:
            raise ValueError(f"input_ids must be (B, T) with T >= 2, got {tuple(ids.shape)}")
        if ids.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"input_ids must be integer token ids, got {ids.dtype}")
        vocab = getattr(getattr(model, "config", None), "vocab_size", None)
        if vocab is not None and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
            raise ValueError(f"token ids outside [0, {vocab})")

        if any(p.dtype != dtype for p in model.parameters()):
            model = copy.deepcopy(model).to(dtype)
        if device is None:
            device = next(model.parameters()).device
        self.device = torch.device(device)
        model = model.to(self.device)  # no-op when already there
        self.model = model
        self.dtype = dtype
        self.input_ids = ids.to(device=self.device, dtype=torch.long)
        b, t = self.input_ids.shape
        self.n_targets = b * (t - 1)
        mbs = b if micro_batch_size is None else int(micro_batch_size)
        if mbs < 1:
            raise ValueError("micro_batch_size must be >= 1")
        self.micro_batch_size = mbs

        chosen = _select_params(model, params)
        self.param_names: list[str] = [n for n, _ in chosen]
        self._params: list[torch.nn.Parameter] = [p for _, p in chosen]
        self.shapes: list[torch.Size] = [p.shape for p in self._params]
        self.numels: list[int] = [p.numel() for p in self._params]
        self.offsets: list[int] = list(np.cumsum([0, *self.numels])[:-1].tolist())
        n = int(sum(self.numels))
        self.shape = (n, n)
        self.n_matvecs = 0
        self.cache_graph = bool(cache_graph)
        self._graphs = None

    # ---- layout ------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.shape[0]

    def flatten(self, tensors: Iterable[torch.Tensor]) -> torch.Tensor:
        return torch.cat([t.reshape(-1) for t in tensors])

    def unflatten(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return [c.view(s) for c, s in zip(torch.split(flat, self.numels), self.shapes, strict=True)]

    def parameters_flat(self) -> torch.Tensor:
        """The current values of the selected parameters, flattened."""
        return self.flatten(p.detach() for p in self._params)

    # ---- the loss ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _grad_scope(self):
        """requires_grad only on the chosen parameters, eval mode, native-precision eager
        attention; all three restored afterwards."""
        flags = [(p, p.requires_grad) for p in self.model.parameters()]
        training = self.model.training
        chosen = {id(p) for p in self._params}
        config = getattr(self.model, "config", None)
        attn = getattr(config, "_attn_implementation", None)
        try:
            for p, _ in flags:
                p.requires_grad_(id(p) in chosen)
            self.model.eval()
            if attn == "eager" and _HAVE_NATIVE_EAGER:
                config._attn_implementation = NATIVE_EAGER
            yield
        finally:
            if attn == "eager" and _HAVE_NATIVE_EAGER:
                config._attn_implementation = attn
            for p, f in flags:
                p.requires_grad_(f)
            self.model.train(training)

    def _micro_batches(self):
        return torch.split(self.input_ids, self.micro_batch_size, dim=0)

    def _mb_loss(self, ids: torch.Tensor, params: dict | None = None) -> torch.Tensor:
        """This micro-batch's share of the mean NLL: its NLL sum / total target count.

        ``params``: a name -> tensor dict to call the model functionally with (torch.func)."""
        kwargs = {"input_ids": ids, "use_cache": False}
        if params is None:
            logits = self.model(**kwargs).logits
        else:
            logits = torch.func.functional_call(self.model, params, (), kwargs).logits
        logits = logits[:, :-1]
        nll = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).to(self.dtype),
            ids[:, 1:].reshape(-1),
            reduction="sum",
        )
        return nll / self.n_targets

    def loss(self) -> float:
        """Mean NLL (nats/token) over the batch."""
        with torch.no_grad(), self._grad_scope():
            return float(sum(self._mb_loss(mb) for mb in self._micro_batches()))

    def gradient(self) -> torch.Tensor:
        """Flattened gradient of the mean NLL w.r.t. the chosen parameters."""
        out = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        with self._grad_scope():
            for mb in self._micro_batches():
                g = torch.autograd.grad(
                    self._mb_loss(mb), self._params, allow_unused=True, materialize_grads=True
                )
                out += self.flatten(g)
        return out

    # ---- the operator ------------------------------------------------------------------------
    def _first_order_graphs(self):
        """Per micro-batch: gradients built with create_graph (tensors that depend on theta)."""
        for mb in self._micro_batches():
            grads = torch.autograd.grad(
                self._mb_loss(mb),
                self._params,
                create_graph=True,
                allow_unused=True,
                materialize_grads=True,
            )
            yield grads

    def _hvp_double_backward(self, vs: list[torch.Tensor], out: torch.Tensor) -> None:
        if self.cache_graph and self._graphs is None:
            self._graphs = list(self._first_order_graphs())
        graphs = self._graphs if self.cache_graph else self._first_order_graphs()
        for grads in graphs:
            # d/dtheta (g . v) = H v: backward of g with grad_outputs v through g's graph
            live = [(g, u) for g, u in zip(grads, vs, strict=True) if g.requires_grad]
            if not live:  # the gradient does not depend on the parameters at all
                continue
            hv = torch.autograd.grad(
                [g for g, _ in live],
                self._params,
                grad_outputs=[u for _, u in live],
                retain_graph=self.cache_graph,
                allow_unused=True,
                materialize_grads=True,
            )
            out += self.flatten(hv)

    def _hvp_fwd_rev(self, vs: list[torch.Tensor], out: torch.Tensor) -> None:
        # grad, not jacrev: jvp(jacrev(loss)) (curvlinops, torch.func.hessian) gives a wrong
        # GPT-NeoX Hessian column; jvp(grad(loss)) agrees with double backward to 1e-16
        from torch.func import grad, jvp

        primals = {n: p.detach() for n, p in zip(self.param_names, self._params, strict=True)}
        tangents = dict(zip(self.param_names, vs, strict=True))
        for mb in self._micro_batches():
            _, hv = jvp(
                grad(lambda params, mb=mb: self._mb_loss(mb, params)), (primals,), (tangents,)
            )
            out += self.flatten(hv[n] for n in self.param_names)

    def matvec(self, v):
        """H v (Pearlmutter), summed over micro-batches; accepts/returns torch or numpy."""
        as_numpy = isinstance(v, np.ndarray)
        vt = torch.from_numpy(np.ascontiguousarray(v)) if as_numpy else v
        if vt.numel() != self.dim:
            raise ValueError(f"vector has {vt.numel()} entries, operator dimension is {self.dim}")
        in_dtype, in_device = vt.dtype, vt.device
        vt = vt.reshape(-1).to(device=self.device, dtype=self.dtype)
        vs = self.unflatten(vt)
        out = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        with self._grad_scope():
            if self.method == "fwd_rev":
                self._hvp_fwd_rev(vs, out)
            else:
                self._hvp_double_backward(vs, out)
        self.n_matvecs += 1
        if as_numpy:
            return out.detach().cpu().numpy().astype(v.dtype if v.dtype.kind == "f" else np.float64)
        out_dtype = in_dtype if in_dtype.is_floating_point else self.dtype
        return out.detach().to(device=in_device, dtype=out_dtype)

    def clear_cache(self) -> None:
        """Drop the cached first-order graph (call after changing the model's weights)."""
        self._graphs = None

    __call__ = matvec

    def __matmul__(self, v):
        return self.matvec(v)

    def dense(self, max_dim: int = 8192) -> torch.Tensor:
        """The full n x n Hessian from n unit-vector HVPs (small models only)."""
        if self.dim > max_dim:
            raise ValueError(f"dimension {self.dim} > max_dim={max_dim}; refusing to densify")
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        return torch.stack([self.matvec(eye[i]) for i in range(self.dim)], dim=1)

    def to_scipy(self):
        """A ``scipy.sparse.linalg.LinearOperator`` (float64 numpy in/out) over the same HVPs."""
        from scipy.sparse.linalg import LinearOperator

        def mv(x):
            return self.matvec(np.asarray(x, dtype=np.float64).reshape(-1)).astype(np.float64)

        return LinearOperator(self.shape, matvec=mv, rmatvec=mv, dtype=np.float64)

    def __repr__(self) -> str:
        return (
            f"HessianOperator(dim={self.dim}, params={len(self._params)} tensors, "
            f"batch={tuple(self.input_ids.shape)}, micro_batch_size={self.micro_batch_size}, "
            f"dtype={self.dtype}, device={self.device})"
        )


def hessian_spectrum(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    *,
    n_steps: int = 32,
    n_vectors: int = 2,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    params: ParamSelector = None,
    micro_batch_size: int | None = None,
    basis_device: str | torch.device | None = None,
    hutchinson_vectors: int = 8,
    method: str = "double_backward",
) -> dict:
    """One call for a checkpoint: SLQ (and optionally Hutchinson) on the training-NLL Hessian.

    The defaults are the demo's (docs/hessian.md gives Pythia's): m = 32 Lanczos steps,
    n_v = 2 probes, 8 Hutchinson probes = 72 HVPs.

    Returns ``{"slq": SLQResult, "hutchinson": HutchinsonResult | None, "summary": dict}``;
    the summary adds the batch loss, parameter count and Hutchinson trace to
    :meth:`SLQResult.summary`.  Cost: <= n_steps * n_vectors + hutchinson_vectors HVPs.
    """
    op = HessianOperator(
        model,
        input_ids,
        params=params,
        micro_batch_size=micro_batch_size,
        dtype=dtype,
        method=method,
    )
    res = slq(op, n_steps, n_vectors, seed=seed, dtype=dtype, basis_device=basis_device)
    hut = (
        hutchinson_trace(op, hutchinson_vectors, seed=seed + 1_000_003, dtype=dtype)
        if hutchinson_vectors > 0
        else None
    )
    summary = res.summary()
    summary.update(
        loss=op.loss(),
        n_params=op.dim,
        n_targets=op.n_targets,
        n_batch_tokens=int(op.input_ids.numel()),
        dtype=str(dtype).removeprefix("torch."),
        hutchinson_trace=None if hut is None else hut.estimate,
        hutchinson_stderr=None if hut is None else hut.stderr,
        hutchinson_vectors=hutchinson_vectors,
        sqrt_n=math.sqrt(op.dim),
    )
    return {"slq": res, "hutchinson": hut, "summary": summary}
