"""The ``edgeemo cv`` command: artist-grouped k-fold cross-validation of peers and edgeemo bundles.

Owns the flags, the printing and the report file only; the protocol is :mod:`edgeemo.cv`
and the systems :mod:`edgeemo.cv_systems`. Imports nothing heavy at import time (the
command is registered on the main group by ``edgeemo.cli``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from edgeemo.errors import EdgeemoError


def _default_work(dataset: str, folds: int, seed: int) -> Path:
    return Path("runs") / "cv" / f"{dataset}-k{folds}-seed{seed}"


@click.command("cv")
@click.option(
    "--data",
    "data_path",
    default="../shared/data/4q-dev",
    show_default=True,
    help="Quadrant-labelled dataset (4Q layout: annotations.csv with an artist column), or builtin[:N]: the "
    "built-in corpus (N songs, default the main job's 400; each clip its own group, quadrant = signs of its target).",
)
@click.option(
    "--system",
    "systems",
    multiple=True,
    help="System to run (repeatable): librosa-svm, musicnn-lr, yamnet-lr, musicnn+yamnet-lr, "
    "bundle-lr:PATH, bundle:PATH, checkpoint-lr:PATH.pt, recipe:NAME[,FIELD=VALUE...][@int8|fp32|teacher] "
    "(train a registered recipe, optionally changed, on each fold end to end; needs the [train] extra) "
    "[librosa-svm, musicnn-lr, yamnet-lr].",
)
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the fold split.")
@click.option("--no-stratify", is_flag=True, help="Grouped folds without quadrant stratification.")
@click.option(
    "--work",
    type=click.Path(path_type=Path, file_okay=False),
    help="Per-fold records (resume from here) [runs/cv/<data>-k<folds>-seed<seed>].",
)
@click.option("--json", "json_out", type=click.Path(path_type=Path, dir_okay=False), help="Write the report here.")
@click.option("--limit", type=click.IntRange(min=1), help="Use only the first N songs (a quick smoke run).")
@click.option(
    "--only-fold",
    "only_folds",
    type=click.IntRange(min=0),
    multiple=True,
    help="Run only fold K of the split (repeatable): a screening run. Its records are those of the full CV, "
    "which reuses them; its report says which folds it holds and is not a CV figure.",
)
@click.option("--quiet", is_flag=True, help="No progress bars or per-fold lines.")
def cv_cmd(
    data_path: str,
    systems: tuple[str, ...],
    folds: int,
    seed: int,
    no_stratify: bool,
    work: Path | None,
    json_out: Path | None,
    limit: int | None,
    only_folds: tuple[int, ...],
    quiet: bool,
) -> None:
    """Artist-grouped k-fold CV: mean ± sd over folds of song-level acc, macro-F1, V-AUC, A-AUC per system.

    Every fold's test artists are absent from its training songs; each system is fitted on the
    training part only. Clip features are cached in ~/.cache/edgeemo/clipfeatures ($EDGEEMO_CACHE),
    keyed by file content, and each finished fold is recorded under --work, so a re-run (or an
    interrupted one) recomputes nothing it already has.
    """
    from edgeemo.clipfeatures import default_feature_cache, thread_count
    from edgeemo.cv import cv_dataset, format_table, grouped_folds, report, run_system
    from edgeemo.cv_systems import DEFAULT_SYSTEMS, leak_warning, make_system

    with thread_count(1):  # the peers' per-clip costs are one-core costs
        started = time.perf_counter()
        dataset = cv_dataset(data_path)
        songs = dataset.songs[:limit] if limit else dataset.songs
        cache = default_feature_cache()
        specs = systems or DEFAULT_SYSTEMS
        if any(s.startswith("recipe:") for s in specs):
            from edgeemo.train.cv_recipe import register

            register()
        made = [make_system(s, cache, progress=not quiet) for s in specs]  # bad specs fail before any work
        split = grouped_folds(songs, folds, seed, stratify=not no_stratify)
        bad = sorted(k for k in only_folds if k >= folds)
        if bad:
            raise EdgeemoError(f"--only-fold {bad[0]}: the split has folds 0..{folds - 1}")
        if only_folds:
            split = [split[k] for k in sorted(set(only_folds))]
        work = work or _default_work(dataset.name, folds, seed)

        def log(msg: str) -> None:
            if not quiet:
                click.echo(msg, err=True)

        log(
            f"{len(songs)} songs, {len({s.group for s in songs})} artists, {folds} folds (seed {seed}); "
            f"fold records in {work}"
        )
        results = [run_system(system, songs, split, work, log=log) for system in made]
        click.echo(format_table(results))
        if only_folds:
            shown = ", ".join(map(str, sorted(set(only_folds))))
            click.echo(f"screening run: fold(s) {shown} of {folds} only; not a CV figure")
        warnings = [w for r in results if (w := leak_warning(r.name, r.info, dataset.name))]
        for w in warnings:
            click.echo(f"warning: {w}", err=True)
        if json_out is not None:
            _write_report(
                json_out,
                report(
                    results,
                    songs,
                    split,
                    dataset=dataset.spec,
                    seed=seed,
                    stratified=not no_stratify,
                    k=folds,
                    **({"only_folds": sorted(set(only_folds))} if only_folds else {}),
                    systems=list(specs),
                    command="edgeemo " + " ".join(sys.argv[1:]),
                    seconds=time.perf_counter() - started,
                    warnings=warnings,
                ),
            )
            log(f"wrote {json_out}")


def _write_report(path: Path, report: dict) -> None:
    from edgeemo.atomic import atomic_write_json

    try:
        atomic_write_json(path, report)
    except OSError as exc:
        raise EdgeemoError(f"cannot write {path} ({exc.strerror or exc}); any previous file is unchanged") from None
