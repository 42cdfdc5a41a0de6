#!/usr/bin/env bash
# Build an offline corpus of unlabeled real music for a pretraining stage, from free-music Debian packages.
#
# Usage:  sudo benchmarks/build_unlabeled_corpus.sh [OUT_DIR]
#         (OUT_DIR defaults to $HOME/.cache/edgeemo/unlabeled/debian; run as root or with sudo for apt-get)
#
# Size: the default package list (DEFAULT_PACKAGES below) yields about 33 h of music (measured: 641 files, 33.14 h
# with MIN_SECONDS=20; about 0.9 h of it is long ambient/environment loops of the game packages, e.g. 0ad's and
# megaglest's ambience, which the duration filter keeps). edgeemo's recipe `4q-hybrid` expects this full default
# corpus at $HOME/.cache/edgeemo/unlabeled/debian-xl, i.e. built with
#         sudo benchmarks/build_unlabeled_corpus.sh $HOME/.cache/edgeemo/unlabeled/debian-xl
# The default OUT_DIR is for the older, smaller corpus (4.47 h; see PACKAGES under Environment below).
#
# What it does (safe to re-run; every step is idempotent):
#   1. apt-get install -y --no-install-recommends the packages in PACKAGES below (the wesnoth music
#      package is found with `apt-cache search wesnoth | grep music`); a package the archive does not
#      have, or that fails to install, is reported and skipped. SKIP_APT=1 skips this step (use what is
#      installed already).
#   2. For each installed package, lists its audio files (`dpkg -L`: .ogg .mp3 .flac .wav .opus),
#      de-duplicates them by real path (drascula's per-language folders are symlinks to one set),
#      reads each duration with soundfile and keeps only music: files of at least MIN_SECONDS
#      (default 20 s) -- short sound effects and voice lines are left out -- whose path does not
#      match EXCLUDE (default: spoken campaign briefings, e.g. boswars' tutorial narration).
#   3. Makes OUT_DIR/<package>/ holding SYMLINKS to the kept files (name = the file's path below
#      /usr/share with "/" replaced by "__"; stale links from an earlier run are removed first).
#      Nothing is copied: the corpus costs no disk beyond the packages.
#   4. Writes OUT_DIR/SOURCES.md: per package the number of files, total hours, the licence of the
#      music files (summarised from /usr/share/doc/<pkg>/copyright; the licence names the copyright
#      file declares are listed beside it to cross-check) and prints the same table.
#
# Audio inside zip archives (.pk3 of nexuiz-music and ufoai-music) is extracted into OUT_DIR/<package>/ as
# real files (the only step that costs disk: ~0.3 GB). Not used: tracker modules (.xm/.mod, e.g.
# fb-music-high), which soundfile cannot decode. The 4Q dev clips (../shared/data/4q-dev) are read by the pretraining
# stage directly and are not linked here.
#
# Environment: PYTHON (an interpreter that can import this checkout's edgeemo, i.e. has its base dependencies;
#              the audio extensions kept are edgeemo's own; default: the repo's .venv/bin/python, else python3),
#              MIN_SECONDS (default 20), SKIP_APT (default 0), EXCLUDE (a Python regex on the path),
#              PACKAGES (space-separated; default: all of DEFAULT_PACKAGES below). The corpus of edgeemo's runs
#              before session 6 (4.47 h) is PACKAGES="wesnoth-1.16-music drascula-music asc-music fb-music-high
#              boswars-data freedroidrpg-data openclonk-data"; a folder of OUT_DIR whose package is not listed is removed.
set -euo pipefail

OUT_DIR="${1:-$HOME/.cache/edgeemo/unlabeled/debian}"
MIN_SECONDS="${MIN_SECONDS:-20}"
SKIP_APT="${SKIP_APT:-0}"
EXCLUDE="${EXCLUDE:-/campaigns/|/voice}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then PYTHON="$REPO_ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi

# The wesnoth music package carries the branch in its name (wesnoth-1.16-music on bookworm).
WESNOTH_MUSIC="$(apt-cache search wesnoth 2>/dev/null | awk '/music/ {print $1}' | grep -E '^wesnoth-[0-9.]+-music$' \
    | sort -V | tail -n 1 || true)"
# music-only packages first (all of their files are music), then game data packages that carry music
DEFAULT_PACKAGES=(${WESNOTH_MUSIC:-wesnoth-1.16-music} drascula-music asc-music fb-music-high nexuiz-music
                  warzone2100-music ufoai-music hyperrogue-music singularity-music planetblupi-music-ogg boswars-data
                  freedroidrpg-data openclonk-data 0ad-data naev-data supertux-data widelands-data hedgewars-data
                  supertuxkart-data marsshooter-data megaglest-data flare-game redeclipse-data pushover-data)
if [[ -n "${PACKAGES:-}" ]]; then read -r -a PACKAGES <<<"$PACKAGES"; else PACKAGES=("${DEFAULT_PACKAGES[@]}"); fi

if [[ "$SKIP_APT" != "1" ]]; then
    SUDO=""
    if [[ "$(id -u)" != "0" ]]; then SUDO="sudo"; fi
    for pkg in "${PACKAGES[@]}"; do
        if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
            echo "[apt] $pkg: already installed"
        elif ! apt-cache show "$pkg" >/dev/null 2>&1; then
            echo "[apt] $pkg: not in the archive, skipped"
        elif DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "$pkg" >/dev/null; then
            echo "[apt] $pkg: installed"
        else
            echo "[apt] $pkg: install failed, skipped"
        fi
    done
fi

mkdir -p "$OUT_DIR"
EDGEEMO_REPO="$REPO_ROOT" "$PYTHON" - "$OUT_DIR" "$MIN_SECONDS" "$EXCLUDE" "${PACKAGES[@]}" <<'PY'
"""Link the music files of installed packages into OUT_DIR/<pkg>/ and write SOURCES.md."""
import datetime
import os
import re
import shutil
import subprocess
import zipfile
import sys
from pathlib import Path

import soundfile as sf

sys.path.insert(0, os.environ["EDGEEMO_REPO"])  # this checkout, installed or not
try:  # the files the corpus keeps are exactly the ones `--unlabeled` reads (a private list once dropped .opus)
    from edgeemo.data.unlabeled import AUDIO_EXTENSIONS as AUDIO
except ImportError as exc:
    sys.exit(f"error: cannot import edgeemo from {os.environ['EDGEEMO_REPO']} ({exc}); set PYTHON to the venv's python")

out_dir, min_seconds, exclude, packages = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4:]
ARCHIVES = (".pk3", ".zip")

# Licence of the MUSIC files, summarised by hand from each package's /usr/share/doc/<pkg>/copyright
# (Debian bookworm versions). Packages not listed fall back to the License: names the file declares.
MUSIC_LICENCE = {
    "wesnoth-1.16-music": "GPL-2+ (whole of Wesnoth, music included; copyright file has one licence)",
    "drascula-music": "Drascula-License (BSD-like freeware licence of Alcachofa Soft; DFSG-free, in Debian main)",
    "asc-music": "GPL-2+ (3 tracks by Michael Kievernagel)",
    "fb-music-high": "GPL-2+",
    "boswars-data": "GPL-2+ (Files: *, which covers the sounds)",
    "freedroidrpg-data": "GPL-2+ (Files: *, which covers sound/music)",
    "nexuiz-music": "GPL-2+ (Alientrap's Nexuiz; copyright file has one licence)",
    "warzone2100-music": "GPL-2+ (Files: *, which covers the music)",
    "ufoai-music": "GPL-2+ (Files: *); some tracks CC-BY-3.0 / CC-BY-SA-3.0 / public domain, per file in copyright",
    "hyperrogue-music": "CC-BY-SA-3.0 (Shawn Parrotte, Lincoln Domina, Will Savino; per file in copyright)",
    "singularity-music": "CC-BY-SA-3.0 (Max McCracken)",
    "planetblupi-music-ogg": "GPL-3+",
    "openclonk-data": "CC-BY-3.0 (game content incl. music by K-Pone, per Music.ocg/authors.txt; "
    "some content CC0; engine ISC)",
    "0ad-data": "CC-BY-SA-3.0 (Files: *, Wildfire Games; music by Omri Lahav and others, in public.zip audio/)",
    "naev-data": "mixed, per file in copyright: GPL-3 or CC-BY-3.0 (21 tracks, Nikola Whallon), GPL-2+ (13, Vega "
    "Strike), CC-BY-SA-3.0 (9, Askyel), CC-BY-3.0 (2); 7 more fall under Files: * (GPL-3+), but "
    "dat/snd/SOUND_LICENSE.yaml gives them CC-BY-3.0 (4) / CC0 (2) / CC-BY-SA-4.0 (1)",
    "supertux-data": "GPL-2+ (Files: data/music/*, copyright Marek Moeckel); 2 non-music clips GPL-3+ (Files: *)",
    "widelands-data": "GPL-2+ (Files: *, Widelands Development Team); ingame_24-26 CC-BY-SA-3.0 (Stuart Marshall)",
    "hedgewars-data": "GPL-2 (Files: *, which covers Data/Music; composers in Data/Music/credits.txt)",
    "supertuxkart-data": "mostly CC-BY-SA-3.0 (per-track stanzas; 0zone0ne, Krobonil, bollen et al.); some "
    "CC-BY-SA-4.0 / CC-BY-4.0 / CC-BY-3.0 / CC0 / GPL, and 9 tracks not itemised fall under Files: * (GPL-3+), "
    "per file in copyright",
    "marsshooter-data": "CC-BY-SA-3.0 (music by Obsidian Shell; Files: data/audio/music/*, menu.ogg, tutorial.ogg)",
    "megaglest-data": "CC-BY-SA-3.0 (Files: *, Glest/MegaGlest teams; music by Aminos, Margaras, manolo camp, "
    "Mattias Westlund et al.)",
    "flare-game": "CC-BY-SA-3.0+ (Files: *: all art and data; music by Brandon Morris, remaxim)",
    "redeclipse-data": 'CC-BY-SA-3.0 (music by Derek "JoJo" Stegall); themes CC-BY-SA-3.0+ (Files: *), '
    "tonatiuh.ogg CC0; ambient loops CC-BY-3.0 / CC-BY-SA-3.0, per file in copyright",
    "pushover-data": "GPL-3+ (Files: *, which credits Roberto Lorenz for the music)",
}


def declared_licences(pkg: str) -> str:
    """Licence names declared in the package's copyright file (DEP-5 `License:` lines or free text)."""
    path = Path(f"/usr/share/doc/{pkg}/copyright")
    if not path.is_file():
        return "no copyright file"
    text = path.read_text(errors="replace")
    names = [m.strip() for m in re.findall(r"^License:[ \t]*(\S.*)$", text, flags=re.M)]
    if not names:  # free-form copyright file: spot the usual licences
        probes = {
            "GPL-2+": r"General Public License[^.]*version 2[^.]*later|version 2 or later|version 2 or \(at your",
            "LGPL-2+": r"Library General Public\s+License",
            "ISC": r"ISC license",
            "Expat/MIT": r"MIT license|Permission is hereby granted, free of charge",
            "CC-BY-3.0": r"creativecommons.org/licenses/by/3\.0|Attribution 3\.0",
            "CC0": r"publicdomain/zero",
        }
        names = [k for k, pat in probes.items() if re.search(pat, text, flags=re.I | re.S)]
    return ", ".join(dict.fromkeys(names)) or "unrecognised (read the file)"


def package_files(pkg: str) -> list[str]:
    try:
        return subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True, check=True).stdout.splitlines()
    except subprocess.CalledProcessError:
        return []


def package_audio(listing: list[str]) -> list[Path]:
    seen: dict[str, Path] = {}
    for line in listing:
        p = Path(line)
        if p.suffix.lower() in AUDIO and p.is_file() and not (exclude and re.search(exclude, line)):
            seen.setdefault(os.path.realpath(p), Path(os.path.realpath(p)))
    return sorted(seen.values())


def archive_audio(listing: list[str], target: Path) -> list[Path]:
    """Audio members of the package's zip archives (.pk3: Quake-engine games such as Nexuiz and UFO:AI),
    extracted into ``target`` as real files (kept between runs; re-extracted only when the size differs)."""
    out = []
    for line in listing:
        p = Path(line)
        if p.suffix.lower() not in ARCHIVES or not p.is_file() or not zipfile.is_zipfile(p):
            continue
        with zipfile.ZipFile(p) as z:
            for info in z.infolist():
                name = info.filename
                if Path(name).suffix.lower() not in AUDIO or (exclude and re.search(exclude, "/" + name)):
                    continue
                dest = target / f"{p.name}__{name.replace('/', '__')}"
                if not (dest.is_file() and not dest.is_symlink() and dest.stat().st_size == info.file_size):
                    target.mkdir(parents=True, exist_ok=True)
                    tmp = dest.with_name(dest.name + ".part")
                    with z.open(info) as src, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    tmp.replace(dest)
                out.append(dest)
    return out


def duration(path: Path) -> float | None:
    try:
        info = sf.info(str(path))
        return info.frames / info.samplerate if info.frames > 0 else None
    except Exception:  # noqa: BLE001 - undecodable file: not part of the corpus
        return None


for stale in sorted(p for p in out_dir.iterdir() if p.is_dir() and p.name not in packages):
    shutil.rmtree(stale)  # OUT_DIR is this script's: a package not asked for this time leaves the corpus
    print(f"[corpus] {stale.name}: not in PACKAGES, removed from {out_dir}")

rows = []
for pkg in packages:
    installed = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    target = out_dir / pkg
    if "install ok installed" not in installed.stdout:
        rows.append((pkg, 0, 0.0, 0, 0, "not installed", ""))
        continue
    listing = package_files(pkg)
    files = package_audio(listing)
    extracted = archive_audio(listing, target)
    kept, short, bad, seconds = [], 0, 0, 0.0
    for f in files + extracted:
        d = duration(f)
        if d is None:
            bad += 1
        elif d < min_seconds:
            short += 1
        else:
            kept.append(f)
            seconds += d
        if f in extracted and f not in kept:
            f.unlink(missing_ok=True)  # an extracted copy that is not music: do not keep it on disk
    target.mkdir(parents=True, exist_ok=True)
    for old in target.iterdir():
        if old.is_symlink():
            old.unlink()
    for f in kept:
        if f in extracted:
            continue  # a real file in target already
        rel = f.relative_to("/usr/share") if f.is_relative_to("/usr/share") else f.relative_to("/")
        (target / str(rel).replace("/", "__")).symlink_to(f)
    if not kept and not any(target.iterdir()):
        target.rmdir()  # nothing to link: no empty folder
    licence = MUSIC_LICENCE.get(pkg, declared_licences(pkg))
    rows.append((pkg, len(kept), seconds / 3600.0, short, bad, licence, declared_licences(pkg)))

total_files = sum(r[1] for r in rows)
total_hours = sum(r[2] for r in rows)
lines = [
    "# Unlabeled music corpus (Debian free-music packages)",
    "",
    f"Built {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by "
    "`benchmarks/build_unlabeled_corpus.sh`. Every file here is a symlink into the installed package;",
    f"only files of at least {min_seconds:g} s are linked (shorter ones are sound effects; paths matching "
    f"`{exclude}` are left out as speech). Licences are summarised",
    "from `/usr/share/doc/<package>/copyright`; read that file before redistributing anything.",
    "",
    "| package | files | hours | short (<{:g} s) skipped | undecodable | licence (music files) | "
    "licences declared in copyright |".format(min_seconds),
    "|---|---:|---:|---:|---:|---|---|",
]
for pkg, n, hours, short, bad, licence, declared in rows:
    lines.append(f"| {pkg} | {n} | {hours:.2f} | {short} | {bad} | {licence} | {declared} |")
lines.append(f"| **total** | **{total_files}** | **{total_hours:.2f}** | | | | |")
lines += [
    "",
    "Notes: drascula's per-language folders link to one set of tracks (de-duplicated by real path);",
    "fb-music-high ships tracker modules (.xm), which soundfile cannot decode, so it contributes no files;",
    "boswars-data ships no music tracks in Debian (only effects and spoken tutorial lines), so it contributes none;",
    "openclonk-data's music lives in the unpacked `Music.ocg` folder;",
    "nexuiz-music and ufoai-music keep their music in .pk3 (zip) archives: those tracks are extracted here as",
    "real files (not links); warzone2100-music ships Ogg Opus (.opus), which edgeemo reads like any other file.",
]
(out_dir / "SOURCES.md").write_text("\n".join(lines) + "\n")

print()
print(f"{'package':<22}{'files':>6}{'hours':>8}{'short':>7}{'bad':>5}  licence (music files)")
for pkg, n, hours, short, bad, licence, _ in rows:
    print(f"{pkg:<22}{n:>6}{hours:>8.2f}{short:>7}{bad:>5}  {licence}")
print(f"{'total':<22}{total_files:>6}{total_hours:>8.2f}")
print(f"\ncorpus: {out_dir} (SOURCES.md written)")
PY
