"""The contract a mask head must pass to take part in bmbench's sweeps and grids (``bmbench check-head SPEC``).

Each check runs on its own and gives one :class:`CheckResult`; a failed one says in one line what and why:

- ``shapes``: bottom, top and merge give outputs of the right shapes and dtype, and paste binary masks, for N = 0,
  1 and 100 instances over two images (bottom: whatever per-image maps the head keeps, so every tensor in it is
  ``Tensor[B, ...]``, finite, in the inputs' dtype; top: ``Tensor[B, D, H_l, W_l]`` with D = ``num_params``; merge:
  ``Tensor[N, R, R]`` in the roi form, ``Tensor[N, h, w]`` on the stride-4 map in the full form);
- ``device-dtype``: with the head and its inputs in float64 (and on CUDA when there is one), every output follows;
- ``gradient``: a loss on the merge's logits gives every parameter of the head a finite, non-zero gradient;
- ``training``: 30 joint steps on a tiny synthetic set (8 images) lower its mask loss;
- ``speed``: one point of the speed workload runs (the mask branch at N instances, as ``bmbench speed`` times it);
- ``evaluation``: the trained model's checkpoint evaluates (pycocotools, oracle boxes) to a finite mask AP;
- ``seed``: the same seed builds the same head (same outputs, twice each), and another seed a different one.

Letters: B images, N instances, D instance parameters per location, R mask side, h×w the stride-4 map.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from bmbench.bench.workload import MaskBranchWorkload, build_mask_head, random_inputs, sample_instances
from bmbench.data.synth import write_synthetic_dataset
from bmbench.evaluation.evaluate import evaluate
from bmbench.models.backbone import TRUNKS, feature_shapes
from bmbench.models.fcos import DETECTOR_LEVELS
from bmbench.models.heads.base import MaskHead
from bmbench.training.config import TrainConfig
from bmbench.training.train import train
from bmbench.variants import VariantSpec

CHECKS = ("shapes", "device-dtype", "gradient", "training", "speed", "evaluation", "seed")
SHAPE_COUNTS = (0, 1, 100)  # N for the shape check
IMAGE = (96, 128)  # H, W of the stage checks' inputs (a multiple of 32, as the model pads)
TRAIN_STEPS = 30
TRAIN_IMAGES = 8  # the tiny synthetic set: 6 train, 2 val
TRAIN_SIDE = 64  # its image side
SPEED_INSTANCES = 10
NUM_CLASSES = 3


@dataclass(frozen=True)
class CheckResult:
    name: str  # one of CHECKS
    ok: bool
    detail: str  # why it failed, or what it measured
    seconds: float  # how long it took

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name}: {self.detail}"


class ContractError(AssertionError):
    """A check's failure: its message is the one line the user sees."""


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise ContractError(message)


def _shape(x: Any) -> str:
    return (
        f"Tensor[{', '.join(map(str, x.shape))}] {str(x.dtype).removeprefix('torch.')}"
        if torch.is_tensor(x)
        else repr(type(x))
    )


def _inputs(spec: VariantSpec, trunk: str, *, batch: int, dtype: torch.dtype, device: torch.device, seed: int = 0):
    sizes = TRUNKS[trunk]
    generator = torch.Generator().manual_seed(seed)
    features = {
        name: torch.randn(shape, generator=generator).to(device, dtype)
        for name, shape in feature_shapes(IMAGE, sizes.fpn_channels, batch).items()
    }
    tower_shapes = feature_shapes(IMAGE, sizes.tower_channels, batch)
    tower = [torch.randn(tower_shapes[n], generator=generator).relu().to(device, dtype) for n in DETECTOR_LEVELS]
    return features, tower


def _instances(num: int, batch: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """N boxes spread over `batch` images: rois ``Tensor[N, 5]``, labels ``Tensor[N]``, and each one's level and
    location (for gathering its parameters)."""
    drawn = sample_instances(num, IMAGE, seed=num, device=device)
    rois = drawn.rois.clone()
    rois[:, 0] = (torch.arange(num, device=device) % batch).to(rois.dtype)
    return rois, drawn.labels % NUM_CLASSES, drawn


def _gather(top: list[Tensor], drawn: Any, rois: Tensor) -> Tensor:
    """Each instance's parameters at its location in its own image: ``Tensor[N, D]``."""
    params = top[0].new_zeros((len(rois), top[0].shape[1]))
    for index, level in enumerate(top):
        chosen = (drawn.levels == index).nonzero().squeeze(1)
        if chosen.numel():
            flat = level.flatten(2)  # (B, D, H_l*W_l)
            params[chosen] = flat[rois[chosen, 0].long(), :, drawn.locations[chosen]]
    return params


def _tensors(value: Any, path: str = "bottom") -> list[tuple[str, Tensor]]:
    """Every tensor inside a stage's output (a tensor, or dicts, lists and tuples of them), with where it sits."""
    if torch.is_tensor(value):
        return [(path, value)]
    if isinstance(value, dict):
        return [pair for key, item in value.items() for pair in _tensors(item, f"{path}[{key!r}]")]
    if isinstance(value, (list, tuple)):
        return [pair for index, item in enumerate(value) for pair in _tensors(item, f"{path}[{index}]")]
    return []


def _check_bottom(bottom: Any, *, batch: int, dtype: torch.dtype, device: torch.device | str) -> None:
    """The bottom's maps are per image: each tensor in it has the batch first, is finite, and follows the inputs'
    dtype and device (a head with no per-image maps returns None, which passes)."""
    for where, tensor in _tensors(bottom):
        if not tensor.is_floating_point():
            continue  # an index or a size kept beside the maps
        _expect(
            tensor.ndim >= 1 and tensor.shape[0] == batch,
            f"{where} gave {_shape(tensor)}, expected {batch} images first",
        )
        _expect(tensor.dtype == dtype, f"{where} gave {_shape(tensor)} for {str(dtype)[6:]} inputs")
        _expect(
            tensor.device.type == torch.device(device).type,
            f"{where} gave a tensor on {tensor.device} for inputs on {device}",
        )
        _expect(bool(torch.isfinite(tensor).all()), f"{where} gave non-finite values")


def _run_stages(head: MaskHead, spec: VariantSpec, trunk: str, num: int, *, dtype, device, batch: int = 2):
    features, tower = _inputs(spec, trunk, batch=batch, dtype=dtype, device=device)
    rois, labels, drawn = _instances(num, batch, device)
    bottom = head.bottom(features, IMAGE)
    _check_bottom(bottom, batch=batch, dtype=dtype, device=device)
    top = head.top(tower)
    params = _gather(top, drawn, rois)
    logits = head.merge(bottom, params, rois.to(dtype), labels)
    return features, top, logits, rois


def check_shapes(spec: VariantSpec, trunk: str) -> str:
    head = build_mask_head(spec, trunk=trunk, seed=0, device=torch.device("cpu"), dtype=torch.float32)
    _expect(isinstance(head, MaskHead), f"build returned {type(head).__name__}, not a MaskHead")
    _expect(head.mask_form in ("roi", "full"), f"mask_form is {head.mask_form!r}, not 'roi' or 'full'")
    h, w = (side // 4 for side in IMAGE)
    with torch.inference_mode():
        for num in SHAPE_COUNTS:
            features, top, logits, rois = _run_stages(head, spec, trunk, num, dtype=torch.float32, device="cpu")
            _expect(len(top) == len(DETECTOR_LEVELS), f"top gave {len(top)} levels, expected {len(DETECTOR_LEVELS)}")
            for level, out in zip(DETECTOR_LEVELS, top, strict=True):
                want = (2, head.num_params, *features[level].shape[-2:])
                _expect(tuple(out.shape) == want, f"top at {level} gave {_shape(out)}, expected Tensor{list(want)}")
            _expect(torch.is_tensor(logits), f"merge at N={num} gave {_shape(logits)}, not a tensor")
            if head.mask_form == "full":
                want = (num, h, w)
            else:
                side = spec.R if spec.R is not None else (logits.shape[-1] if logits.ndim == 3 else -1)
                want = (num, side, side)
            _expect(tuple(logits.shape) == want, f"merge at N={num} gave {_shape(logits)}, expected Tensor{list(want)}")
            _expect(logits.dtype == torch.float32, f"merge at N={num} gave {_shape(logits)}, expected float32")
            masks = head.paste(logits, rois, IMAGE)
            _expect(
                masks.dtype == torch.bool and tuple(masks.shape) == (num, *IMAGE),
                f"paste at N={num} gave {_shape(masks)}, expected Tensor[{num}, {IMAGE[0]}, {IMAGE[1]}] bool",
            )
    _check_params_unused(head, spec, trunk)
    return f"bottom, top, merge, paste at N = {', '.join(map(str, SHAPE_COUNTS))}"


def _check_params_unused(head: MaskHead, spec: VariantSpec, trunk: str) -> None:
    """A head that declares ``merge_uses_params = False`` has its merge run once per instance in training and shared
    among that instance's positives: its logits must not change when the instance parameters do."""
    if head.merge_uses_params:
        return
    features, tower = _inputs(spec, trunk, batch=2, dtype=torch.float32, device=torch.device("cpu"))
    rois, labels, drawn = _instances(10, 2, torch.device("cpu"))
    with torch.inference_mode():
        bottom = head.bottom(features, IMAGE)
        params = _gather(head.top(tower), drawn, rois)
        other = torch.randn(params.shape, generator=torch.Generator().manual_seed(1))
        same = torch.equal(head.merge(bottom, params, rois, labels), head.merge(bottom, other, rois, labels))
    _expect(same, "merge_uses_params is False, but the merge's logits change with the instance parameters")


def check_device_dtype(spec: VariantSpec, trunk: str) -> str:
    targets = [(torch.device("cpu"), torch.float64)]
    if torch.cuda.is_available():
        targets.append((torch.device("cuda"), torch.float32))
    for device, dtype in targets:
        head = build_mask_head(spec, trunk=trunk, seed=0, device=device, dtype=dtype)
        with torch.inference_mode():
            _, top, logits, rois = _run_stages(head, spec, trunk, 5, dtype=dtype, device=device)
            masks = head.paste(logits, rois, IMAGE)
        for what, out in [*(("top", t) for t in top), ("merge", logits), ("paste", masks)]:
            _expect(out.device.type == device.type, f"{what} gave a tensor on {out.device} for inputs on {device}")
            if what != "paste":
                _expect(out.dtype == dtype, f"{what} gave {_shape(out)} for {str(dtype)[6:]} inputs")
    return ", ".join(f"{device.type} {str(dtype)[6:]}" for device, dtype in targets)


def check_gradient(spec: VariantSpec, trunk: str) -> str:
    head = build_mask_head(spec, trunk=trunk, seed=0, device=torch.device("cpu"), dtype=torch.float32).train()
    _, _, logits, _ = _run_stages(head, spec, trunk, 8, dtype=torch.float32, device=torch.device("cpu"))
    weights = torch.randn(logits.shape, generator=torch.Generator().manual_seed(1))
    (logits.float() * weights).sum().backward()
    missing = [name for name, p in head.named_parameters() if p.requires_grad and p.grad is None]
    _expect(not missing, f"no gradient reaches {len(missing)} parameter(s): {', '.join(missing[:3])}")
    bad = [name for name, p in head.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    _expect(not bad, f"non-finite gradient at {', '.join(bad[:3])}")
    zero = [name for name, p in head.named_parameters() if p.grad is not None and not p.grad.any()]
    _expect(not zero, f"an all-zero gradient at {len(zero)} parameter(s): {', '.join(zero[:3])}")
    return f"{sum(1 for _ in head.parameters())} parameter tensors"


def check_training(spec: VariantSpec, trunk: str, work: Path) -> str:
    data = write_synthetic_dataset(work / "data", num_images=TRAIN_IMAGES, size=TRAIN_SIDE + 32, seed=0)
    config = TrainConfig(
        iters=TRAIN_STEPS,
        batch_size=2,
        lr=2e-3,
        trunk=trunk,
        image_size=TRAIN_SIDE,
        stream=False,
        flip=False,
        warmup_iters=2,
        semantic_aux=False,
        max_mask_positives=16,
    )
    result = train(spec, config, data_dir=data, out=work / "run", device="cpu", log_every=1)
    losses = pd.read_csv(result.log)["loss_mask"].tolist()
    _expect(len(losses) == TRAIN_STEPS, f"the train log has {len(losses)} steps, expected {TRAIN_STEPS}")
    first, last = statistics.fmean(losses[:5]), statistics.fmean(losses[-5:])
    _expect(math.isfinite(last) and last < first, f"mask loss did not go down: {first:.4f} -> {last:.4f}")
    return f"mask loss {first:.4f} -> {last:.4f} (means of the first and last 5 of {TRAIN_STEPS} steps)"


def check_speed(spec: VariantSpec, trunk: str) -> str:
    device, dtype = torch.device("cpu"), torch.float32
    head = build_mask_head(spec, trunk=trunk, seed=0, device=device, dtype=dtype)
    features, tower = random_inputs(IMAGE, trunk=trunk, seed=0, device=device, dtype=dtype)
    instances = sample_instances(SPEED_INSTANCES, IMAGE, seed=0, device=device)
    workload = MaskBranchWorkload(head=head, features=features, box_tower=tower, instances=instances, image_size=IMAGE)
    for call in workload.stage_calls().values():  # each stage alone, as the sweep times them
        call()
    times = []
    for _ in range(3):
        tick = time.perf_counter()
        masks = workload.run()
        times.append((time.perf_counter() - tick) * 1e3)
    _expect(tuple(masks.shape) == (SPEED_INSTANCES, *IMAGE), f"the mask branch gave {_shape(masks)}")
    return (
        f"mask branch at N={SPEED_INSTANCES}, {IMAGE[1]}x{IMAGE[0]}: {statistics.median(times):.1f} ms (untimed check)"
    )


def check_evaluation(spec: VariantSpec, trunk: str, work: Path) -> str:
    checkpoint = work / "run" / "checkpoint.pt"
    _expect(checkpoint.exists(), "no checkpoint to evaluate (the training check did not finish)")
    metrics = evaluate(checkpoint, work / "data", boxes="oracle", device="cpu", batch_size=2)
    ap = metrics.get("mask_AP")
    _expect(isinstance(ap, float) and math.isfinite(ap), f"mask AP is {ap!r}")
    return f"oracle-box mask AP {100 * ap:.1f} after {TRAIN_STEPS} steps (a smoke test, not a figure)"


def _outputs(spec: VariantSpec, trunk: str, seed: int) -> list[Tensor]:
    head = build_mask_head(spec, trunk=trunk, seed=seed, device=torch.device("cpu"), dtype=torch.float32)
    with torch.inference_mode():
        return [_run_stages(head, spec, trunk, 6, dtype=torch.float32, device="cpu")[2] for _ in range(2)]


def check_seed(spec: VariantSpec, trunk: str) -> str:
    first, again, other = _outputs(spec, trunk, 0), _outputs(spec, trunk, 0), _outputs(spec, trunk, 1)
    _expect(torch.equal(first[0], first[1]), "two runs of one head on the same inputs differ")
    _expect(torch.equal(first[0], again[0]), "the same seed built heads whose outputs differ")
    _expect(not torch.equal(first[0], other[0]), "seeds 0 and 1 built heads with the same outputs (seed ignored)")
    return "same seed, same outputs; another seed, other outputs"


def run_contract(
    spec: VariantSpec, *, trunk: str = "small", progress: Callable[[str], None] | None = None
) -> list[CheckResult]:
    """Every check of the contract on `spec`'s head, in CHECKS order; a check that raises fails with its reason."""
    if trunk not in TRUNKS:
        raise ValueError(f"unknown trunk {trunk!r}")
    results = []
    with tempfile.TemporaryDirectory(prefix="bmbench-check-head-") as tmp:
        work = Path(tmp)
        calls: dict[str, Callable[[], str]] = {
            "shapes": lambda: check_shapes(spec, trunk),
            "device-dtype": lambda: check_device_dtype(spec, trunk),
            "gradient": lambda: check_gradient(spec, trunk),
            "training": lambda: check_training(spec, trunk, work),
            "speed": lambda: check_speed(spec, trunk),
            "evaluation": lambda: check_evaluation(spec, trunk, work),
            "seed": lambda: check_seed(spec, trunk),
        }
        for name in CHECKS:
            if progress is not None:
                progress(name)
            started = time.perf_counter()
            try:
                ok, detail = True, calls[name]()
            except ContractError as why:
                ok, detail = False, str(why)
            except Exception as err:  # noqa: BLE001 - the head's own error is the check's reason
                ok, detail = False, " ".join(f"{type(err).__name__}: {err}".split())[:300]
            results.append(CheckResult(name, ok, detail, time.perf_counter() - started))
    return results
