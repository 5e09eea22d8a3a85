"""The documentation site builds with ``mkdocs build --strict`` (generated reference pages included), and every
internal link and anchor of the built HTML resolves; so do the page links of ``vfm --help`` and of README.md, whose
Install and Tests sections show the commands ``.ci/run`` runs. Skipped, saying why, when the docs extra
(mkdocs-material, mkdocstrings) is not installed."""

from __future__ import annotations

import html.parser
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from tests.conftest import REPO_ROOT
from tests.reliability.helpers import cli_env

from vfmkit.cli.docs_links import COMMAND_PAGES, DOCS_URL, page_url

DOCS_PACKAGES = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")


class _Links(html.parser.HTMLParser):
    """The ids and the link targets (href / src) of one HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("id", "name") if tag == "a" else ("id",):
            if values.get(name):
                self.ids.add(values[name])
        self.links += [values[name] for name in ("href", "src") if values.get(name)]


def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def _target(site: Path, page: Path, link: str) -> tuple[Path, str] | None:
    """The built file and the anchor an internal link points at; None for external links."""
    parts = urlsplit(link)
    if parts.scheme or parts.netloc or link.startswith(("mailto:", "javascript:")):
        return None
    base = urlsplit(DOCS_URL).path  # site-absolute links (404.html) start with the site's path
    if parts.path.startswith(base):
        target = (site / unquote(parts.path[len(base) :])).resolve()
    else:
        target = page if not parts.path else (page.parent / unquote(parts.path)).resolve()
    if target.is_dir() or parts.path.endswith("/"):
        target = target / "index.html"
    return target, unquote(parts.fragment)


def broken_links(site: Path) -> list[str]:
    """Every internal link of the built site whose file or anchor does not exist, as ``page: link``."""
    pages = {path.resolve(): _parse(path) for path in site.rglob("*.html")}
    broken = []
    for page, parsed in pages.items():
        for link in parsed.links:
            found = _target(site, page, link)
            if found is None:
                continue
            target, anchor = found
            if not target.exists():
                broken.append(f"{page.relative_to(site.resolve())}: {link} (no such file)")
            elif anchor and target.suffix == ".html" and anchor not in pages[target].ids:
                broken.append(f"{page.relative_to(site.resolve())}: {link} (no such anchor)")
    return broken


def site_page(site: Path, url: str) -> Path:
    """The built file of a site URL (``<DOCS_URL>tasks/classify/`` -> ``site/tasks/classify/index.html``)."""
    assert url.startswith(DOCS_URL), url
    path = url[len(DOCS_URL) :].split("#")[0]
    return site / path / "index.html" if not path or path.endswith("/") else site / path


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    missing = [name for name in DOCS_PACKAGES if importlib.util.find_spec(name.split(".")[0]) is None]
    if missing:
        pytest.skip(f"the docs extra is not installed ({', '.join(missing)} missing): pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("site") / "site"
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(REPO_ROOT / "mkdocs.yml")]
    env = cli_env(NO_MKDOCS_2_WARNING="1")
    done = subprocess.run([*command, "-d", str(out)], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def test_the_site_builds_strict_with_every_internal_link_and_anchor_resolving(site: Path) -> None:
    for page in ("index.html", "reference/cli/index.html", "reference/spec/detect/index.html"):
        assert (site / page).is_file(), page
    assert broken_links(site) == []
    leaked = [
        p.name for p in site.rglob("*.html") if "TODO(lead)" in (text := p.read_text()) or "<!-- runnable" in text
    ]
    assert leaked == []  # source comments stay in the Markdown


def test_the_generated_pages_hold_the_code_s_facts(site: Path) -> None:
    from vfmkit.models.registry import list_backbones
    from vfmkit.task import spec_class

    zoo, cli = (site / "reference/models/index.html").read_text(), (site / "reference/cli/index.html").read_text()
    assert all(f'id="{entry.id}"' in zoo for entry in list_backbones(include_test=True))
    assert 'id="vfm-models-export"' in cli and "--min-cosine" in cli
    spec = (site / "reference/spec/detect/index.html").read_text()
    assert all(
        f'id="model.{name}"' in spec for name in spec_class("detect").model_fields["model"].annotation.model_fields
    )
    assert 'id="dataset.train_data_sources.image_dir"' in spec  # keys of list items


def test_every_command_s_help_links_a_page_of_the_site(site: Path) -> None:
    for page in set(COMMAND_PAGES.values()):
        assert site_page(site, page_url(page)).is_file(), page


def readme_links(text: str) -> list[str]:
    """The targets of the Markdown links ``[text](target)`` and autolinks ``<https://...>`` of a page."""
    return re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r"<(https?://[^>\s]+)>", text)


def test_the_readme_links_resolve_on_a_checkout_and_on_the_site(site: Path) -> None:
    links = readme_links((REPO_ROOT / "README.md").read_text())
    assert any(link.startswith("docs/") for link in links) and DOCS_URL in links
    for link in links:
        if link.startswith(DOCS_URL):
            assert site_page(site, link).is_file(), link
        elif not urlsplit(link).scheme:
            path = link.split("#")[0]
            assert "#" not in link, f"{link}: GitHub does not render the site's {{ #id }} anchors"
            assert (REPO_ROOT / path).exists(), link  # relative to README.md at the repository root
            if path.startswith("docs/") and path.endswith(".md"):  # a page of the site, not an excluded file
                assert site_page(site, page_url(path.removeprefix("docs/"))).is_file(), link


def _ci_commands() -> list[str]:
    lines = (REPO_ROOT / ".ci" / "run").read_text().splitlines()
    return [line.strip() for line in lines if line.strip().startswith("python ")]


def test_the_readme_install_and_tests_sections_show_what_ci_runs() -> None:
    sections = re.split(r"^## ", (REPO_ROOT / "README.md").read_text(), flags=re.MULTILINE)
    shown = {
        section.splitlines()[0]: re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL) for section in sections[1:]
    }
    install, tests = _ci_commands()  # .ci/run: the install, then the test suite
    assert install.startswith("python -m pip install") and tests.startswith("python -m pytest")
    assert [block.strip() for block in shown["Install"]] == [install]
    assert [block.strip() for block in shown["Tests"]] == [tests]


def test_the_link_checker_finds_broken_links(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "index.html").write_text('<h1 id="top">x</h1><a href="a/">ok</a><a href="#top">ok</a>')
    (tmp_path / "a" / "index.html").write_text('<a href="../index.html#nope">x</a><a href="../b/">x</a>')
    assert broken_links(tmp_path) == [
        "a/index.html: ../index.html#nope (no such anchor)",
        "a/index.html: ../b/ (no such file)",
    ]
