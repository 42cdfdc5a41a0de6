"""Training-side commands of the ``edgeemo`` CLI: train-all, pretrain, train-gan, train-teacher, distill, export,
recipes.

Owns the flags, which are generated from the config sections of :mod:`edgeemo.config`
(each stage command gets its own sections' fields, ``train-all`` all of them; names, help,
choices and ranges come from there; ``--set SECTION.FIELD=VALUE`` reaches any field), and
how a run's config is chosen: a registered recipe plus overrides, a bundle's recorded
config (``--from-card``), or the run's own saved config. The commands are plain click
commands listed in :data:`COMMANDS`; :mod:`edgeemo.cli` adds them to the ``edgeemo`` group.
Torch is imported inside the commands, never at import time.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edgeemo.cli_base import ErrorGroup
from edgeemo.config import SECTIONS, DataSource, RunConfig, dotted_overrides, parse_value, portable_path
from edgeemo.errors import EdgeemoError
from edgeemo.log import log


class PatchShape(click.ParamType):
    """``ROWSxCOLS`` (mel bins x frames), e.g. ``8x32``."""

    name = "ROWSxCOLS"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        try:
            rows, cols = (int(v) for v in str(value).lower().split("x"))
        except ValueError:
            self.fail(f"{value!r} is not ROWSxCOLS (e.g. 8x32)", param, ctx)
        if rows < 1 or cols < 1:
            self.fail(f"{value!r}: both sides must be at least 1", param, ctx)
        return rows, cols


# reached with their own flags (--builtin, --quadrants, --unlabeled, ...) or --set only
SKIPPED_FIELDS = {"data.sources", "data.features", "data.split_fractions", "data.exclude", "pretrain.unlabeled"}


def _click_type(hint: Any, meta: dict[str, Any]) -> Any:
    """The click type of a config field: choices, numeric ranges and patch shapes come from its metadata."""
    if meta.get("choices"):
        return click.Choice(list(meta["choices"]))
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    base = args[0]
    if typing.get_origin(base) is tuple:
        return PatchShape()
    lim = meta.get("limits") or {}
    if base is int:
        return click.IntRange(lim.get("min"), lim.get("max"), min_open=lim.get("min_open", False)) if lim else int
    if base is float:
        if not lim:
            return float
        return click.FloatRange(
            lim.get("min"), lim.get("max"), min_open=lim.get("min_open", False), max_open=lim.get("max_open", False)
        )
    return str


def _field_flags(section: str | None, name: str, meta: dict[str, Any], is_bool: bool) -> list[str]:
    """``--section-field`` (``--field`` for the data section and the run-wide fields) plus the field's aliases."""
    stem = name.replace("_", "-") if section in (None, "data") else f"{section}-{name}".replace("_", "-")
    primary = f"--{stem}/--no-{stem}" if is_bool else f"--{stem}"
    flags = [primary]
    for alias in meta.get("flags", ()):
        if alias != primary and alias not in flags:
            flags.append(alias)
    return flags


def config_options(sections: tuple[str, ...], run_wide: bool = True) -> Callable[[Callable], Callable]:
    """Click options for every field of ``sections`` (and, with ``run_wide``, the seed and device), generated from
    :mod:`edgeemo.config`: names, help, choices and ranges live there. Each option fills ``cfg__SECTION__FIELD``."""

    def decorate(fn: Callable) -> Callable:
        specs: list[tuple[str | None, type]] = [(None, RunConfig)] if run_wide else []
        specs += [(s, SECTIONS[s]) for s in sections]
        opts = []
        for section, cls in specs:
            hints = typing.get_type_hints(cls)
            for f in dataclasses.fields(cls):
                dotted = f"{section}.{f.name}" if section else f.name
                if dotted in SKIPPED_FIELDS or (section is None and f.name in (*SECTIONS, "recipe")):
                    continue
                is_bool = hints[f.name] is bool
                flags = _field_flags(section, f.name, f.metadata, is_bool)
                param = "cfg__" + dotted.replace(".", "__")
                kwargs: dict[str, Any] = {"default": None, "help": f.metadata.get("help", "")}
                if not is_bool:
                    kwargs["type"] = _click_type(hints[f.name], f.metadata)
                opts.append(click.option(*flags, param, **kwargs))
        for o in reversed(opts):
            fn = o(fn)
        return fn

    return decorate


def config_overrides(kw: dict[str, Any]) -> dict[str, Any]:
    """Pop the generated options out of ``kw``: ``{dotted field: value}`` for those given."""
    out = {}
    for key in [k for k in kw if k.startswith("cfg__")]:
        value = kw.pop(key)
        if value is not None:
            out[key.removeprefix("cfg__").replace("__", ".")] = value
    return out


def parse_set(values: tuple[str, ...]) -> dict[str, Any]:
    """``--set SECTION.FIELD=VALUE`` items (JSON values; a flat edgeemo 0.1 name also works) as dotted overrides."""
    out: dict[str, Any] = {}
    for item in values:
        if "=" not in item:
            raise EdgeemoError(f"--set expects SECTION.FIELD=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        out[key.strip()] = parse_value(raw)
    return dotted_overrides(out)


STAGE_SECTIONS = {
    "train-all": ("data", "pretrain", "gan", "teacher", "student", "export"),
    "pretrain": ("data", "pretrain", "teacher", "student"),  # it pretrains the teacher's (and student's) network
    "train-gan": ("data", "gan"),
    "train-teacher": ("data", "pretrain", "gan", "teacher"),
    "distill": ("data", "student"),
}


def run_options(command: str) -> Callable[[Callable], Callable]:
    """Options of a training command: run location, recipe, data, its sections' fields, overrides."""

    def decorate(fn: Callable) -> Callable:
        fn = config_options(STAGE_SECTIONS[command])(fn)
        decorators = [
            click.option("--name", default=None, help="Run name: runs/<name> [default; with --from-card, the card's]."),
            click.option("--runs-dir", type=click.Path(path_type=Path), default=Path("runs"), show_default=True),
            click.option(
                "--recipe",
                "--preset",
                "recipe",
                default=None,
                help="Registered recipe to start from (`edgeemo recipes` lists them) [tiny].",
            ),
            click.option(
                "--from-card",
                "from_card",
                type=click.Path(path_type=Path),
                default=None,
                help="Rerun exactly the config recorded in this bundle's card.json (or the card file itself).",
            ),
            click.option("--deam", "deam", type=click.Path(path_type=Path), multiple=True, help="A DEAM folder."),
            click.option("--manifest", type=click.Path(path_type=Path), multiple=True, help="A CSV manifest."),
            click.option("--quadrants", type=click.Path(path_type=Path), multiple=True, help="A 4Q-style folder."),
            click.option(
                "--unlabeled",
                type=click.Path(path_type=Path),
                multiple=True,
                help="A folder of unlabeled music: pretrain on it (musicnn embedding distillation).",
            ),
            click.option(
                "--builtin/--no-builtin",
                "builtin",
                default=None,
                help="Include the built-in corpus (default: only when no other data is given).",
            ),
            click.option(
                "--set", "set_values", multiple=True, help="Override any field: SECTION.FIELD=VALUE (JSON value)."
            ),
            click.option("--restart", is_flag=True, help="Delete the run and start over."),
            click.option("--cache-dir", type=click.Path(path_type=Path), default=None, help="Feature/corpus cache."),
            click.option("--quiet", is_flag=True, help="No progress bars."),
            click.option(
                "--nproc-per-node",
                "nproc_per_node",
                type=click.IntRange(1),
                default=None,
                help="Train data-parallel on N processes of this machine (re-launches under torch.distributed.run).",
            ),
        ]
        for d in reversed(decorators):
            fn = d(fn)
        return fn

    return decorate


def _data_overrides(kw: dict[str, Any]) -> dict[str, Any]:
    """``data.sources`` / ``pretrain.unlabeled`` from the data flags, when any is given."""
    sources = [DataSource(kind, str(p)).to_dict() for kind in ("deam", "manifest", "quadrants") for p in kw.pop(kind)]
    builtin = kw.pop("builtin")
    out: dict[str, Any] = {}
    if sources or builtin is not None:
        if builtin or (builtin is None and not sources):
            sources.insert(0, DataSource("builtin").to_dict())
        out["data.sources"] = sources
    unlabeled = kw.pop("unlabeled")
    if unlabeled:
        out["pretrain.unlabeled"] = [portable_path(p) for p in unlabeled]
    return out


def _open(kw: dict[str, Any]):
    from edgeemo.recipes import recipe_config
    from edgeemo.train.pipeline import open_run

    overrides = {**_data_overrides(kw), **config_overrides(kw), **parse_set(kw.pop("set_values"))}
    recipe, card_path, name = kw.pop("recipe"), kw.pop("from_card"), kw.pop("name")
    restart = kw.pop("restart")
    if card_path is not None:
        if recipe is not None or overrides:
            raise EdgeemoError("--from-card reruns the card's config exactly; drop the other config flags")
        cfg, card_name = config_from_card(card_path)
        name = name or card_name
    elif recipe is not None or overrides:
        cfg = recipe_config(recipe or "tiny").replace(overrides)
    else:
        cfg = None  # reopen a run with its own config, or start the tiny recipe
    run_dir = Path(kw.pop("runs_dir")) / (name or "default")
    if cfg is None and ((run_dir / "config.json").is_file() and not restart):
        return open_run(run_dir, None), kw
    return open_run(run_dir, cfg if cfg is not None else recipe_config("tiny"), restart=restart), kw


def config_from_card(path: Path) -> tuple[RunConfig, str]:
    """The resolved config a bundle's card records, and the run name it came from."""
    from edgeemo.bundle import CARD_NAME, load_card

    path = Path(path)
    card = load_card(path.parent if path.name == CARD_NAME else path)
    if "config" not in card:
        raise EdgeemoError(
            f"{path}: this card records no resolved config (an older bundle); rebuild it with "
            "`edgeemo train-all --recipe NAME` (`edgeemo recipes` lists the registered ones)"
        )
    cfg = RunConfig.from_dict(card["config"], strict=True)
    if card.get("config_digest") and cfg.digest() != card["config_digest"]:
        raise EdgeemoError(f"{path}: the recorded config does not match its digest {card['config_digest']}")
    return cfg, str(card.get("run_name") or card.get("name") or "default")


def strip_option(args: list[str], flag: str) -> list[str]:
    """``args`` without ``flag VALUE`` / ``flag=VALUE``."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == flag:
            skip = True
        elif not a.startswith(flag + "="):
            out.append(a)
    return out


def relaunch_distributed(nproc: int) -> None:
    """Run this same command line again under ``torch.distributed.run --standalone`` on ``nproc`` processes
    and exit with its status."""
    import os
    import subprocess
    import sys

    if "WORLD_SIZE" in os.environ:
        raise EdgeemoError("--nproc-per-node is for a plain launch; under torchrun, torchrun sets the processes")
    args = strip_option(sys.argv[1:], "--nproc-per-node")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    log(f"re-launching on {nproc} processes: torchrun --standalone --nproc-per-node={nproc} -m edgeemo ...")
    raise SystemExit(subprocess.call([*cmd, "-m", "edgeemo", *args]))


def _run_stages(kw: dict[str, Any], stages: tuple[str, ...]) -> tuple[dict[str, Any], Any]:
    from edgeemo.train.pipeline import train_all

    nproc = kw.pop("nproc_per_node")
    if nproc is not None and nproc > 1:
        relaunch_distributed(nproc)
    run, kw = _open(kw)
    progress = not kw.pop("quiet")
    kinds = ", ".join(s.kind for s in run.cfg.data.sources)
    log(f"run: {run.dir}  recipe: {run.cfg.recipe}  config {run.cfg.digest()}  data: {kinds}")
    return train_all(run, stages=stages, progress=progress, cache_dir=kw.pop("cache_dir")), run


@click.command("train-all")
@run_options("train-all")
def train_all_cmd(**kw: Any) -> None:
    """Data -> [pretrain] -> GAN -> teacher -> student into runs/<name>/, resuming interrupted stages."""
    from edgeemo.train.distributed import is_main
    from edgeemo.train.pipeline import format_table

    summary, run = _run_stages(kw, ("pretrain", "gan", "teacher", "student"))
    if not is_main():  # rank 0 prints the table
        return
    click.echo(format_table(summary))
    click.echo(f"summary: {run.dir / 'summary.json'}  plot: {run.dir / 'summary.png'}")


@click.command("pretrain")
@run_options("pretrain")
def pretrain_cmd(**kw: Any) -> None:
    """Pretrain the run's teacher on --unlabeled audio: it learns to predict MSD-musicnn's embeddings and tags."""
    _, run = _run_stages(kw, ("pretrain",))
    done = run.done("pretrain")
    if not done:
        raise EdgeemoError("nothing to pretrain: name folders of unlabeled music with --unlabeled DIR")
    v = done["val"]
    click.echo(
        f"pretrain best epoch {done['best_epoch']}: held-out embedding R² {v['emb_r2']:.3f}, cosine "
        f"{v['emb_cos']:.3f}, tag BCE {v['tag_bce']:.4f} -> {done['backbone']}"
    )


@click.command("train-gan")
@run_options("train-gan")
def train_gan_cmd(**kw: Any) -> None:
    """Train the conditional spectrogram GAN (augmentation) of a run."""
    _, run = _run_stages(kw, ("gan",))
    click.echo(f"GAN: {run.dir / 'gan'}")


@click.command("train-teacher")
@run_options("train-teacher")
def train_teacher_cmd(**kw: Any) -> None:
    """Train the ViT teacher of a run (uses the run's GAN when --gan-ratio > 0)."""
    _, run = _run_stages(kw, ("pretrain", "gan", "teacher"))
    done = run.done("teacher")
    v = done["val"]
    click.echo(
        f"teacher best epoch {done['best_epoch']}: CCC_V: {v['ccc_valence']:.3f} | CCC_A: {v['ccc_arousal']:.3f} | "
        f"Avg: {v['ccc_mean']:.3f} (validation)  -> {run.dir / 'teacher' / 'best.pt'}"
    )


@click.command("distill")
@run_options("distill")
def distill_cmd(**kw: Any) -> None:
    """Distil the run's teacher into the MobileViT student."""
    from edgeemo.train.pipeline import format_table

    summary, _ = _run_stages(kw, ("student",))
    click.echo(format_table(summary))


@click.command("export")
@click.argument("run_dir", type=click.Path(path_type=Path), default=Path("runs/default"), required=False)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Bundle folder (default export/<run name>).")
@click.option(
    "--cv-report",
    type=click.Path(path_type=Path, dir_okay=False),
    help="An `edgeemo cv --json` report with rows for this run's recipe (recipe:NAME): the card states them as the "
    "model's expected accuracy.",
)
@config_options(("export",), run_wide=False)
def export_cmd(run_dir: Path, out_dir: Path | None, cv_report: Path | None, **kw: Any) -> None:
    """Export a finished run to an ONNX bundle (RUN_DIR defaults to runs/default), behind the verification gate.

    Settings default to the run's export section; flags given here override it for this export
    (the card records what was used).
    """
    from edgeemo.exporting.export import export_run

    overrides = {k.removeprefix("export."): v for k, v in config_overrides(kw).items()}
    export_run(run_dir, out_dir, overrides=overrides, cv_report=cv_report)


@click.group("recipes", invoke_without_command=True, cls=ErrorGroup)
@click.pass_context
def recipes_group(ctx: click.Context) -> None:
    """The registered recipes (named, versioned, frozen run configs): one line each."""
    if ctx.invoked_subcommand is None:
        from edgeemo.recipes import recipes_table

        click.echo(recipes_table())


@recipes_group.command("show")
@click.argument("name")
def recipes_show(name: str) -> None:
    """Print recipe NAME's fully resolved config (JSON), as `train-all --recipe NAME` would run it."""
    from edgeemo.recipes import show_recipe

    click.echo(show_recipe(name), nl=False)


COMMANDS = [train_all_cmd, pretrain_cmd, train_gan_cmd, train_teacher_cmd, distill_cmd, export_cmd, recipes_group]
