"""The configuration schema (issue 22), generated from its principles: every key of every packaged config is typed;
every value of the wrong type, out of range or not among the choices is one ConfigError line naming the key; every
shipped configuration passes; the schema's restated choices are the library's own; nothing heavy is imported."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

from iqa_saliency.cli import schema
from iqa_saliency.cli.schema import OPTION_NODES, TASKS, check_config, config_sources, method_options
from iqa_saliency.errors import ConfigError


@pytest.fixture(scope="module")
def composed():
    """compose(task, overrides) with the packaged configs, memoised."""
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    cache = {}
    with initialize_config_module(config_module="iqa_saliency.conf", version_base="1.3"):
        def get(task, *overrides):
            if (task, overrides) not in cache:
                cfg = compose(task, overrides=list(overrides))
                cache[task, overrides] = cfg
            return copy.deepcopy(cache[task, overrides])
        yield get
    GlobalHydra.instance().clear()


def _set(cfg, key, value):
    with open_dict(cfg):
        OmegaConf.update(cfg, key, value, merge=False, force_add=True)
    return cfg


def _refused(cfg, task, key):
    with pytest.raises(ConfigError) as info:
        check_config(cfg, task)
    message = str(info.value)
    assert "\n" not in message and key in message, message
    return message


# ------------------------------------------------------------------------------------------ every key is typed
def test_every_key_of_every_config_file_has_a_typed_entry():
    typed = set(TASKS["evaluate"]) | set(TASKS["train"])
    untyped = []
    for key, files in config_sources().items():
        node = key.rsplit(".", 1)[0]
        if node in OPTION_NODES:  # a method's options: typed by schema.OPTIONS, per name
            assert key.rsplit(".", 1)[1] in schema.OPTIONS, (key, files)
            continue
        if key not in typed:
            if key not in OPTION_NODES:  # an empty options node
                untyped.append((key, files))
    assert not untyped, f"add these keys to iqa_saliency.cli.schema: {untyped}"


def test_every_method_option_is_a_constructor_argument():
    from iqa_saliency.attribution.registry import attribution_names, method_defaults

    assert sorted(method_options()) == attribution_names()
    for name, options in method_options().items():
        assert set(options) == set(method_defaults(name)), name


GROUP_OPTIONS = {g: sorted(p.stem for p in (schema.resources.files("iqa_saliency.conf") / g).iterdir()
                           if p.name.endswith(".yaml"))
                 for g in ("dataset", "classifier", "quality", "attribution", "logger", "trainer", "experiment")}


@pytest.mark.parametrize(("group", "option"), [(g, o) for g, opts in GROUP_OPTIONS.items() for o in opts])
def test_every_shipped_configuration_passes(composed, group, option):
    prefix = "+" if group == "experiment" else ""
    check_config(composed("evaluate", f"{prefix}{group}={option}"), "evaluate")
    if group not in ("attribution", "experiment"):
        check_config(composed("train", f"{group}={option}"), "train")


def test_shipped_extras_pass(composed):
    check_config(composed("evaluate", "+check=randomization"), "evaluate")
    check_config(composed("train", "recipe=study"), "train")
    check_config(composed("evaluate", "similarity.quality_saliency=integrated_gradients",
                          "+similarity.quality_saliency_options.n_steps=4"), "evaluate")


# ------------------------------------------------------------------------------------ generated wrong values
WRONG = {  # values of every type, each wrong for some spec
    "text": "abc", "empty": "", "half": 100.5, "negative": -10, "zero": 0, "no": "no", "yes": "yes", "one": 1,
    "bool": True, "list": [1, 2], "nan": float("nan"), "inf": float("inf"), "null": None,
}


def _keys_and_bad_values(task, composed_cfg):
    """(key, bad value) for every key the config has: every generated value its spec refuses."""
    table = dict(TASKS[task])
    for node, name_key in OPTION_NODES.items():
        method = OmegaConf.select(composed_cfg, name_key, default=None)
        if method in method_options():
            table.update({f"{node}.{o}": schema.METHOD_OPTIONS.get(method, {}).get(o, schema.OPTIONS[o])
                          for o in method_options()[method]})
    for n, (key, spec) in enumerate(table.items()):
        if OmegaConf.select(composed_cfg, key, default="<absent>", throw_on_resolution_failure=False) == "<absent>":
            continue
        refused = [value for value in WRONG.values() if not spec.accepts(value)]
        for i in range(min(3, len(refused))):  # three of them per key, a different three from key to key
            yield key, refused[(n + 5 * i) % len(refused)]


@pytest.mark.parametrize(("task", "overrides"), [
    ("evaluate", ()), ("evaluate", ("dataset=folder", "attribution=integrated_gradients")),
    ("evaluate", ("dataset=mit_indoor", "attribution=occlusion", "+check=randomization")),
    ("evaluate", ("attribution=smoothgrad", "logger=csv", "trainer=ddp")), ("train", ()), ("train", ("recipe=study",)),
])
def test_every_wrong_value_of_every_key_is_one_line_naming_it(composed, task, overrides):
    base = composed(task, *overrides)
    raw = OmegaConf.to_container(base, resolve=False)
    cases = list(_keys_and_bad_values(task, base))
    assert len(cases) > 60
    for key, value in cases:
        if key.startswith("logger.") and value is None:
            continue
        plain = copy.deepcopy(raw)
        *parents, last = key.split(".")
        node = plain
        for part in parents:
            node = node[part]
        node[last] = value
        _refused(OmegaConf.create(plain), task, key)


@pytest.mark.parametrize("key", ["foo", "dataset.smal", "dataset.crop_size", "classifier.chekpoint", "quality.sha",
                                 "similarity.quality_mapp", "attribution.option"])
def test_unknown_keys_are_refused_with_a_suggestion(composed, key):
    message = _refused(_set(composed("evaluate", "dataset=folder"), key, 1), "evaluate", key)
    assert "Unknown key" in message


@pytest.mark.parametrize("option", ["layers", "relu_", "n_step", "foo", "window", "relu", "n_steps"])
def test_unknown_method_options_are_refused(composed, option):
    for method in ("gradcam", "integrated_gradients", "saliency"):
        if option in method_options()[method]:
            continue  # its own option (another method's is refused)
        cfg = _set(composed("evaluate", f"attribution={method}"), f"attribution.options.{option}", 1)
        assert option in _refused(cfg, "evaluate", f"{method} has no option")


def test_open_groups_take_a_constructors_other_arguments(composed):
    cfg = _set(composed("evaluate"), "trainer.max_time", "00:01:00:00")
    check_config(cfg, "evaluate")
    _refused(_set(composed("evaluate"), "trainer.precision", "bf17-mixed"), "evaluate", "trainer.precision")


@pytest.mark.parametrize(("key", "value", "needle"), [
    ("maps_format", "nzp", "Did you mean npz"), ("corruption_backend", "Torch", "Did you mean torch"),
    ("corruption", "MOTION_BLUR", "Did you mean motion_blur"), ("dataset.small", "pd", "Did you mean pad"),
    ("dataset.corrupt_at", "full-size", "Did you mean full_size"), ("dataset.crop", 0, "at least 1"),
    ("dataset.crop", -10, "at least 1"), ("dataset.crop", "abc", "whole number"), ("dataset.crop", 100.5, "whole"),
    ("dataset.resize", 0, "at least 1"), ("save_maps", "no", "true or false"), ("figures", "abc", "whole number"),
    ("dataset.quality_filter", ["great"], "Good"), ("dataset.val_fraction", 1.0, "below 1"),
    ("quality.sha256", 7916, "read as a number"), ("severity", 7, "0 (clean) to 5"),
])
def test_the_issues_cases(composed, key, value, needle):
    assert needle in _refused(_set(composed("evaluate", "dataset=folder"), key, value), "evaluate", key)


def test_categories_in_any_case_are_the_categories(composed):
    check_config(_set(composed("evaluate", "dataset=folder"), "dataset.quality_filter", ["good", "EXCELLENT"]),
                 "evaluate")


def test_paths_that_cannot_be_what_the_key_needs(composed, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for key in ("clean_cache", "corruption_cache"):
        _refused(_set(composed("evaluate"), key, str(a_file)), "evaluate", key)
        check_config(_set(composed("evaluate"), key, str(tmp_path / "new")), "evaluate")
    _refused(_set(composed("evaluate", "dataset=folder"), "dataset.quality_scores", str(tmp_path / "no.csv")),
             "evaluate", "dataset.quality_scores")
    _refused(_set(composed("evaluate"), "quality.normalization.fit_dir", str(a_file)), "evaluate", "fit_dir")


def test_cross_key_rules(composed):
    _refused(_set(_set(composed("evaluate"), "corruption", "none"), "severity", 3), "evaluate", "severity 3")
    _refused(_set(composed("evaluate"), "similarity.quality_saliency", "gradcm"), "evaluate", "gradcam")
    _refused(_set(composed("train"), "dataset.crop", None), "train", "dataset.crop")


# ------------------------------------------------------------------------------ the library's own choices
def test_restated_choices_are_the_librarys():
    from iqa_saliency.attribution.base import BASELINES, REDUCTIONS
    from iqa_saliency.corruption import CLEAN, corruption_names
    from iqa_saliency.corruption.backends import BACKENDS
    from iqa_saliency.data.images import DECODE_MODES
    from iqa_saliency.data.sources import SAMPLE_IMAGES
    from iqa_saliency.data.splits import SPLIT_METHODS, SPLITS
    from iqa_saliency.evaluation.similarity import QUALITY_MAPS
    from iqa_saliency.io.maps import MAPS_FORMATS
    from iqa_saliency.models.paq2piq import CATEGORIES, NORMALIZATIONS

    def choices(key, task="evaluate"):
        spec = TASKS[task][key]
        return {v for v in ["x", *spec.want.replace(",", " ").split()] if spec.accepts(v)}

    assert set(schema.CORRUPTIONS) == {CLEAN, *corruption_names()}
    assert choices("corruption_backend") == set(BACKENDS) and choices("maps_format") == set(MAPS_FORMATS)
    assert choices("dataset.decode") == set(DECODE_MODES) and choices("similarity.quality_map") == set(QUALITY_MAPS)
    assert choices("dataset.split") == set(SPLITS) and choices("dataset.split_method") == set(SPLIT_METHODS)
    assert choices("quality.normalization.name") == set(NORMALIZATIONS)
    from iqa_saliency.report.style import FIGURE_FORMATS

    assert choices("report.format") == set(FIGURE_FORMATS)
    assert set(schema.CATEGORIES) == set(CATEGORIES) and set(schema.SAMPLES) == set(SAMPLE_IMAGES)
    assert {v for v in REDUCTIONS if schema.OPTIONS["reduce"].accepts(v)} == set(REDUCTIONS)
    assert {v for v in BASELINES if schema.OPTIONS["baseline"].accepts(v)} == set(BASELINES)
    from iqa_saliency.attribution.rollout import HEAD_FUSIONS

    assert {v for v in ["x", *HEAD_FUSIONS] if schema.OPTIONS["head_fusion"].accepts(v)} == set(HEAD_FUSIONS)


def test_the_schema_imports_nothing_heavy():
    code = ("import sys, iqa_saliency.cli.schema, iqa_saliency.cli.precheck; "
            "print(sorted(m for m in ('torch', 'torchvision', 'lightning', 'pytorch_lightning', 'captum', 'wandb', "
            "'imagecorruptions') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
