"""The documentation holds together: every relative link of the README and the docs
resolves (the file exists; for `file#anchor` or `#anchor`, a heading of the target file
has that GitHub slug), and the README stays a ten-minute read whose set-up section names
the two set-up commands. External http(s) links are not checked (no network)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "benchmarks" / "README.md",
    ROOT / "experiments" / "README.md",
    ROOT / "results" / "reference" / "literature_cpu" / "README.md",
]
README_MAX_LINES = 300
SETUP = "## Set-up"

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
CODE = re.compile(r"(`+).+?\1", re.DOTALL)
# [text](target) and ![alt](target), a target without spaces, an optional "title"
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text (code marks, emphasis and link
    syntax dropped), lowercased, every character that is not a letter, digit, space,
    hyphen or underscore removed, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link → its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"(?<!\w)_+|_+(?!\w)", "", text)  # _emphasis_, not snake_case
    text = "".join(c for c in text.lower() if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading's slug, duplicates numbered -1, -2, … as GitHub numbers them."""
    seen: dict[str, int] = {}
    found = set()
    for _, text in HEADING.findall(FENCE.sub("", markdown)):
        base = slug(text)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(markdown: str) -> list[str]:
    """The link targets of the text outside code blocks and code spans."""
    return LINK.findall(CODE.sub("", FENCE.sub("", markdown)))


def broken_links(page: Path) -> list[str]:
    """Each relative link of `page` that does not resolve, with the reason."""
    problems = []
    for target in links(page.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            problems.append(f"{target}: no file {file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text()):
            problems.append(f"{target}: no heading with the anchor #{anchor} in {file.name}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert page.exists(), page
    assert not broken_links(page), broken_links(page)


def test_every_docs_page_is_in_the_readme_and_the_docs_index():
    readme = set(links((ROOT / "README.md").read_text()))
    index = set(links((ROOT / "docs" / "README.md").read_text()))
    for page in PAGES[1:]:
        from_root = str(page.relative_to(ROOT))
        assert from_root in readme, f"the README's documentation table lacks {from_root}"
        if page.parent == ROOT / "docs" and page.name != "README.md":
            assert page.name in index, f"docs/README.md lacks {page.name}"


def test_a_planted_broken_link_or_anchor_is_found(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## Set-up: two commands\n\n## Q&A\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n## Δ vs budget, and the verdict\n\n## Title\n\n"
        "[ok](other.md) [ok](other.md#set-up-two-commands) [ok](other.md#qa) [ok](#title-1)\n"
        "[ok](#δ-vs-budget-and-the-verdict) [web](https://example.org/missing)\n"
        "`[in code](missing.md)`\n\n```\n[in a block](missing.md)\n```\n"
        "[gone](missing.md) [bad](other.md#setup) [bad](#no-such-heading) ![img](figures/x.png)\n"
    )
    problems = broken_links(page)
    assert [p.split(":")[0] for p in problems] == [
        "missing.md",
        "other.md#setup",
        "#no-such-heading",
        "figures/x.png",
    ], problems


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Set-up: two commands on a fresh machine", "set-up-two-commands-on-a-fresh-machine"),
        ("Pruning a search (`hydra.sweeper.pruner=median`)", "pruning-a-search-hydrasweeperprunermedian"),
        ("`shared_machine.py`: two sweeps on one machine", "shared_machinepy-two-sweeps-on-one-machine"),
        ("Each strategy at its best learning rate (`hparams_search=`, `tuned_from=`)",
         "each-strategy-at-its-best-learning-rate-hparams_search-tuned_from"),
        ("Δ vs budget, and the verdict", "δ-vs-budget-and-the-verdict"),
        ("Tracking: the local store and W&B", "tracking-the-local-store-and-wb"),
    ],
)  # fmt: skip
def test_slugs_are_githubs(heading, anchor):
    assert slug(heading) == anchor


def test_the_readme_is_a_ten_minute_read():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


def test_the_setup_section_names_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    start = readme.index(SETUP)
    end = readme.find("\n## ", start + 1)
    setup = readme[start : end if end > 0 else None]
    for command in ("make demo", "make test"):
        assert re.search(rf"^{command}\b", setup, re.MULTILINE), command
