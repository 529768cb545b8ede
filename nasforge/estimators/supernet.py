"""The one-shot estimator: train one supernet, then score every arch with inherited weights.

Phase 1, :meth:`SupernetEstimator.update`: the first call trains the space's supernet on the
training split for ``epochs`` under a rule (SPOS, FairNAS, RSPS; see
:mod:`nasforge.oneshot.rules`), writing a checkpoint after every epoch; later calls do
nothing. Phase 2, :meth:`SupernetEstimator.estimate`: activate the arch's path, recalibrate
batch norm on training minibatches, score on the validation split. Any discrete strategy
(random, evolution, local search, ...) searches on it unchanged.

ENAS (Pham et al. 2018) alternates training the shared weights on archs the controller samples
with training the controller on their validation reward. In the ask/tell loop that becomes:
the ``reinforce`` strategy with an LSTM controller asks an arch; this estimator with ``rule:
enas`` trains the shared weights on it for ``steps_per_arch`` minibatches (continuing one
stream through the training split), then scores it on one validation minibatch (the next one
each time, as ENAS cycles its validation loader); the strategy is told the score as the
reward. How often the controller is updated is the strategy's business (its ``aggregate``):
``controller: lstm`` takes one REINFORCE step per trial, ``controller: enas`` one step on the
mean gradient of every 20 samples, as ENAS does (:mod:`nasforge.strategies.reinforce`). ENAS
proper trains the shared weights on a fresh controller sample for every minibatch of an epoch
and then the controller on other samples; here one sample serves both, for ``steps_per_arch``
minibatches (1 is closest to ENAS, larger values give each arch a fairer reward). See
``configs/oneshot_enas.yaml`` for a small-budget controller setting.

Few-shot NAS (Zhao et al. 2021): with ``few_shot: {edges: [...], epochs: N}`` the one-shot
supernet trained for ``epochs`` is split on the chosen edges into one sub-supernet per
combination of their candidates, each inheriting the one-shot weights and training ``N`` more
epochs under the same rule; every arch is scored on its own sub-supernet
(:mod:`nasforge.oneshot.few_shot`). Any discrete strategy uses it unchanged.

Batch norm: ``bn_affine: false`` (the default) builds the supernet with batch norms without
learnable scale and shift where the space offers it (``supernet(affine=...)``: NB201), as SPOS'
and NAS-Bench-201's search networks do; :func:`inherited_child` gives such children scale 1 and
shift 0, so they still load into ``space.build(arch)``.

Files: the supernet, its optimiser and the stream position live in ``RUN_DIR/supernet/``, in
two alternating slots written atomically, so a run killed at any moment resumes exactly (the
estimator's own ``state_dict`` holds a trial counter and a seed). :func:`inherited_child` reads
them back to give the child of an arch with its inherited weights, e.g. to fine-tune it.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import NonNegativeInt, PositiveInt
from torch import Tensor, nn

from nasforge.core.arch import Arch
from nasforge.core.atomic import load_checkpoint, save_checkpoint
from nasforge.core.capabilities import ArchTraining, Capability, require, supernet_options
from nasforge.core.differentiable import ArchParameters
from nasforge.core.errors import CheckpointError, ConfigError
from nasforge.core.estimator import Context, Estimator
from nasforge.core.registry import Registered, register
from nasforge.core.seeding import derive_seed, seeded
from nasforge.core.space import SearchSpace
from nasforge.core.trial import Result
from nasforge.nn.counters import count_flops, count_params
from nasforge.nn.mixed import Supernet
from nasforge.oneshot.bilevel import gradients
from nasforge.oneshot.few_shot import FewShot, FewShotTrainer, group_of, split_groups
from nasforge.oneshot.rules import TrainingRule, get_rule
from nasforge.oneshot.trainer import SupernetSettings, SupernetTrainer, affine_batch_norms, as_tensors
from nasforge.tasks.criteria import CriterionName, make_criterion
from nasforge.tasks.training import GradClip, LearningRate, Momentum, WeightDecay

__all__ = ["SupernetEstimator", "inherited_child", "supernet_checkpoints", "require_supernet", "SUPERNET_DIR"]

#: Folder of the run directory holding the supernet checkpoints.
SUPERNET_DIR = "supernet"
_SLOTS = ("slot-0.pt", "slot-1.pt")
_VERSION = 1

#: A registered rule's name (:mod:`nasforge.oneshot.rules`, or a plugin's).
Rule = Annotated[str, Registered("rule")]


def require_supernet(space: SearchSpace) -> None:
    """Raise ConfigError unless ``space`` can build a supernet (:class:`~nasforge.core.capabilities.HasSupernet`)."""
    require(space, Capability.SUPERNET, by="the supernet estimator")


class _Slots:
    """Two checkpoint files written in turn, so the state a step started from is never overwritten.

    Each holds a trainer state plus ``key``: ``(epochs done, number of the last trial trained,
    -1 for none)``. Writing always goes to the slot not holding the state in memory.
    """

    def __init__(self, folder: Path, fingerprint: dict[str, Any]) -> None:
        self.folder = folder
        self.fingerprint = fingerprint
        self.current: int | None = None  # the slot whose content equals the state in memory
        self.key: tuple[int, int] | None = None  # that slot's key

    def read(self) -> list[tuple[int, dict[str, Any]]]:
        """``(slot, state)`` of every slot present; a slot of another config is an error."""
        found = []
        for slot, name in enumerate(_SLOTS):
            path = self.folder / name
            if path.exists():
                state = load_checkpoint(path)
                if state.get("fingerprint") != self.fingerprint:
                    raise CheckpointError(
                        f"{path} holds a supernet trained with other settings ({state.get('fingerprint')}); "
                        f"this run asks for {self.fingerprint}. Start a new run directory."
                    )
                found.append((slot, state))
        return found

    def write(self, key: tuple[int, int], trainer_state: dict[str, Any], seed: int, **extra: Any) -> None:
        slot = 0 if self.current is None else 1 - self.current
        save_checkpoint(
            self.folder / _SLOTS[slot],
            {"version": _VERSION, "fingerprint": self.fingerprint, "seed": seed, "key": list(key), **extra, **trainer_state},
        )
        self.current, self.key = slot, key


@register("estimator", "supernet", tags=("one-shot",))
class SupernetEstimator(Estimator):
    """Weight sharing: score archs with the weights of one supernet trained under a rule.

    Options left unset (null) take the rule's default (:mod:`nasforge.oneshot.rules`):

    ======== ====== ========== ===== ============ ========== ============ ======== =========
    rule     epochs batch_size lr    weight_decay bn_batches eval_batches nesterov grad_clip
    ======== ====== ========== ===== ============ ========== ============ ======== =========
    spos     10     64         0.05  4e-5         10         0 (all)      false    none
    fairnas  2      64         0.05  4e-5         10         0 (all)      true     5
    rsps     10     64         0.025 5e-4         10         10           true     5
    enas     0      128        0.05  2.5e-4       2          1            true     5
    ======== ====== ========== ===== ============ ========== ============ ======== =========

    Metrics: ``val_acc`` (percent) and ``val_loss`` of the path on the validation split (or
    ``eval_batches`` minibatches of it), ``params`` and ``flops`` of the exported child for one
    input. Cost: ``seconds`` of the estimate plus any supernet training that ran for this trial.

    Args:
        rule: the training rule, a registered ``rule`` (``nasforge registry rule``): built in
            ``spos``, ``fairnas``, ``rsps`` and ``enas``.
        epochs: epochs of supernet training before the first estimate (ENAS: uniform warm-up).
        batch_size: samples per minibatch.
        lr: peak SGD learning rate (cosine to 0 over ``epochs``; constant for ENAS).
        momentum: SGD momentum.
        nesterov: Nesterov momentum (null: the rule's).
        weight_decay: SGD weight decay.
        grad_clip: gradient-norm clipping; null for none, ``rule`` for the rule's.
        bn_affine: learnable batch-norm scale and shift in the supernet's candidates (spaces whose
            ``supernet()`` takes ``affine``); false, the default, as SPOS' and NB201's code.
        few_shot: ``{edges: [...], epochs: N}``: split the trained supernet on those edges into
            sub-supernets trained ``N`` more epochs (few-shot NAS); null: one-shot.
        bn_batches: training minibatches recalibrating batch norm before each score; 0 keeps
            the statistics of training.
        eval_batches: validation minibatches per score; 0 for the whole validation split.
        steps_per_arch: ENAS only: minibatches the shared weights train on each asked arch.
        criterion, criterion_options: the training loss (:mod:`nasforge.tasks.criteria`; not
            ``kd``), e.g. ``mixup`` or ``label_smoothing``; scores stay cross-entropy.
        space: the space (filled in by the runner); it must have a ``supernet()`` method.
    """

    #: The runner trains its shared supernet between trials (:meth:`update`): no parallel trials.
    parallel_trials: ClassVar[bool] = False

    requires: ClassVar[frozenset[Capability]] = frozenset({Capability.SUPERNET})
    #: After its own training, it trains a strategy's architecture parameters (the generator's)
    #: on the frozen supernet, one epoch per trial; strategies without any search it unchanged.
    trains_arch_parameters: ClassVar[ArchTraining | None] = "on-trained-supernet"
    reports: ClassVar[frozenset[str] | None] = frozenset({"val_acc", "val_loss", "params", "flops"})

    #: Tiny settings for the conformance suite (nasforge.testing.suites).
    conformance_options: ClassVar[dict[str, Any]] = {"epochs": 1, "batch_size": 16, "bn_batches": 1}

    def __init__(
        self,
        rule: Rule = "spos",
        epochs: NonNegativeInt | None = None,
        batch_size: PositiveInt | None = None,
        lr: LearningRate | None = None,
        momentum: Momentum = 0.9,
        nesterov: bool | None = None,
        weight_decay: WeightDecay | None = None,
        grad_clip: GradClip | Literal["rule"] | None = "rule",
        bn_batches: NonNegativeInt | None = None,
        eval_batches: NonNegativeInt | None = None,
        steps_per_arch: PositiveInt = 10,
        criterion: CriterionName = "cross_entropy",
        criterion_options: dict[str, float] | None = None,
        bn_affine: bool = False,
        few_shot: FewShot | None = None,
        space: SearchSpace | None = None,
    ) -> None:
        self.rule: TrainingRule = get_rule(rule)
        self._rule_option = rule
        defaults = type(self.rule).defaults

        def pick(value: Any, default: Any) -> Any:
            return default if value is None else value

        self.settings = SupernetSettings(
            epochs=pick(epochs, defaults.epochs),
            batch_size=pick(batch_size, defaults.batch_size),
            lr=pick(lr, defaults.lr),
            momentum=momentum,
            nesterov=pick(nesterov, defaults.nesterov),
            weight_decay=pick(weight_decay, defaults.weight_decay),
            grad_clip=defaults.grad_clip if grad_clip == "rule" else grad_clip,
            bn_batches=pick(bn_batches, defaults.bn_batches),
            eval_batches=pick(eval_batches, defaults.eval_batches),
        )
        if not self.rule.trains_asked_archs and self.settings.epochs == 0:
            raise ValueError(f"rule {rule!r} trains the supernet before the search: epochs must be at least 1")
        self.steps_per_arch = steps_per_arch
        if criterion == "kd":
            raise ValueError("criterion 'kd' needs a teacher network, which the supernet estimator does not have")
        self.criterion = (criterion, dict(criterion_options or {}))
        make_criterion(*self.criterion)  # options checked now, not at the first epoch
        self.bn_affine = bn_affine
        self.few_shot = few_shot
        if few_shot is not None and self.rule.trains_asked_archs:
            raise ValueError(f"few_shot splits a supernet trained before the search; rule {rule!r} trains it during the search")
        if space is not None:
            require_supernet(space)
            self.supernet_options(space)
        self._updates = 0  # update() calls: the number of the trial being run, plus one
        self._seed: int | None = None
        self._trainer: SupernetTrainer | None = None
        self._slots: _Slots | None = None
        self._dirty = False  # in-memory weights differ from every slot (a failed ENAS step)
        self._data: tuple[int, tuple[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None
        self._unbilled = 0.0  # seconds of supernet training not yet reported in a trial's cost
        self._curves: dict[str, list[list[float]]] = {}  # per-epoch points not yet in a trial's extras

    @property
    def rule_name(self) -> str:
        """The rule's name in logs and checkpoint fingerprints: its ``name``, else the configured one."""
        return type(self.rule).name or self._rule_option

    # -- set-up ----------------------------------------------------------------------------------

    def fingerprint(self, supernet: nn.Module) -> dict[str, Any]:
        """What must not change between a run and its resumption: the rule, settings and shapes.

        Stored with every checkpoint slot; a slot with another fingerprint is refused. Subclasses
        add their own settings to it (``{**super().fingerprint(supernet), ...}``)."""
        shapes = repr([(name, tuple(t.shape)) for name, t in supernet.state_dict().items()])
        criterion = {"criterion": list(self.criterion)} if self.criterion != ("cross_entropy", {}) else {}
        few_shot = {"few_shot": self.few_shot.model_dump(mode="json")} if self.few_shot is not None else {}
        return {
            "rule": self.rule_name,
            **self.settings.model_dump(),
            **criterion,
            **few_shot,
            "shapes": hashlib.sha1(shapes.encode()).hexdigest(),
        }

    def supernet_options(self, space: SearchSpace) -> dict[str, Any]:
        """Keyword options of ``space.supernet()``: ``affine`` where the space takes it."""
        if "affine" in supernet_options(space):
            return {"affine": self.bn_affine}
        if self.bn_affine:
            raise ConfigError("bn_affine: this space's supernet() has no affine option; its batch norms are its own")
        return {}

    @property
    def total_epochs(self) -> int:
        """Epochs of supernet training before scoring: the one-shot ones plus the few-shot ones."""
        return self.settings.epochs + (self.few_shot.epochs if self.few_shot is not None else 0)

    def _tensors(self, ctx: Context) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        data = ctx.data
        if data is None:
            raise ConfigError(
                "the supernet estimator trains a supernet, so it needs a dataset; "
                "set `data:` in the config (e.g. `data: {type: digits}`)"
            )
        if self._data is None or self._data[0] != id(data):
            self._data = (id(data), as_tensors(data.train, ctx.device), as_tensors(data.valid, ctx.device))
        return self._data[1], self._data[2]

    def make_trainer(self, supernet: Supernet, ctx: Context, *, seed: int) -> SupernetTrainer:
        """The trainer of the freshly built ``supernet``: a :class:`SupernetTrainer` under the
        rule (a :class:`~nasforge.oneshot.few_shot.FewShotTrainer` with ``few_shot``). Subclasses
        return their own trainer to change how the supernet trains (the ``ofa`` estimator's
        progressive shrinking); checkpoints, resumption and scoring stay this class's."""
        common = {"seed": seed, "device": ctx.device, "criterion": make_criterion(*self.criterion)}
        if self.few_shot is not None:
            return FewShotTrainer(supernet, ctx.space, self.rule, self.settings, self.few_shot, **common)
        return SupernetTrainer(supernet, ctx.space, self.rule, self.settings, **common)

    def _ensure_trainer(self, ctx: Context) -> SupernetTrainer:
        if self._trainer is not None:
            return self._trainer
        require_supernet(ctx.space)
        if self._seed is None:
            self._seed = derive_seed(ctx.seed, "supernet")
        with seeded(derive_seed(self._seed, "init"), ctx.device):
            supernet = ctx.space.supernet(**self.supernet_options(ctx.space))  # type: ignore[attr-defined]
        trainer = self.make_trainer(supernet, ctx, seed=self._seed)
        if ctx.run_dir is not None:
            self._slots = _Slots(Path(ctx.run_dir) / SUPERNET_DIR, self.fingerprint(supernet))
            if not self._slots.read():  # a new run: its initial weights are the first state to return to
                self._save(trainer, -1)
        self._trainer = trainer
        return trainer

    def _restore(self, trainer: SupernetTrainer, before_trial: int | None) -> None:
        """Hold the latest slot whose last trained trial precedes ``before_trial`` (None: any).

        The slots are read only when the state in memory may not be that one: in a fresh
        process, after a failed ENAS step, or when a trial is run again after a resume.
        """
        slots = self._slots
        if slots is None:
            return
        if slots.key is not None and not self._dirty and (before_trial is None or slots.key[1] < before_trial):
            return
        usable = [
            (tuple(state["key"]), slot, state)
            for slot, state in slots.read()
            if before_trial is None or state["key"][1] < before_trial
        ]
        if not usable:
            raise CheckpointError(f"{slots.folder} holds no supernet state to continue from; start a new run directory")
        key, slot, state = max(usable, key=lambda item: item[0])
        if int(state["seed"]) != self._seed:
            raise CheckpointError(f"{slots.folder} was written by a run with another seed; start a new run directory")
        trainer.load_state_dict(state)
        slots.current, slots.key = slot, (int(key[0]), int(key[1]))
        self._dirty = False

    def _save(self, trainer: SupernetTrainer, last_trial: int) -> None:
        if self._slots is not None:
            assert self._seed is not None
            options = self.supernet_options(trainer.space)
            self._slots.write((trainer.epochs_done, last_trial), trainer.state_dict(), self._seed, supernet_options=options)

    def _ready(self, ctx: Context, before_trial: int | None) -> SupernetTrainer:
        """The trainer with phase 1 done: restored from the run directory, trained if need be."""
        trainer = self._ensure_trainer(ctx)
        self._restore(trainer, before_trial)
        if trainer.epochs_done < self.total_epochs:
            train, _ = self._tensors(ctx)
            started = time.perf_counter()
            while trainer.epochs_done < self.total_epochs:
                with seeded(derive_seed(trainer.seed, "epoch", trainer.epochs_done), ctx.device):
                    loss = trainer.train_epoch(train)
                self._save(trainer, -1)
                ctx.log.info(
                    "supernet (%s) epoch %d/%d: train loss %.4f", self.rule_name, trainer.epochs_done, self.total_epochs, loss
                )
                self._curves.setdefault("supernet/train_loss", []).append([trainer.epochs_done, loss])
                ctx.report_epoch("supernet epoch", trainer.epochs_done, self.total_epochs, {"train_loss": loss})
            self._unbilled += time.perf_counter() - started
        return trainer

    # -- the estimator contract ----------------------------------------------------------------

    def update(self, ctx: Context) -> None:
        """Train the supernet until its ``epochs`` are done; then, for a strategy with
        architecture parameters (``ctx.arch_parameters``, e.g. the architecture generator), one
        epoch of architecture steps through the trained supernet per call (:meth:`_arch_epoch`).

        The runner calls it before every trial, replayed ones included, so it also counts
        trials; ENAS's per-trial state is picked in :meth:`estimate`, which replays skip.
        """
        self._updates += 1
        trainer = self._ready(ctx, None)
        arch = ctx.arch_parameters
        if arch is not None and arch.epoch < arch.epochs:
            if self.few_shot is not None:
                raise ConfigError("few_shot scores archs on sub-supernets; a strategy with architecture parameters needs one supernet")
            if self.rule.trains_asked_archs:
                raise ConfigError(
                    f"rule {self.rule_name!r} trains the asked archs; a strategy with architecture parameters "
                    "searches a trained supernet: use rule spos, fairnas or rsps"
                )
            started = time.perf_counter()
            with seeded(derive_seed(trainer.seed, "arch-epoch", arch.epoch), ctx.device):
                loss = self._arch_epoch(trainer, arch, self._tensors(ctx)[1])
            arch.end_epoch()
            ctx.log.info("architecture epoch %d/%d on the trained supernet: loss %.4f", arch.epoch, arch.epochs, loss)
            self._curves.setdefault("supernet/arch_loss", []).append([arch.epoch, loss])
            ctx.report_epoch("architecture epoch", arch.epoch, arch.epochs, {"arch_loss": loss})
            self._unbilled += time.perf_counter() - started

    @staticmethod
    def _arch_epoch(trainer: SupernetTrainer, arch: ArchParameters, valid: tuple[Tensor, Tensor]) -> float:
        """One pass of architecture steps over ``valid`` (as SGNAS trains its generator on the
        validation split) with the supernet's weights fixed: per minibatch the candidates are
        mixed by ``arch.weights("arch")`` and ``arch.loss(training criterion)`` descends into
        ``arch.parameters()`` only. Batch norm uses batch statistics; its running statistics are
        restored afterwards, so the supernet's state is unchanged. Returns the mean loss."""
        supernet, size = trainer.supernet, trainer.settings.batch_size
        buffers = {name: buffer.clone() for name, buffer in supernet.named_buffers()}
        images, labels = valid
        order = torch.randperm(len(labels)).to(images.device)
        losses = []
        supernet.train()
        try:
            for start in range(0, len(labels) - size + 1, size):
                index = order[start : start + size]
                inputs, targets = trainer.criterion.prepare(images[index], labels[index])
                supernet.set_weights(arch.weights("arch"))
                loss = arch.loss(trainer.criterion(supernet(inputs), targets))
                for tensor, grad in zip(arch.parameters(), gradients(loss, arch.parameters()), strict=True):
                    tensor.grad = grad
                arch.step()
                losses.append(float(loss.detach()))
        finally:
            with torch.no_grad():
                for name, buffer in supernet.named_buffers():
                    buffer.copy_(buffers[name])
        if not losses:
            raise ConfigError(f"the validation split ({len(labels)} samples) is smaller than batch_size {size}")
        return sum(losses) / len(losses)

    def estimate(self, arch: Arch, ctx: Context) -> Result:
        """Score ``arch`` with inherited weights (ENAS: train them on it first)."""
        started = time.perf_counter()
        trial = self._updates - 1 if self._updates else None
        trainer = self._ready(ctx, trial if self.rule.trains_asked_archs else None)
        train, valid = self._tensors(ctx)
        extras: dict[str, Any] = {}
        start_batch = 0
        if self.rule.trains_asked_archs:
            start_batch = trainer.archs_trained
            self._dirty = True
            with seeded(derive_seed(trainer.seed, "arch", trainer.step), ctx.device):
                extras["train_loss"] = trainer.train_arch(arch, train, self.steps_per_arch)
        trainer.recalibrate(arch, train)
        val_acc, val_loss = trainer.evaluate(arch, valid, start=start_batch)
        if self.rule.trains_asked_archs:
            self._save(trainer, trial if trial is not None else trainer.archs_trained)
            self._dirty = False
        supernet = trainer.supernet_of(arch) if isinstance(trainer, FewShotTrainer) else trainer.supernet
        child = affine_batch_norms(supernet.export(arch).cpu())  # the network space.build(arch) makes
        if isinstance(trainer, FewShotTrainer):
            extras["sub_supernet"] = trainer.group_of(arch)
        data = ctx.data
        metrics = {
            "val_acc": val_acc,
            "val_loss": val_loss,
            "params": float(count_params(child)),
            "flops": float(count_flops(child, (data.in_channels, *data.input_size))),
        }
        seconds = time.perf_counter() - started + self._unbilled
        self._unbilled = 0.0
        if self._curves:  # the epochs trained since the last trial (TensorBoard's epoch/ curves)
            extras["epochs"], self._curves = self._curves, {}
        return Result(metrics=metrics, cost={"seconds": seconds}, extras=extras)

    def state_dict(self) -> dict[str, Any]:
        """Counters only; the weights live in ``RUN_DIR/supernet/``."""
        return {"updates": self._updates, "seed": self._seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._updates = int(state["updates"])
        self._seed = None if state["seed"] is None else int(state["seed"])


def supernet_checkpoints(run_dir: str | Path) -> list[Path]:
    """The supernet checkpoint files a one-shot search left in ``run_dir`` (not read yet).

    Raises:
        CheckpointError: there are none.
    """
    folder = Path(run_dir) / SUPERNET_DIR
    paths = [folder / name for name in _SLOTS if (folder / name).exists()]
    if not paths:
        raise CheckpointError(
            f"{folder} holds no supernet checkpoint; it is written by searches with `estimator: {{type: supernet}}`"
        )
    return paths


def inherited_child(run_dir: str | Path, space: SearchSpace, arch: Arch) -> nn.Module:
    """The child of ``arch`` with the weights of the supernet a search left in ``run_dir``.

    The child is what ``space.supernet().export(arch)`` gives, so for NB201 its ``state_dict``
    loads into ``space.build(arch)`` unchanged: a starting point for fine-tuning instead of
    training from scratch. Its batch-norm statistics are those of the last training step (or
    scoring); train it, or recalibrate them, before evaluating it.

    A supernet built with ``affine=False`` batch norms gives a child whose batch norms have scale
    1 and shift 0 (the same function), so it loads into ``space.build(arch)`` all the same. After
    a few-shot search the weights are those of the arch's sub-supernet.

    Raises:
        CheckpointError: ``run_dir`` holds no supernet checkpoint.
    """
    require_supernet(space)
    folder = Path(run_dir) / SUPERNET_DIR
    states = [load_checkpoint(path) for path in supernet_checkpoints(run_dir)]
    latest = max(states, key=lambda state: tuple(state["key"]))
    arch = space.validate(arch)
    options = latest.get("supernet_options", {})  # checkpoints written before bn_affine existed were affine, the default
    supernet = space.supernet(**options)  # type: ignore[attr-defined]
    weights = latest["supernet"]
    few_shot = (latest.get("fingerprint") or {}).get("few_shot")
    if few_shot is not None and latest.get("few_shot") is not None:
        weights = latest["few_shot"][group_of(split_groups(space, FewShot(**few_shot)), arch)]["supernet"]
    try:
        supernet.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(f"the supernet in {folder} does not fit this space: {str(exc).splitlines()[0]}") from None
    return affine_batch_norms(supernet.export(arch))
