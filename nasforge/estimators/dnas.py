"""The differentiable-NAS estimator: the supernet weights of DARTS, PC-DARTS, GDAS, SNAS, ProxylessNAS.

The strategy owns the architecture parameters (``ctx.arch_parameters``, see
:mod:`nasforge.core.differentiable`); this estimator owns ``space.supernet()`` and its SGD
optimiser. Each :meth:`DifferentiableSupernetEstimator.update` is one search epoch; each
:meth:`~DifferentiableSupernetEstimator.estimate` scores the arch the strategy derived.

Data: as in DARTS, the training split is cut in two halves, the first for the weights and the
second for the architecture (bilevel methods); ``ctx.data.valid`` is left for scoring derived
archs. Single-level methods (SNAS) train weights and alphas together on the whole training split,
as SNAS' ``train_search.py`` (github.com/SNAS-Series/SNAS-Series) iterates one ``train_queue``
over all of CIFAR-10's training images. GDAS is bilevel (its paper, and ``search_func`` in
``exps/NAS-Bench-201-algos/GDAS.py`` of github.com/D-X-Y/AutoDL-Projects steps the weights on
``base_inputs`` and the alphas on ``arch_inputs``). A strategy may ask for another
share (FBNet: a fifth for the architecture) and for warm-up epochs without architecture steps
(:class:`~nasforge.oneshot.bilevel.SearchPlan`); CDARTS adds an evaluation network
(:class:`~nasforge.oneshot.bilevel.Cyclic`), saved with the supernet.

Files: after every epoch ``RUN_DIR/dnas/epoch-NNNN.pt`` (written atomically) holds the supernet,
its optimiser and the strategy's architecture state, and ``RUN_DIR/alphas.jsonl`` one line per
epoch with the candidates' weights (:mod:`nasforge.plots` draws them). When the runner replays
trials on resume, ``update`` loads an epoch's file instead of training it again; without the
files the epoch is recomputed, with the same result.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import Field, NonNegativeInt, PositiveInt, ValidationError
from torch import Tensor, nn

from nasforge.core import registry
from nasforge.core.arch import Arch
from nasforge.core.atomic import atomic_write_bytes, load_checkpoint, save_checkpoint
from nasforge.core.capabilities import (
    ArchTraining,
    Capability,
    HasEdges,
    component_name,
    require,
    require_mode,
    supernet_options,
)
from nasforge.core.differentiable import ArchParameters, edge_choices
from nasforge.core.errors import CheckpointError, ConfigError
from nasforge.core.estimator import Context, Estimator
from nasforge.core.registry import register
from nasforge.core.seeding import derive_seed, seeded
from nasforge.core.space import SearchSpace
from nasforge.core.trial import Result
from nasforge.nn.counters import count_flops, count_params
from nasforge.nn.mixed import MixedOp, Supernet
from nasforge.oneshot.bilevel import Cyclic, SearchPlan, WeightRecipe, gradients, unrolled_gradient
from nasforge.oneshot.trainer import affine_batch_norms, as_tensors, recalibrate_bn
from nasforge.tasks.training import GradClip, LearningRate, Momentum, SGDSettings, WeightDecay, evaluate

__all__ = ["DifferentiableSupernetEstimator", "DNAS_DIR", "ALPHAS_FILE"]

#: Folder of the run directory holding one checkpoint per search epoch.
DNAS_DIR = "dnas"
#: File of the run directory with the architecture weights of every epoch (JSON lines).
ALPHAS_FILE = "alphas.jsonl"
_VERSION = 1
_NETWORK_STATE = ("supernet", "optimizer", "evaluator", "evaluator_optimizer")


@register("estimator", "dnas", tags=("supernet", "differentiable"))
class DifferentiableSupernetEstimator(Estimator):
    """Trains a supernet with a differentiable strategy's architecture parameters, one epoch per trial.

    Weights: SGD with momentum, learning rate cosine-annealed from ``lr`` to ``lr_min`` over the
    strategy's epochs, gradient norm clipped, batch 64: DARTS' defaults (Liu et al. 2019).
    Architecture steps alternate with weight steps on minibatches of the two halves of the
    training split; ``order=2`` uses DARTS' unrolled second-order gradient (eq. 7-8).
    Scoring: the derived arch's child (exported from the supernet), batch norm recalibrated on
    ``bn_batches`` training minibatches, evaluated on the validation split (``eval_batches``
    minibatches, 0: all); ``params``/``flops`` of the child.

    Partial channels (PC-DARTS, ``arch.partial_channels = K > 1``): the supernet is
    ``space.supernet(partial_channels=K)``, and derived archs are scored the same way, on the
    supernet itself in single-path mode: the child is the supernet's path, each derived op on
    its ``1/K`` of the channels with the rest bypassed and shuffled, exactly as searched. No
    full-width child is trained here (that would cost a training run per trial and rank archs by
    a few epochs of scratch training); the search's final arch is trained at full width by
    ``nasforge train``, as in the paper.

    Args:
        space: the search space (must build a supernet).
        order: 1 (first-order DARTS) or 2 (second order).
        batch_size: minibatch size of both steps.
        arch_fraction: share of the training split for the architecture steps (bilevel methods);
            None: the strategy's (:class:`~nasforge.oneshot.bilevel.SearchPlan`), else one half.
        lr, lr_min: the weights' cosine schedule.
        momentum, weight_decay, grad_clip: SGD settings and gradient-norm clip of the weights.
        nesterov: Nesterov momentum for the weights. ``weight_decay`` and ``nesterov`` left unset
            (null) take the strategy's method's settings
            (:class:`~nasforge.oneshot.bilevel.WeightRecipe`; GDAS: Nesterov, 5e-4), else 3e-4
            and plain momentum (DARTS).
        bn_batches: training minibatches re-estimating batch norm before scoring.
        eval_batches: validation minibatches to score on (0: the whole split).
        bn_affine: learnable batch-norm scale and shift in the candidates, where the space's
            ``supernet()`` takes ``affine`` (NB201); false, the default, as the search cells of
            NAS-Bench-201 (``search_cells.py`` of D-X-Y/AutoDL-Projects) and DARTS
            (``cnn/model_search.py`` of quark0/darts, ``OPS[primitive](C, stride, False)``), whose
            DARTS-space search network here is always so.
    """

    #: The runner trains its shared supernet between trials (:meth:`update`): no parallel trials.
    parallel_trials: ClassVar[bool] = False

    requires: ClassVar[frozenset[Capability]] = frozenset({Capability.SUPERNET})
    modes: ClassVar[frozenset[str]] = frozenset({"weighted"})
    trains_arch_parameters: ClassVar[ArchTraining | None] = "with-weights"
    needs_arch_parameters: ClassVar[bool] = True
    reports: ClassVar[frozenset[str] | None] = frozenset({"val_acc", "val_loss", "params", "flops"})

    #: Tiny settings for the conformance suite (nasforge.testing.suites).
    conformance_options: ClassVar[dict[str, Any]] = {"batch_size": 16, "bn_batches": 1}
    #: The strategy whose architecture parameters the conformance run trains.
    conformance_strategy: ClassVar[dict[str, Any]] = {"type": "darts", "epochs": 2}

    def __init__(
        self,
        space: SearchSpace,
        order: Literal[1, 2] = 1,
        batch_size: PositiveInt = 64,
        arch_fraction: Annotated[float, Field(gt=0, lt=1)] | None = None,
        lr: LearningRate = 0.025,
        lr_min: Annotated[float, Field(ge=0)] = 0.001,
        momentum: Momentum = 0.9,
        weight_decay: WeightDecay | None = None,
        grad_clip: GradClip | None = 5.0,
        nesterov: bool | None = None,
        bn_batches: NonNegativeInt = 10,
        eval_batches: NonNegativeInt = 0,
        bn_affine: bool = False,
    ) -> None:
        require(space, Capability.SUPERNET, by="estimator 'dnas'")
        require_mode(space, "weighted", by="estimator 'dnas'")  # a user model's supernet may not mix
        self.space = space
        self.order = order
        self.batch_size = batch_size
        self.arch_fraction = arch_fraction
        self.lr = lr
        self.lr_min = lr_min
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.grad_clip = grad_clip
        self.nesterov = nesterov
        self.bn_batches = bn_batches
        self.eval_batches = eval_batches
        self.bn_affine = bn_affine
        self.supernet: Supernet | None = None
        self.optimizer: torch.optim.SGD | None = None
        self.evaluator: Supernet | None = None  # CDARTS' evaluation network
        self.evaluator_optimizer: torch.optim.SGD | None = None
        self._seed: int | None = None
        self._epoch = 0
        self._pending: dict[str, Any] | None = None  # state loaded before the supernet exists
        self._options: dict[str, Any] = {}  # the supernet's space.supernet() options
        self._unbilled = 0.0
        self._curves: dict[str, list[list[float]]] = {}  # per-epoch points not yet in a trial's extras

    # -- set-up --------------------------------------------------------------------------------

    def _arch(self, ctx: Context) -> ArchParameters:
        arch = ctx.arch_parameters
        if arch is None:
            differentiable = [r.name for r in registry.registrations("strategy") if r.target.arch_parameters == "with-weights"]
            raise ConfigError(
                "estimator 'dnas' trains the architecture parameters of a differentiable strategy; "
                f"use one of: {', '.join(differentiable)}"
            )
        if isinstance(arch, Cyclic) and self.order == 2:
            raise ConfigError(
                f"estimator 'dnas': order 2 is not defined for {type(arch).__name__}'s cyclic loss; use order 1"
            )
        return arch

    def _fraction(self, arch: ArchParameters) -> float:
        if self.arch_fraction is not None:
            return self.arch_fraction
        return arch.arch_fraction if isinstance(arch, SearchPlan) else 0.5

    def _sgd(self, arch: ArchParameters) -> SGDSettings:
        """The weights' SGD: weight decay and Nesterov from the options, else the method's, else
        DARTS'; checked as every trainer's SGD is (Nesterov needs momentum)."""
        recipe = arch.weight_optimizer() if isinstance(arch, WeightRecipe) else {}
        decay = self.weight_decay if self.weight_decay is not None else float(recipe.get("weight_decay", 3e-4))
        nesterov = self.nesterov if self.nesterov is not None else bool(recipe.get("nesterov", False))
        try:
            return SGDSettings(lr=self.lr, momentum=self.momentum, nesterov=nesterov, weight_decay=decay, grad_clip=None)
        except ValidationError as exc:
            raise ConfigError(f"estimator 'dnas': {exc.errors()[0]['msg']} (momentum={self.momentum}, nesterov={nesterov})") from None

    def _fingerprint(self, arch: ArchParameters) -> dict[str, Any]:
        sgd = self._sgd(arch)
        return {
            "strategy": type(arch).__name__,
            "epochs": arch.epochs,
            "order": self.order,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "lr_min": self.lr_min,
            "momentum": self.momentum,
            "weight_decay": sgd.weight_decay,
            "grad_clip": self.grad_clip,
            **({"nesterov": True} if sgd.nesterov else {}),
            **({"partial_channels": arch.partial_channels} if arch.partial_channels != 1 else {}),
            **({"arch_fraction": self._fraction(arch)} if self._fraction(arch) != 0.5 else {}),
            **({"evaluation": arch.evaluation_options()} if isinstance(arch, Cyclic) else {}),
            **({"bn_affine": True} if self.bn_affine else {}),
        }

    def _ensure(self, ctx: Context, arch: ArchParameters, *, stage: bool = False) -> Supernet:
        """The supernet, built on first use with the options it was saved with (else the
        strategy's); with ``stage``, rebuilt fresh when the strategy's options have changed."""
        if self.supernet is not None and not (stage and arch.supernet_options() != self._options):
            return self.supernet
        if self._seed is None:
            self._seed = ctx.seed
        first = self.supernet is None
        options = self._options if first and self._pending is not None else arch.supernet_options()
        keys = () if first else (arch.epoch,)  # each P-DARTS stage starts from fresh weights
        with seeded(derive_seed(self._seed, "dnas-init", *keys), ctx.device):
            supernet = self._build(options)
        self._check_edges(supernet)
        self.supernet = supernet.to(ctx.device)
        self._options = options
        sgd = self._sgd(arch)
        self.optimizer = sgd.optimizer(self.supernet.parameters())
        if first and isinstance(arch, Cyclic):
            with seeded(derive_seed(self._seed, "dnas-evaluator"), ctx.device):
                self.evaluator = self._build(arch.evaluation_options()).to(ctx.device)
            evaluator_sgd = sgd.model_copy(update={"lr": arch.evaluation_lr, "nesterov": False})
            self.evaluator_optimizer = evaluator_sgd.optimizer(self.evaluator.parameters())
        if self._pending is not None:
            self._load(self._pending)
            self._pending = None
            return self._ensure(ctx, arch, stage=stage)
        return self.supernet

    def _build(self, options: dict[str, Any]) -> Supernet:
        accepted = supernet_options(self.space)
        missing = [key for key in options if key not in accepted]
        if missing:
            raise ConfigError(
                f"space {component_name('space', self.space)!r} builds no supernet with option(s) {', '.join(missing)}, which the "
                "strategy needs (partial_channels: nb201, darts; layers: darts)"
            )
        if "affine" in accepted:
            options = {"affine": self.bn_affine, **options}
        elif self.bn_affine:
            raise ConfigError(f"estimator 'dnas': bn_affine: space {component_name('space', self.space)!r} has no affine option")
        try:
            return self.space.supernet(**options)  # type: ignore[attr-defined]
        except ValueError as exc:
            raise ConfigError(f"space {component_name('space', self.space)!r}: {exc}") from None

    def _check_edges(self, supernet: Supernet) -> None:
        edges = edge_choices(self.space)
        name = component_name("space", self.space)
        for _, module in supernet.choice_modules():
            if not isinstance(module, MixedOp):
                raise ConfigError(
                    f"space {name!r}: its supernet has an input choice {module.name!r}; differentiable search "
                    "needs every decision to be an op choice on an edge (a space method edge_choices() listing them)"
                )
            if module.name not in edges or list(edges[module.name].candidates) != module.values:
                raise ConfigError(
                    f"space {name!r}: supernet edge {module.name!r} is not one of the space's "
                    f"{'edge_choices()' if isinstance(self.space, HasEdges) else 'choices (it has no edge_choices())'} "
                    "with the same candidates, so alphas cannot be derived into an arch"
                )

    def _halves(self, ctx: Context, fraction: float = 0.5) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """The training split cut for the weights (first ``1 - fraction``) and the architecture."""
        if ctx.data is None:
            raise ConfigError("estimator 'dnas' needs data; add a data section to the config")
        images, labels = as_tensors(ctx.data.train, ctx.device)
        cut = len(labels) - math.ceil(len(labels) * fraction)
        if min(cut, len(labels) - cut) < self.batch_size:
            raise ConfigError(
                f"estimator 'dnas': splitting {len(labels)} training samples {1 - fraction:g}/{fraction:g} between "
                f"weights and architecture leaves a part smaller than batch_size {self.batch_size}"
            )
        return (images[:cut], labels[:cut]), (images[cut:], labels[cut:])

    def _whole(self, ctx: Context) -> tuple[Tensor, Tensor]:
        """The whole training split (single-level methods train weights and alphas on it)."""
        if ctx.data is None:
            raise ConfigError("estimator 'dnas' needs data; add a data section to the config")
        images, labels = as_tensors(ctx.data.train, ctx.device)
        if len(labels) < self.batch_size:
            raise ConfigError(f"estimator 'dnas': {len(labels)} training samples are fewer than batch_size {self.batch_size}")
        return images, labels

    # -- one search epoch ------------------------------------------------------------------------

    def _set(self, arch: ArchParameters, step: Literal["weights", "arch"]) -> None:
        assert self.supernet is not None
        self.supernet.set_weights(arch.weights(step))
        paths = arch.paths()
        if paths is not None:
            for _, module in self.supernet.choice_modules():
                if isinstance(module, MixedOp):
                    module.restrict(paths[module.name])

    def _logits(self, arch: ArchParameters, step: Literal["weights", "arch"], images: Tensor) -> Tensor:
        assert self.supernet is not None
        self._set(arch, step)
        return self.supernet(images)

    def _loss(self, arch: ArchParameters, step: Literal["weights", "arch"], images: Tensor, labels: Tensor) -> Tensor:
        return nn.functional.cross_entropy(self._logits(arch, step, images), labels)

    def lr_at(self, epoch: int, epochs: int) -> float:
        """The weights' learning rate in epoch ``epoch`` (cosine from ``lr`` to ``lr_min``)."""
        return self.lr_min + (self.lr - self.lr_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2

    def _train_epoch(self, arch: ArchParameters, ctx: Context) -> float:
        supernet, optimizer = self.supernet, self.optimizer
        assert supernet is not None and optimizer is not None and self._seed is not None
        if arch.bilevel:
            (wx, wy), (ax, ay) = self._halves(ctx, self._fraction(arch))
        else:  # single level: one sample, one loss, on the whole training split
            wx, wy = self._whole(ctx)
            ax, ay = wx[:0], wy[:0]
        plan = arch if isinstance(arch, SearchPlan) else None
        lr = self.lr_at(*(plan.weight_schedule() if plan else (arch.epoch, arch.epochs)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        searching = plan.searching() if plan else True
        generator = torch.Generator().manual_seed(derive_seed(self._seed, "dnas-epoch", arch.epoch))
        w_order = torch.randperm(len(wy), generator=generator).to(ctx.device)
        a_order = torch.randperm(len(ay), generator=generator).to(ctx.device)
        dropout = arch.op_dropout()
        for _, module in supernet.choice_modules():
            if isinstance(module, MixedOp):
                module.set_dropout(dropout)
        if searching and isinstance(arch, Cyclic):
            self._train_evaluator(arch, wx, wy, w_order, lr / self.lr)
        supernet.train()
        w_steps = len(wy) // self.batch_size
        per_arch_step = getattr(plan, "arch_every", 1)
        a_steps = min(len(ay) // self.batch_size, w_steps // per_arch_step) if arch.bilevel else w_steps // per_arch_step
        total = 0.0
        for step in range(w_steps):
            batch = slice(step * self.batch_size, (step + 1) * self.batch_size)
            a_index = step * a_steps // w_steps  # the architecture's minibatches spread over the epoch
            arch_step = searching and (step + 1) * a_steps // w_steps > a_index
            a_batch = None
            if arch_step and arch.bilevel:
                rows = a_order[a_index * self.batch_size : (a_index + 1) * self.batch_size]
                a_batch = (ax[rows], ay[rows])
            total += self.step(arch, (wx[w_order[batch]], wy[w_order[batch]]), a_batch, lr, arch_step=arch_step)
        return total / max(1, w_steps)

    def _train_evaluator(self, arch: Cyclic, wx: Tensor, wy: Tensor, order: Tensor, lr_scale: float) -> None:
        """CDARTS: the evaluation network on the derived arch, one pass over the weights' data."""
        evaluator, optimizer = self.evaluator, self.evaluator_optimizer
        assert evaluator is not None and optimizer is not None
        for group in optimizer.param_groups:
            group["lr"] = arch.evaluation_lr * lr_scale
        evaluator.activate(arch.derived())
        evaluator.train()
        for step in range(len(wy) // self.batch_size):
            rows = order[step * self.batch_size : (step + 1) * self.batch_size]
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(evaluator(wx[rows]), wy[rows]).backward()
            self._clip_and_step(evaluator, optimizer)

    def _clip_and_step(self, network: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_([p for p in network.parameters() if p.requires_grad], self.grad_clip)
        optimizer.step()

    def step(
        self,
        arch: ArchParameters,
        w_batch: tuple[Tensor, Tensor],
        a_batch: tuple[Tensor, Tensor] | None,
        lr: float,
        *,
        arch_step: bool = True,
    ) -> float:
        """One search step; returns the weights' loss.

        With ``arch_step``: the architecture step first, on ``a_batch`` (bilevel strategies) or,
        single level, jointly with the weights on ``w_batch``; then the weight step on
        ``w_batch``. Without: the weight step alone (warm-up, or an epoch whose architecture
        minibatches are fewer than the weights').
        """
        optimizer = self.optimizer
        assert self.supernet is not None and optimizer is not None
        xw, yw = w_batch
        if arch_step and not arch.bilevel:  # single level: one sample, one loss, both descend it
            optimizer.zero_grad(set_to_none=True)
            loss = self._loss(arch, "arch", xw, yw)
            arch.loss(loss).backward()
            arch.step()
        else:
            if arch_step:
                assert a_batch is not None, "a bilevel architecture step needs a_batch"
                self._arch_step(arch, w_batch, a_batch, lr)
            optimizer.zero_grad(set_to_none=True)
            loss = self._loss(arch, "weights", xw, yw)
            loss.backward()
        self._clip_and_step(self.supernet, optimizer)
        return float(loss.detach())

    def _arch_step(
        self, arch: ArchParameters, w_batch: tuple[Tensor, Tensor], a_batch: tuple[Tensor, Tensor], lr: float
    ) -> None:
        """Gradients of the architecture objective on ``a_batch`` into the alphas, then their step
        (CDARTS: the evaluation network's weights descend the same cyclic loss)."""
        optimizer = self.optimizer
        assert self.supernet is not None and optimizer is not None
        alphas = arch.parameters()
        (xw, yw), (xa, ya) = w_batch, a_batch
        if isinstance(arch, Cyclic):
            evaluator, eval_optimizer = self.evaluator, self.evaluator_optimizer
            assert evaluator is not None and eval_optimizer is not None
            eval_weights = [p for p in evaluator.parameters() if p.requires_grad]
            loss = arch.cyclic_loss(self._logits(arch, "arch", xa), evaluator(xa), ya)
            grads = gradients(loss, [*alphas, *eval_weights])
            for weight, grad in zip(eval_weights, grads[len(alphas) :], strict=True):
                weight.grad = grad
            self._clip_and_step(evaluator, eval_optimizer)
            grads = grads[: len(alphas)]
        elif self.order == 2:
            weights = [p for p in self.supernet.parameters() if p.requires_grad]
            grads = unrolled_gradient(
                weights,
                alphas,
                lambda: self._loss(arch, "arch", xw, yw),
                lambda: arch.loss(self._loss(arch, "arch", xa, ya)),
                lr,
                momentum=self.momentum,
                buffers=[optimizer.state.get(w, {}).get("momentum_buffer") for w in weights],
                weight_decay=optimizer.param_groups[0]["weight_decay"],
            )
        else:
            grads = gradients(arch.loss(self._loss(arch, "arch", xa, ya)), alphas)
        for alpha, grad in zip(alphas, grads, strict=True):
            alpha.grad = grad
        arch.step()

    def update(self, ctx: Context) -> None:
        """One search epoch (a no-op once the strategy's epochs are done)."""
        arch = self._arch(ctx)
        if arch.epoch >= arch.epochs:
            self._ensure(ctx, arch)
            return
        self._ensure(ctx, arch, stage=True)
        if arch.epoch != self._epoch:
            raise CheckpointError(
                f"the strategy is at search epoch {arch.epoch} but the supernet at {self._epoch}; "
                "the checkpoint and the run directory disagree, start a new run"
            )
        started = time.perf_counter()
        path = self._epoch_file(ctx, arch.epoch + 1)
        if path is not None and path.exists():
            state = load_checkpoint(path)
            if state.get("fingerprint") != self._fingerprint(arch) or state.get("seed") != self._seed:
                raise CheckpointError(f"{path} was written by a search with other settings; start a new run directory")
            self._load(state)
            arch.load_state_dict(state["arch"])
            return
        with seeded(derive_seed(self._seed or 0, "dnas-step", arch.epoch), ctx.device):
            loss = self._train_epoch(arch, ctx)
        arch.end_epoch()
        self._epoch = arch.epoch
        ctx.log.info("dnas epoch %d/%d: train loss %.4f", arch.epoch, arch.epochs, loss)
        self._curves.setdefault("dnas/train_loss", []).append([arch.epoch, loss])
        ctx.report_epoch("dnas epoch", arch.epoch, arch.epochs, {"train_loss": loss})
        if path is not None:
            save_checkpoint(
                path,
                {
                    **self.state_dict(),
                    "version": _VERSION,
                    "fingerprint": self._fingerprint(arch),
                    "arch": arch.state_dict(),
                },
            )
            self._log_alphas(ctx.run_dir, {**arch.snapshot(), "train_loss": loss})  # type: ignore[arg-type]
        self._unbilled += time.perf_counter() - started

    def _epoch_file(self, ctx: Context, epoch: int) -> Path | None:
        return None if ctx.run_dir is None else Path(ctx.run_dir) / DNAS_DIR / f"epoch-{epoch:04d}.pt"

    def _log_alphas(self, run_dir: Path, record: dict[str, Any]) -> None:
        path = Path(run_dir) / ALPHAS_FILE
        lines = path.read_text().splitlines() if path.exists() else []
        kept = [line for line in lines if line.strip() and json.loads(line)["epoch"] < record["epoch"]]
        atomic_write_bytes(path, ("\n".join([*kept, json.dumps(record)]) + "\n").encode())

    # -- scoring ---------------------------------------------------------------------------------

    def estimate(self, arch: Arch, ctx: Context) -> Result:
        """Score ``arch`` on the supernet's weights (its exported child, batch norm recalibrated)."""
        started = time.perf_counter()
        supernet = self._ensure(ctx, self._arch(ctx))
        (wx, _), _ = self._halves(ctx, self._fraction(self._arch(ctx)))
        child = supernet.export(self.space.validate(arch)).to(ctx.device)
        generator = torch.Generator().manual_seed(derive_seed(self._seed or 0, "dnas-bn"))
        order = torch.randperm(len(wx), generator=generator).to(ctx.device)
        n = min(self.bn_batches, len(wx) // self.batch_size)
        if n:
            recalibrate_bn(child, (wx[order[i * self.batch_size : (i + 1) * self.batch_size]] for i in range(n)))
        valid = ctx.data.valid
        if self.eval_batches:
            vx, vy = as_tensors(valid, ctx.device)
            keep = min(len(vy), self.eval_batches * self.batch_size)
            valid = torch.utils.data.TensorDataset(vx[:keep], vy[:keep])
        val_acc, val_loss = evaluate(child, valid, batch_size=max(self.batch_size, 256), device=ctx.device)
        child = affine_batch_norms(child.cpu())  # parameters as the built network has them
        metrics = {
            "val_acc": val_acc,
            "val_loss": val_loss,
            "params": float(count_params(child)),
            "flops": float(count_flops(child, (ctx.data.in_channels, *ctx.data.input_size))),
        }
        seconds = time.perf_counter() - started + self._unbilled
        self._unbilled = 0.0
        extras: dict[str, Any] = {"search_epoch": self._epoch}
        curves, self._curves = self._curves, {}
        if self._epoch:  # the scored arch after this many epochs: the search's accuracy curve
            for name in ("val_acc", "val_loss"):
                curves.setdefault(f"dnas/{name}", []).append([self._epoch, metrics[name]])
        if curves:  # TensorBoard's epoch/ curves (step = search epoch)
            extras["epochs"] = curves
        return Result(metrics=metrics, cost={"seconds": seconds}, extras=extras)

    # -- state -----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The supernet, its optimiser and the epoch count (a checkpoint alone resumes exactly)."""
        if self.supernet is None:
            return {"seed": self._seed, "epoch": self._epoch, "options": self._options, **(self._pending or {})}
        assert self.optimizer is not None
        evaluator = {}
        if self.evaluator is not None and self.evaluator_optimizer is not None:
            evaluator = {
                "evaluator": self.evaluator.state_dict(),
                "evaluator_optimizer": self.evaluator_optimizer.state_dict(),
            }
        return {
            "seed": self._seed,
            "epoch": self._epoch,
            "options": self._options,
            "supernet": self.supernet.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            **evaluator,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._seed = None if state["seed"] is None else int(state["seed"])
        self._epoch = int(state["epoch"])
        if "supernet" not in state:
            return
        if self.supernet is None or state.get("options", {}) != self._options:
            self._options = dict(state.get("options", {}))
            self.supernet = None
            self._pending = {key: state[key] for key in _NETWORK_STATE if key in state}
        else:
            self._load(state)

    def _load(self, state: dict[str, Any]) -> None:
        assert self.supernet is not None and self.optimizer is not None
        self.supernet.load_state_dict(state["supernet"])
        self.optimizer.load_state_dict(state["optimizer"])
        if "evaluator" in state:
            if self.evaluator is None or self.evaluator_optimizer is None:
                raise CheckpointError("the checkpoint holds an evaluation network (CDARTS) but the strategy has none")
            self.evaluator.load_state_dict(state["evaluator"])
            self.evaluator_optimizer.load_state_dict(state["evaluator_optimizer"])
        if "epoch" in state:
            self._epoch = int(state["epoch"])
