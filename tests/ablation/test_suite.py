from __future__ import annotations

from pathlib import Path

import pytest

from bmbench.ablation.suite import DatasetSpec, EvalSpec, load_suite
from bmbench.bench.options import SweepConfig
from bmbench.errors import BmbenchError
from bmbench.training.config import TrainConfig
from bmbench.variants import FAMILY_PRESETS, PRESETS, VariantSpec

SUITES = Path(__file__).resolve().parents[2] / "suites"


def write(tmp_path: Path, text: str, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_grid_expands_as_a_product_then_fixed_variants(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
name: demo
grid:
  - family: blendmask
    K: [1, 4]
    M: [1, 7]
    R: [28, 56]
variants: [yolact, "centermask:S=16", maskrcnn]
""",
    )
    suite = load_suite(path)
    grid = [VariantSpec("blendmask", K=K, M=M, R=R) for K in (1, 4) for M in (1, 7) for R in (28, 56)]
    fixed = [PRESETS["yolact"], VariantSpec("centermask", K=1, S=16, R=56), PRESETS["maskrcnn"]]
    assert list(suite.specs) == grid + fixed
    assert suite.skipped == ()


def test_omitted_sections_take_documented_defaults(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, "variants: [blendmask]\n", name="only-variants.yaml"))
    assert suite.name == "only-variants"  # the file's stem
    assert suite.dataset == DatasetSpec(kind="synthetic", images=400, size=256, seed=0)
    assert suite.train == TrainConfig(
        protocol="joint", iters=200, batch_size=8, lr=0.002, trunk="small", image_size=256, trunk_iters=1000
    )
    assert suite.train == TrainConfig(image_size=256)  # the defaults are TrainConfig's; the size, the dataset's
    assert suite.eval == EvalSpec(boxes="predicted")
    assert suite.speed == SweepConfig(instances=(1, 10, 100), image_size=(800, 1088), trunk="r50", dtype="fp32")
    assert suite.resolved()["speed"]["image_size"] == "1088x800"  # W x H, as `bmbench speed --image-size`
    assert suite.seeds == (0,)
    assert suite.specs == (PRESETS["blendmask"],)


def test_the_train_image_size_follows_the_synthetic_size(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, "dataset: {size: 100}\nvariants: [yolact]\n"))
    assert suite.train.image_size == 128  # rounded up to a multiple of 32
    suite = load_suite(write(tmp_path, "dataset: {size: 100}\ntrain: {image_size: 64}\nvariants: [yolact]\n"))
    assert suite.train.image_size == 64


def test_omitted_axes_take_family_defaults_and_scalars_are_one_value(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, "grid:\n  - {family: blendmask, K: 8}\n  - {family: maskrcnn}\n"))
    assert list(suite.specs) == [VariantSpec("blendmask", K=8, M=7, R=56), PRESETS["maskrcnn"]]


def test_invalid_combinations_are_skipped_and_listed(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, "grid:\n  - {family: blendmask, K: [4], M: [7, 14], R: [7, 28]}\n"))
    assert [str(s) for s in suite.specs] == [
        "blendmask:K=4,M=7,R=7",
        "blendmask:K=4,M=7,R=28",
        "blendmask:K=4,M=14,R=28",
    ]
    assert suite.skipped == ("blendmask:K=4,M=14,R=7: M=14 must not exceed R=7",)


def test_fixed_axes_skip_the_other_values(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, "grid:\n  - {family: centermask, K: [1, 4], S: [16, 32]}\n"))
    assert [str(s) for s in suite.specs] == ["centermask:K=1,S=16,R=56", "centermask:K=1,S=32,R=56"]
    assert len(suite.skipped) == 2 and "centermask requires K=1" in suite.skipped[0]


def test_a_variant_the_grid_already_holds_runs_once(tmp_path: Path) -> None:
    suite = load_suite(
        write(tmp_path, "grid:\n  - {family: blendmask, K: [4], M: [7], R: [56]}\nvariants: [blendmask]\n")
    )
    assert suite.specs == (PRESETS["blendmask"],)


def test_coco_dataset_and_sizes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
dataset: {kind: coco, root: /data/coco, train: train2017, val: val2017}
train: {protocol: joint, iters: 10, batch_size: 2, lr: 1}
variants: [yolact]
seeds: [0, 1]
eval: {boxes: oracle}
speed: {instances: [50, 5], image_size: 640x480, trunk: small, dtype: bf16, budget_s: 1}
""",
    )
    suite = load_suite(path)
    assert suite.dataset == DatasetSpec(kind="coco", images=None, size=None, seed=None, root="/data/coco",
                                        train="train2017", val="val2017")  # fmt: skip
    assert suite.train.lr == 1.0 and isinstance(suite.train.lr, float)
    assert suite.seeds == (0, 1)
    assert suite.train.image_size is None  # training reads the COCO images' own size (sizes follow the data)
    assert suite.speed == SweepConfig(
        instances=(5, 50), image_size=(480, 640), trunk="small", dtype="bf16", budget_s=1.0
    )
    assert suite.resolved()["speed"]["image_size"] == "640x480"


ERRORS = [
    # (file text, expected message after "<file>: ")
    ("grid:\n  - {family: blendmask}\nbogus: 1\n", "bogus: unknown key (expected one of: name, dataset"),
    ("variants: [yolact]\ntrain: {lrr: 0.1}\n", "train.lrr: unknown key (expected one of: protocol, iters"),
    ("variants: [yolact]\nspeed: {instances: [1], budget: 3}\n", "speed.budget: unknown key"),
    ("variants: [yolact]\ndataset: {kind: synthetic, root: /x}\n", "dataset.root: not a key of kind synthetic"),
    ("variants: [yolact]\ndataset: {kind: coco, root: /x, train: t}\n", "dataset.val: missing"),
    (
        "variants: [yolact]\ndataset: {kind: imagenet}\n",
        "dataset.kind: expected one of synthetic, coco",
    ),
    ("grid:\n  - {family: blendmask, M: [1, a]}\n", "grid[0].M: expected a list of integers, got [1, 'a']"),
    ("grid:\n  - {family: blendmask, M: a}\n", "grid[0].M: expected a list of integers, got 'a'"),
    ("grid:\n  - {family: blendmask, M: [true]}\n", "grid[0].M: expected a list of integers"),
    ("grid:\n  - {family: blendmask, K: [0]}\n", "grid[0].K: values must be >= 1, got 0"),
    ("grid:\n  - {family: blendmask, K: [2, 2]}\n", "grid[0].K: duplicate values [2]"),
    ("grid:\n  - {family: maskrcnn}\n  - {family: yolact, R: [28]}\n", "grid[1].R: not a field of family yolact"),
    ("grid:\n  - {family: blendmask, Q: [1]}\n", "grid[0].Q: not a field of family blendmask"),
    ("grid:\n  - {family: resnet}\n", "grid[0].family: unknown family 'resnet'"),
    ("grid:\n  - {K: [1]}\n", "grid[0].family: missing"),
    ("grid:\n  - blendmask\n", "grid[0]: expected a mapping"),
    ("grid: []\n", "grid: empty grid"),
    ("grid: {family: blendmask}\n", "grid: expected a list of entries"),
    ("name: x\nseeds: [0]\n", "grid: empty grid: no variants to run"),
    ("grid:\n  - {family: blendmask, M: [14], R: [7]}\n", "grid[0]: no valid combination (M=14 must not exceed R=7)"),
    ("variants: [yolact, 'blendmask:Q=1']\n", "variants[1]: unknown key 'Q' for family blendmask"),
    ("variants: [foo]\n", "variants[0]: unknown family or preset 'foo'"),
    ("variants: blendmask\n", "variants: expected a list of presets or spec strings, got 'blendmask'"),
    ("variants: [yolact]\ntrain: {iters: 0}\n", "train.iters: must be >= 1, got 0"),
    ("variants: [yolact]\ntrain: {iters: '10'}\n", "train.iters: expected an integer, got '10'"),
    ("variants: [yolact]\ntrain: {lr: -1}\n", "train.lr: expected a positive number, got -1"),
    ("variants: [yolact]\ntrain: {protocol: frozen}\n", "train.protocol: expected one of shared-trunk, joint"),
    ("variants: [yolact]\ntrain: {trunk: r18}\n", "train.trunk: expected one of small, r50"),
    ("variants: [yolact]\ntrain: 5\n", "train: expected a mapping, got 5"),
    ("variants: [yolact]\nseeds: {a: 1}\n", "seeds: expected a list of integers, got a mapping"),
    ("variants: [yolact]\ntrain: {image_size: 100}\n", "train.image_size: must be a multiple of 32, got 100"),
    ("variants: [yolact]\nspeed: {dtype: fp8}\n", "speed.dtype: expected one of fp32, fp16, bf16"),
    ("variants: [yolact]\nspeed: {budget_s: .nan}\n", "speed.budget_s: expected a positive number, got nan"),
    ("variants: [yolact]\neval: {boxes: gt}\n", "eval.boxes: expected one of predicted, oracle, got 'gt'"),
    ("variants: [yolact]\nspeed: {image_size: big}\n", "speed.image_size: expected WxH (e.g. 1088x800)"),
    ("variants: [yolact]\nspeed: {image_size: 16x16}\n", "speed.image_size: sides must be >= 32 px"),
    ("variants: [yolact]\nspeed: {instances: []}\n", "speed.instances: expected a non-empty list of integers"),
    ("variants: [yolact]\nseeds: [0, x]\n", "seeds: expected a list of integers"),
    ("variants: [yolact]\nname: 'a/b'\n", "name: expected letters, digits"),
    ("- just\n- a list\n", "expected a mapping, got ['just', 'a list']"),
    ("", "empty file"),
    ("variants: [yolact\n", "malformed YAML: line 2, column 1"),
    ("variants: [yolact]\nvariants: [maskrcnn]\n", "malformed YAML: line 2, column 1: key 'variants' given twice"),
]


@pytest.mark.parametrize(("text", "message"), ERRORS, ids=[m.split(":")[0] for _, m in ERRORS])
def test_every_invalid_suite_names_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(BmbenchError) as info:
        load_suite(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(BmbenchError, match=r"nope\.yaml: no such file"):
        load_suite(tmp_path / "nope.yaml")


def test_shipped_suites_load_and_quick_covers_the_required_settings() -> None:
    suites = {name: load_suite(SUITES / f"{name}.yaml") for name in ("kmr", "baselines", "quick", "demo", "coco")}
    kmr = suites["kmr"]
    blend = [s for s in kmr.specs if s.family == "blendmask"]
    assert {(s.R, s.K, s.M) for s in blend} == {
        (R, K, M) for R in (28, 56) for K in (1, 2, 4, 8) for M in (1, 2, 4, 7, 14)
    }
    assert suites["baselines"].specs == tuple(PRESETS[name] for name in FAMILY_PRESETS)  # every family's preset
    quick = suites["quick"]
    cells = len(quick.specs) * len(quick.seeds)
    assert cells >= 8
    blend = [s for s in quick.specs if s.family == "blendmask"]
    assert {1, 4} <= {s.K for s in blend} and {1, 7} <= {s.M for s in blend} and {28, 56} <= {s.R for s in blend}
    assert PRESETS["maskrcnn"] in quick.specs
    seeds = dict(zip(quick.specs, quick.spec_seeds, strict=True))
    compared = [PRESETS["blendmask"]] + [
        VariantSpec("blendmask", K=K, M=M, R=R) for K, M, R in ((1, 7, 56), (4, 1, 56), (4, 7, 28))
    ]
    assert all(len(seeds[spec]) >= 3 for spec in compared)  # the cells the findings compare: 3 seeds
    assert quick.train.protocol == "finetune" and suites["demo"].train.protocol == "finetune"
    coco = suites["coco"]
    assert coco.dataset.kind == "coco" and coco.train.init and coco.train.trunk == "r50"


def test_a_grid_entry_may_give_its_own_seeds(tmp_path: Path) -> None:
    text = """
seeds: [0]
grid:
  - {family: blendmask, K: [1, 4], M: [7], R: [56]}
  - {family: blendmask, K: [4], M: [1, 7], R: [56], seeds: [0, 1, 2]}
variants: [maskrcnn]
"""
    suite = load_suite(write(tmp_path, text))
    seeds = {str(spec): value for spec, value in zip(suite.specs, suite.spec_seeds, strict=True)}
    assert seeds == {
        "blendmask:K=1,M=7,R=56": (0,),
        "blendmask:K=4,M=7,R=56": (0, 1, 2),  # in both entries: the union, each seed once
        "blendmask:K=4,M=1,R=56": (0, 1, 2),
        "maskrcnn:R=28": (0,),
    }
    with pytest.raises(BmbenchError, match=r"grid\[0\]\.seeds: duplicate values \[1\]"):
        load_suite(write(tmp_path, "grid:\n  - {family: blendmask, seeds: [1, 1]}\n"))


def test_cell_ids_hash_only_the_settings_a_suite_had_plus_changed_ones(tmp_path: Path) -> None:
    from bmbench.ablation.suite import train_dict

    suite = load_suite(write(tmp_path, "variants: [yolact]\n"))
    assert train_dict(suite.train) == {
        "protocol": "joint", "iters": 200, "batch_size": 8, "lr": 0.002, "trunk": "small",
        "image_size": 256, "trunk_iters": 1000,
    }  # fmt: skip
    changed = load_suite(write(tmp_path, "variants: [yolact]\ntrain: {protocol: finetune, pretrain_head: yolact}\n"))
    assert train_dict(changed.train)["pretrain_head"] == "yolact" and "stream" not in train_dict(changed.train)
