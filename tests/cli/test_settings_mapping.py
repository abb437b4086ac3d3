"""Configuration -> settings: every key the command line reads lands in the parameter object field it names, with
the value given on the command line (each one set to a value unlike its default, so a key that drops out or is
read into the wrong field shows)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf, open_dict, read_write

from iqa_saliency.api import compose_config
from iqa_saliency.cli import evaluate as cli
from iqa_saliency.data.protocol import Cell, Inputs
from iqa_saliency.data.selection import Selection
from iqa_saliency.errors import ConfigError
from iqa_saliency.evaluation.faithfulness import Faithfulness
from iqa_saliency.evaluation.settings import Explanation, Outputs, Speed

OVERRIDES = [
    "corruption=contrast", "severity=4", "seed=17", "dataset=folder", "dataset.root=/data/x",
    "dataset.resize=300", "dataset.crop=288", "dataset.corrupt_at=full_size", "dataset.small=pad",
    "dataset.max_pixels=1234567", "dataset.batch_size=5", "dataset.num_workers=3", "dataset.save_images=true",
    "corruption_backend=torch", "figures=2", "save_maps=false", "resume=true", "maps_format=zarr",
    "corruption_cache=/tmp/cc", "channels_last=true", "fold_batchnorm=false",
    "attribution=integrated_gradients", "attribution.options.n_steps=7", "attribution.target=label",
    "similarity.quality_map=inverted", "similarity.quality_saliency=smoothgrad",
    "+similarity.quality_saliency_options.nt_samples=3",
    "dataset.split=val", "dataset.val_fraction=0.3", "dataset.split_seed=9", "dataset.split_method=study",
    "dataset.quality_filter=[good,Excellent]", "dataset.quality_cache=/tmp/q.csv", "dataset.quality_score_size=full",
    "quality.checkpoint=/w/paq.pth", "pretrained=true", "faithfulness.steps=6", "faithfulness.insertion=true",
]


def _compose(overrides: list[str]):
    """The evaluate configuration as the command line composes it, without Hydra's own node."""
    composed = compose_config(["logger=none", *overrides])
    with read_write(composed), open_dict(composed):
        del composed["hydra"]
    return composed


@pytest.fixture(scope="module")
def cfg():
    return _compose(OVERRIDES)


def test_cell_inputs_outputs_speed(cfg):
    cell, inputs, outputs, speed = cli.settings(cfg, "/runs/r1", "/cache/clean", processes=1)
    assert cell == Cell("contrast", 4, 17)
    assert inputs == Inputs(resize=300, crop=288, corrupt_at="full_size", small="pad", max_pixels=1234567,
                            batch_size=5, num_workers=3, save_images=True, corruption_backend="torch")
    assert outputs == Outputs(run_dir="/runs/r1", figures=2, save_maps=False, maps_format="zarr", resume=True,
                              clean_cache_dir="/cache/clean", corruption_cache_dir="/tmp/cc",
                              config=OmegaConf.to_container(cfg, resolve=True))
    assert speed == Speed(channels_last=True, fold_batchnorm=False)


def test_keys_a_config_lacks_take_the_documented_defaults():
    bare = _compose(["dataset=folder"])
    with read_write(bare), open_dict(bare):  # a dataset config of one's own, written without these keys
        for node, key in ((bare.dataset, "corrupt_at"), (bare.dataset, "small"), (bare.dataset, "max_pixels"),
                          (bare, "corruption_backend"), (bare, "maps_format")):
            del node[key]
    _, inputs, outputs, _ = cli.settings(bare, "/r", None, processes=1, resume_command="python evaluate.py again")
    assert (inputs.corrupt_at, inputs.small, inputs.max_pixels, inputs.corruption_backend) == (
        "crop", "upscale", 50_000_000, "numpy")
    assert outputs.maps_format == "npz" and outputs.resume_command == "python evaluate.py again"


def test_workers_auto_are_shared_by_the_processes(cfg, monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda _: set(range(12)), raising=False)
    auto = _compose(["dataset.num_workers=auto"])
    assert cli.settings(auto, "/r", None, processes=1)[1].num_workers == 12
    assert cli.settings(auto, "/r", None, processes=4)[1].num_workers == 3
    assert cli.settings(auto, "/r", None, processes=24)[1].num_workers == 1


def test_explanation(cfg):
    # the method's options: its config file's (conf/attribution/integrated_gradients.yaml) with the override
    assert cli.explanation(cfg) == Explanation(
        method="integrated_gradients",
        options={"baseline": "black", "blur_sigma": 5.0, "n_steps": 7, "internal_batch_size": 16, "reduce": "abs_sum"},
        target="label", quality_saliency="smoothgrad", quality_options={"nt_samples": 3, "seed": 17},
        quality_map="inverted",  # the quality method is seeded by the run's seed unless given
        faithfulness=Faithfulness(steps=6, insertion=True))


def test_method_options_are_resolved_and_bad_quality_options_name_their_key():
    cfg = _compose(["attribution=smoothgrad", "seed=23"])
    assert cli.explanation(cfg).options["seed"] == 23  # ${seed} in conf/attribution/smoothgrad.yaml, resolved
    bad = _compose(["similarity.quality_saliency=smoothgrad", "+similarity.quality_saliency_options.nt_sample=3"])
    with pytest.raises(ConfigError, match=r"Use similarity\.quality_saliency_options keys from"):
        cli.explanation(bad)


def test_an_absent_options_node_gives_no_options():
    cfg = _compose(["attribution=saliency"])
    with read_write(cfg), open_dict(cfg):  # a method config of one's own, written without `options`
        del cfg.attribution["options"]
    assert cli.explanation(cfg).options == {}


def test_the_layer_is_checked_against_the_configured_architecture():
    # torchvision's ResNet-50 has three blocks in layer4, ResNet-18 two: only the configured arch decides
    deep = cli.explanation(_compose(["classifier=resnet50", "attribution=gradcam",
                                     "attribution.options.layer=net.layer4.2"]))
    assert deep.options["layer"] == "net.layer4.2"
    with pytest.raises(ConfigError, match=r"no layer 'net\.layer4\.2'"):
        cli.explanation(_compose(["classifier=resnet18", "attribution=gradcam",
                                  "attribution.options.layer=net.layer4.2"]))


def test_a_given_classifier_skips_the_configured_architectures_layer_check_and_a_given_attribution_replaces_it():
    from iqa_saliency.attribution.given import GivenAttribution
    from iqa_saliency.evaluation.settings import GivenModels

    layered = ["classifier=resnet18", "attribution=gradcam", "attribution.options.layer=net.layer4.2"]
    with pytest.raises(ConfigError, match="no layer"):  # no given classifier: the configured one is checked
        cli.explanation(_compose(layered), GivenModels())
    # the caller's classifier is checked once it is loaded (check_layers), not against classifier.arch
    assert cli.explanation(_compose(layered), GivenModels(classifier=object())).options["layer"] == "net.layer4.2"

    def build(model):
        return model

    cfg = _compose(["attribution=saliency", "attribution.target=label"])
    given = GivenAttribution("given:mine", build, {"kind": "function"})
    explain = cli.explanation(cfg, GivenModels(attribution=given))
    assert (explain.method, explain.options, explain.given, explain.target) == (
        "given:mine", {"kind": "function"}, build, "label")
    assert (cfg.attribution.name, dict(cfg.attribution.options)) == ("given:mine", {"kind": "function"})
    plain = cli.explanation(_compose(["attribution=saliency"]), GivenModels())
    assert plain.method == "saliency" and plain.given is None


def test_quality_method_seed_given_wins_and_local_takes_no_options():
    cfg = _compose(["seed=17", "similarity.quality_saliency=smoothgrad",
                          "+similarity.quality_saliency_options.seed=4"])
    assert cli.explanation(cfg).quality_options == {"seed": 4}
    local = cli.explanation(_compose(["seed=17"]))
    assert (local.quality_saliency, local.quality_options, local.quality_map) == ("local", {}, "raw")


def test_selection(cfg):
    sel = Selection.from_options(OmegaConf.to_container(cfg.dataset, resolve=True), cfg.seed, cfg.quality.checkpoint,
                                 cfg.quality.pretrained)
    assert (sel.split, sel.val_fraction, sel.split_seed, sel.split_method) == ("val", 0.3, 9, "study")
    assert sel.quality_filter == ["Good", "Excellent"]  # canonical spelling, Bad..Excellent order
    assert (sel.quality_cache, sel.quality_score_size, sel.quality_batch_size, sel.num_workers) == (
        "/tmp/q.csv", "full", 8, 3)
    # full-size scoring: the scores do not depend on resize/crop, so they are not in the scorer's identity
    assert sel.quality_scorer == "/w/paq.pth|resize=None|crop=None"


def test_selection_defaults_and_eval_size_scorer():
    cfg = _compose(["dataset=folder", "seed=5", "dataset.resize=300", "dataset.crop=256", "dataset.batch_size=20",
                          "pretrained=false"])
    sel = Selection.from_options(OmegaConf.to_container(cfg.dataset, resolve=True), cfg.seed, cfg.quality.checkpoint,
                                 cfg.quality.pretrained)
    assert (sel.split, sel.val_fraction, sel.split_seed, sel.split_method, sel.quality_filter) == (
        "all", 0.2, 5, "project", None)  # split_seed follows seed
    assert sel.quality_batch_size == 20 and sel.quality_scorer == "untrained|resize=300|crop=256"
    assert Selection.from_options({}, 3, None, True, split="train").split == "train"


def test_a_quality_group_without_normalization_is_passed_as_it_is():
    cfg = _compose(["~quality.normalization", "quality.seed=3"])
    node = cli.quality_model_config(cfg)
    assert set(node) == set(cfg.quality) and node.seed == 3


def test_quality_model_config_drops_only_normalization(cfg):
    node = cli.quality_model_config(cfg)
    assert "normalization" not in node
    assert {k: node[k] for k in ("checkpoint", "pretrained", "seed")} == {
        "checkpoint": "/w/paq.pth", "pretrained": True, "seed": 17}


@pytest.mark.parametrize("override,key", [("seed=-1", "seed"), ("dataset.batch_size=0", "dataset.batch_size"),
                                          ("dataset.max_pixels=0", "dataset.max_pixels"),
                                          ("dataset.split_seed=-2", "dataset.split_seed"),
                                          ("quality.sha256=xyz", "quality.sha256")])
def test_values_checked_name_their_key(override, key):
    from iqa_saliency.cli.checks import check_values

    bad = _compose(["dataset=folder", override])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_values(bad)
