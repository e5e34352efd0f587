"""Every entry point's ``--help`` is a page a newcomer can start from, and it stays true.

The Hydra entry points' pages are ``gptlab/conf/hydra/help/<name>.yaml``. Their lists of
config groups are written by hand (Hydra's ``$APP_CONFIG_GROUPS`` lists every group in
the search path, ``model/schema`` included), so these tests hold each list to the real
configs: every group the entry point composes is listed with a one-line description,
every option file of each group is listed, and nothing else is (``schema``, the typed
base every model preset starts from, is no option). Three pages are checked through a
real ``--help`` subprocess; all seven through the composed template, which is cheaper.
"""

from __future__ import annotations

import re
import string
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

import gptlab  # noqa: F401  (importing it registers model/schema with Hydra, as the CLI does)
from tests.conftest import CONF_DIR, REPO

HYDRA_ENTRY_POINTS = [
    "train",
    "evaluate",
    "generate",
    "prepare",
    "tokenize",
    "export",
    "coordcheck",
]
# Groups an entry point composes that have no option to list: local is a git-ignored
# file of one's own (the train page names it in a sentence).
UNLISTED = {"local"}


def _page(name: str) -> tuple[str, dict[str, str | None]]:
    """The help page as Hydra prints it, and the config groups the entry point composes."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=name, return_hydra_config=True)
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    assert isinstance(choices, dict)
    groups = {k: v for k, v in choices.items() if not k.startswith("hydra")}
    # Hydra fills the template with string.Template: a stray "$" would be an error there.
    text = string.Template(cfg.hydra.help.template).substitute(
        FLAGS_HELP="", HYDRA_CONFIG_GROUPS="", APP_CONFIG_GROUPS="", CONFIG=""
    )
    return text, groups


def _listed_groups(text: str) -> dict[str, tuple[str, list[str]]]:
    """``{group: (description, options)}`` from the page's "Config groups" section.

    A group line is two spaces, the name, and its one-line description; the lines
    indented deeper below it list the options, comma-separated, each optionally
    followed by a remark in parentheses.
    """
    section = text.split("Config groups", 1)[1].split("\n")
    groups: dict[str, tuple[str, list[str]]] = {}
    current = None
    for line in section[1:]:
        if m := re.fullmatch(r"  ([a-z_]+) {2,}(\S.*)", line):
            current = m.group(1)
            groups[current] = (m.group(2), [])
        elif current and re.match(r" {6,}\S", line):
            bare = re.sub(r"\([^)]*\)", "", line)
            groups[current][1].extend(o.strip() for o in bare.split(",") if o.strip())
        else:
            current = None
    return groups


def _check_page(name: str, text: str, composed: dict[str, str | None]) -> None:
    assert text.startswith(f"python -m gptlab.{name}")
    assert "powered by Hydra" not in text  # Hydra's generic page is gone
    examples = text.split("Examples:", 1)[1].split("\n\n", 1)[0]
    assert len(re.findall(r"^  python -m gptlab\.", examples, flags=re.M)) >= 5
    assert "Where " in text  # where the runs, results or files go
    listed = _listed_groups(text)
    assert set(listed) == set(composed) - UNLISTED
    for group, (description, options) in listed.items():
        assert len(description.split()) >= 3, f"{group}: no description"
        files = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        assert sorted(options) == files, f"{name} --help lists {group} options {options}"
    # The defaults the page states are the ones the config composes.
    defaults = text.split("Defaults:", 1)[1].split("\n  ", 1)[0] if "Defaults:" in text else ""
    for group, option in re.findall(r"([a-z_]+)=([a-z_0-9]+)", defaults):
        assert composed[group] == option, f"{name}: default {group}={option}"


@pytest.mark.parametrize("name", HYDRA_ENTRY_POINTS)
def test_help_page_matches_the_configs(name):
    text, composed = _page(name)
    _check_page(name, text, composed)


def test_schema_is_not_a_model_option():
    text, _ = _page("train")
    description, options = _listed_groups(text)["model"]
    assert "nano" in options and "schema" not in options
    assert "schema" not in text


@pytest.mark.parametrize("name", ["train", "evaluate", "generate"])
def test_help_subprocess(name):
    done = subprocess.run(
        [sys.executable, "-m", f"gptlab.{name}", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    text, composed = _page(name)
    assert done.stdout.strip() == text.strip()
    _check_page(name, done.stdout, composed)


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_compare_help_lists_its_options(flag):
    done = subprocess.run(
        [sys.executable, "-m", "gptlab.compare", flag],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("``python -m gptlab.compare``")
    for key in OmegaConf.load(CONF_DIR / "compare.yaml"):
        assert f"\n{key}:" in done.stdout
