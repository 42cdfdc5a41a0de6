"""Recipes and the run config: the registry, frozen digests, strict round trips, dotted and flat overrides,
portable paths, generated CLI flags, and every shipped card naming its recipe with no machine path."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeemo.cli import main
from edgeemo.config import (
    SECTIONS,
    DataSource,
    RunConfig,
    dotted_overrides,
    from_flat,
    portable_path,
    resolve_path,
)
from edgeemo.errors import EdgeemoError
from edgeemo.recipes import Recipe, get_recipe, list_recipes, recipe_config, register_recipe

REPO = Path(__file__).resolve().parents[1]


def test_the_registry_lists_tiny_small_base_and_the_reference_recipe():
    names = [r.name for r in list_recipes()]
    assert names[:3] == ["tiny", "small", "base"] and "4q-m1sp" in names
    for r in list_recipes():
        assert r.description and r.version >= 1
        assert r.digest is not None  # every built-in recipe pins what it means
        r.check()
        assert r.config.recipe == r.name


def test_a_recipe_whose_defaults_moved_is_refused():
    moved = Recipe("old", 1, "x", recipe_config("tiny"), digest="0123456789abcdef")
    with pytest.raises(EdgeemoError, match="a default it relies on changed"):
        moved.check()
    with pytest.raises(EdgeemoError, match="already registered"):
        register_recipe("tiny", "again")(lambda: RunConfig())
    with pytest.raises(EdgeemoError, match="unknown recipe 'nope'"):
        get_recipe("nope")


def test_recipes_differ_where_they_say():
    tiny, base = recipe_config("tiny"), recipe_config("base")
    assert (tiny.teacher.arch, tiny.teacher.stem, tiny.teacher.patch) == ("vit_tiny_patch16_224", "conv", (8, 32))
    assert (tiny.data.corpus_n, tiny.data.windows_per_song) == (800, 4)
    assert (base.teacher.arch, base.student.arch) == ("vit_base_patch16_224", "mobilevit_s")
    assert base.features.shape == (128, 256) and base.data.windows_per_song is None
    ref = recipe_config("4q-m1sp")
    assert ref.teacher.stem == "patch" and ref.teacher.patch is None and ref.data.corpus_n == 400
    assert ref.pretrain.unlabeled == ("$EDGEEMO_DATA/4q-dev", "$EDGEEMO_CACHE/unlabeled/debian")
    assert ref.pretrain.student and ref.export.int8
    assert [s.kind for s in ref.data.sources] == ["builtin", "quadrants"]
    small4q = recipe_config("4q-tiny")  # the main job's recipe on 4Q alone
    assert [(s.kind, s.path) for s in small4q.data.sources] == [("quadrants", "$EDGEEMO_DATA/4q-dev")]
    back = {"data.sources": tiny.to_dict()["data"]["sources"], "recipe": "tiny"}
    back["data.split_fractions"] = list(tiny.data.split_fractions)
    assert small4q.replace(back) == tiny


@pytest.mark.parametrize("name", ["tiny", "small", "base", "4q-m1sp"])
def test_every_field_round_trips_strictly(name):
    cfg = recipe_config(name)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert RunConfig.from_dict(d, strict=True) == cfg
    assert RunConfig.from_dict(d, strict=True).digest() == cfg.digest()
    del d["teacher"]["epochs"]
    with pytest.raises(EdgeemoError, match=r"recorded config lacks field\(s\) teacher\.epochs"):
        RunConfig.from_dict(d, strict=True)
    assert RunConfig.from_dict(d).teacher.epochs == RunConfig().teacher.epochs  # not strict: the default


def test_overrides_dotted_and_flat_and_bad_values():
    tiny = recipe_config("tiny")
    cfg = tiny.replace({"teacher.epochs": 3, "data.features.n_mels": 32, "student.task_weight": 0.7})
    assert (cfg.teacher.epochs, cfg.features.n_mels, cfg.student.task_weight) == (3, 32, 0.7)
    assert cfg.features.n_frames == tiny.features.n_frames
    flat = tiny.replace(dotted_overrides({"teacher_lr": 0.01, "alpha": 0.2, "patience": 2, "student_pretrain": True}))
    assert flat.teacher.head_lr == 0.01 and flat.student.task_weight == 0.2 and flat.pretrain.student
    assert flat.teacher.patience == flat.student.patience == flat.pretrain.patience == 2
    for bad, message in (
        ({"teacher.epochs": 0}, r"teacher\.epochs must be >= 1"),
        ({"teacher.epochs": "3"}, r"teacher\.epochs must be an integer"),
        ({"teacher.loss": "l1"}, r"teacher\.loss must be one of mse, ccc, mix"),
        ({"teacher.nope": 1}, r"unknown config field 'teacher\.nope'"),
        ({"data.split_fractions": [0.5, 0.5, 0.5]}, "summing to 1"),
        ({"data.sources": []}, "names no dataset"),
        ({"data.sources": [{"kind": "youtube", "path": "x"}]}, "unknown data source kind"),
    ):
        with pytest.raises(EdgeemoError, match=message):
            tiny.replace(bad)


def test_added_fields_read_as_their_neutral_value_and_keep_old_digests():
    from edgeemo.config import ADDED_FIELDS, to_plain

    cfg = recipe_config("4q-m1sp")
    for dotted, neutral in ADDED_FIELDS.items():
        section, _, name = dotted.rpartition(".")
        assert to_plain(getattr(getattr(cfg, section), name)) == neutral  # the default is the neutral value
    d = cfg.to_dict()
    del d["data"]["exclude"]  # a card written before the field existed
    assert RunConfig.from_dict(d, strict=True) == cfg
    held_out = cfg.replace({"data.exclude": ["MT0000000001"]})
    assert held_out.digest() != cfg.digest() and held_out.data.exclude == ("MT0000000001",)


def test_flat_configs_of_edgeemo_0_1_are_read():
    flat = {"preset": "tiny", "teacher_arch": "vit_small_patch16_224", "teacher_lr": 5e-4, "gan_ratio": 0.0}
    cfg = from_flat(flat, [{"kind": "quadrants", "path": "data/4q"}])
    assert cfg.teacher.arch == "vit_small_patch16_224" and cfg.teacher.head_lr == 5e-4 and cfg.gan.ratio == 0.0
    assert cfg.data.sources == (DataSource("quadrants", "data/4q"),)
    with pytest.raises(EdgeemoError, match="unknown field 'bogus'"):
        from_flat({"bogus": 1})


def test_paths_are_stored_relative_to_named_roots(tmp_path, monkeypatch):
    data, cache = tmp_path / "data", tmp_path / "cache"
    monkeypatch.setenv("EDGEEMO_DATA", str(data))
    monkeypatch.setenv("EDGEEMO_CACHE", str(cache))
    assert portable_path(data / "4q-dev") == "$EDGEEMO_DATA/4q-dev"
    assert portable_path(cache / "unlabeled" / "debian") == "$EDGEEMO_CACHE/unlabeled/debian"
    assert portable_path("rel/dir") == "rel/dir"
    elsewhere = portable_path(tmp_path / "other")
    assert not Path(elsewhere).is_absolute() and Path(elsewhere).resolve() == (tmp_path / "other").resolve()
    assert resolve_path("$EDGEEMO_DATA/4q-dev") == data / "4q-dev"
    assert DataSource("quadrants", str(data / "x")).path == "$EDGEEMO_DATA/x"
    monkeypatch.delenv("EDGEEMO_DATA")
    with pytest.raises(EdgeemoError, match=r"needs \$EDGEEMO_DATA: set it to the folder that holds '4q-dev'"):
        resolve_path("$EDGEEMO_DATA/4q-dev")
    with pytest.raises(EdgeemoError, match=r"unknown path root \$HOME"):
        resolve_path("$HOME/x")


def test_recipes_command_lists_and_shows_the_resolved_config():
    res = CliRunner().invoke(main, ["recipes"])
    assert res.exit_code == 0
    lines = res.output.splitlines()
    assert [line.split()[0] for line in lines] == [r.name for r in list_recipes()]
    assert lines[0].split()[1:3] == ["v1", recipe_config("tiny").digest()]
    res = CliRunner().invoke(main, ["recipes", "show", "tiny"])
    assert res.exit_code == 0
    body = "\n".join(line for line in res.output.splitlines() if not line.startswith("#"))
    assert RunConfig.from_dict(json.loads(body), strict=True) == recipe_config("tiny")
    res = CliRunner().invoke(main, ["recipes", "show", "nope"])
    assert res.exit_code == 2 and res.output.startswith("error: unknown recipe 'nope'")


def _option_names(command: str) -> set[str]:
    cmd = main.commands[command]
    return {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}


def test_stage_commands_expose_their_own_sections_and_train_all_every_field():
    from edgeemo.cli_train import SKIPPED_FIELDS

    all_flags = _option_names("train-all")
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            if f"{section}.{f.name}" in SKIPPED_FIELDS:
                continue
            stem = f.name if section == "data" else f"{section}-{f.name}"
            assert f"--{stem.replace('_', '-')}" in all_flags, (section, f.name)
    assert {"--lr", "--alpha", "--beta", "--gamma", "--patience", "--int8"} <= all_flags  # the old names still work
    gan_only = _option_names("train-gan")
    assert "--gan-d-every" in gan_only and "--noise-std" in gan_only
    assert "--student-lr" not in gan_only and "--noise-std" not in _option_names("distill")
    assert "--teacher-epochs" not in _option_names("distill") and "--student-ema" in _option_names("distill")
    assert "--int8" in _option_names("export") and "--teacher-epochs" not in _option_names("export")


def test_train_all_flags_fill_the_config_and_bad_values_are_one_line_errors(tmp_path, monkeypatch):
    from edgeemo.cli_train import config_overrides, parse_set

    assert parse_set(("teacher.epochs=3", "alpha=0.2", 'data.features={"n_mels": 32}')) == {
        "teacher.epochs": 3,
        "student.task_weight": 0.2,
        "data.features": {"n_mels": 32},
    }
    assert config_overrides({"cfg__teacher__epochs": 3, "cfg__seed": None, "name": "x"}) == {"teacher.epochs": 3}
    res = CliRunner().invoke(main, ["train-all", "--runs-dir", str(tmp_path), "--set", "teacher.loss=l1"])
    assert res.exit_code == 2 and "teacher.loss must be one of mse, ccc, mix" in res.output
    res = CliRunner().invoke(main, ["train-all", "--runs-dir", str(tmp_path), "--teacher-epochs", "0"])
    assert res.exit_code == 2 and "0 is not in the range x>=1" in res.output


def test_every_shipped_card_names_its_recipe_and_holds_no_absolute_path():
    cards = sorted((REPO / "export").glob("*/card.json"))
    assert cards, "no shipped bundle found"

    def strings(value):
        if isinstance(value, dict):
            for v in value.values():
                yield from strings(v)
        elif isinstance(value, list):
            for v in value:
                yield from strings(v)
        elif isinstance(value, str):
            yield value

    for path in cards:
        card = json.loads(path.read_text())
        absolute = [s for s in strings(card) if os.path.isabs(s) or "/root/" in s or "/home/" in s or "/tmp/" in s]
        assert not absolute, f"{path}: {absolute[:3]}"
        cfg = RunConfig.from_dict(card["config"], strict=True)
        assert cfg.digest() == card["config_digest"]
        assert cfg == recipe_config(card["recipe"])  # the recipe named rebuilds the recorded config exactly


def test_from_card_rejects_cards_without_a_config(tmp_path):
    from edgeemo.cli_train import config_from_card

    cfg, name = config_from_card(REPO / "export" / "reference")
    assert name == "4q-yamnet" and cfg == recipe_config("4q-yamnet")
    assert config_from_card(REPO / "export" / "reference" / "card.json")[0] == cfg
