"""Write a report directory: `report.md`, a self-contained `report.html` and one PNG per figure.

The HTML is rendered by jinja2 with autoescaping on, so anything taken from the store (predictions,
error messages, labels) shows as text; figures are embedded as base64 PNG data URIs so the file
opens from disk with no network and no sibling files.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import jinja2

from reports.figures import figures as make_figures
from reports.sections import sections
from reports.tables import build
from reports.text import Section

DPI = 110
TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class Written:
    """Paths of what `write_report` wrote."""

    markdown: Path
    html: Path
    figures: list[Path]


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _md_cell(text: str) -> str:
    # A cell must stay on one line, `|` would split it, and raw HTML in markdown is live in most viewers.
    text = " ".join(str(text).split())
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def to_markdown(title: str, subtitle: str, parts: list[Section]) -> str:
    """Render the report as GitHub-flavoured markdown; figures are linked as `<name>.png` next to it."""
    lines = [f"# {title}", "", subtitle, ""]
    for section in parts:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            if block.kind == "text":
                lines += [_md_cell(block.text), ""]
            elif block.kind == "code":
                fence = "````" if "```" in block.text else "```"
                lines += [fence, block.text, fence, ""]
            elif block.kind == "figure":
                lines += [f"![{_md_cell(block.text)}]({block.name}.png)", "", f"*{_md_cell(block.text)}*", ""]
            elif block.kind == "table":
                if block.text:
                    lines += [f"**{_md_cell(block.text)}**", ""]
                lines.append("| " + " | ".join(_md_cell(c) for c in block.columns) + " |")
                lines.append("|" + "---|" * len(block.columns))
                lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in block.rows]
                lines.append("")
    return "\n".join(lines)


def to_html(title: str, subtitle: str, parts: list[Section], images: dict[str, bytes]) -> str:
    """Render the report as one HTML file, figures inlined as base64 PNG."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
    )
    inline = {name: base64.b64encode(data).decode("ascii") for name, data in images.items()}
    return env.get_template("report.html.j2").render(title=title, subtitle=subtitle, sections=parts, images=inline)


def write_report(store: str | Path, out: str | Path, baseline: str = "full", seed: int = 0) -> Written:
    """Build the tables and figures of `store` and write the report files into `out`.

    Args:
        store: SQLite results store.
        out: output directory (created).
        baseline: cell label of the paired comparison's reference method.
        seed: seed of the bootstrap and permutation draws.

    """
    tables = build(store, baseline=baseline, seed=seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    made = make_figures(tables, baseline)
    images, paths = {}, []
    for name, (fig, _) in made.items():
        images[name] = _png(fig)
        path = out / f"{name}.png"
        path.write_bytes(images[name])
        paths.append(path)
    parts = sections(tables, {name: caption for name, (_, caption) in made.items()}, baseline)
    models = ", ".join(sorted(tables["cells"]["model"].dropna().unique()))
    if baseline not in set(tables["summary"]["method"]):
        baseline = f"none ('{baseline}' is not a method of this store)"
    title = "lch report"
    subtitle = (f"Store `{Path(store).name}` · model {models} · {len(tables['cells'])} cells, "
                f"{len(tables['samples'])} samples · baseline {baseline} · "
                f"generated {datetime.now(UTC).isoformat(timespec='seconds')}")  # fmt: skip
    markdown = out / "report.md"
    markdown.write_text(to_markdown(title, subtitle, parts))
    html = out / "report.html"
    html.write_text(to_html(title, subtitle.replace("`", ""), parts, images))
    return Written(markdown, html, paths)
