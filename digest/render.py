"""Render a digest variant: Jinja2 (autoescape, StrictUndefined) -> MJML -> HTML, plus text and subject.

Templates come from the bundled `templates/` folder, overridden file by file by the folder
named in `[templates] folder`. Personal values render as placeholders (`digest.personal`)
so one render serves every subscriber of the variant.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from mjml import mjml2html

from digest.errors import TemplateError
from digest.models import Digest, RenderedVariant
from digest.personal import MARKERS, Links


def bundled_templates_dir() -> Path:
    """templates/ beside the package in a checkout (editable install), else the wheel's data copy."""
    checkout = Path(__file__).resolve().parent.parent / "templates"
    if checkout.is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "digest" / "templates"


@dataclass(frozen=True)
class NewsletterInfo:
    """What templates know about the newsletter itself."""

    name: str
    base_url: str
    postal_address: str
    language: str = "en"

    @property
    def links(self) -> Links:
        return Links(self.base_url)


class Renderer:
    def __init__(self, info: NewsletterInfo, *, override_dir: Path | None = None) -> None:
        self.info = info
        search = [str(override_dir)] if override_dir else []
        search.append(str(bundled_templates_dir()))
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(search),
            autoescape=jinja2.select_autoescape(
                enabled_extensions=("html", "mjml", "mjml.j2", "html.j2"), default_for_string=False
            ),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )

    def _render(self, name: str, context: dict[str, Any]) -> str:
        try:
            return self.env.get_template(name).render(context)
        except jinja2.TemplateSyntaxError as err:
            raise TemplateError(f"{err.filename or name}, line {err.lineno}: {err.message}") from err
        except jinja2.TemplateNotFound as err:
            raise TemplateError(f"template {err.name} not found in {self.env.loader.searchpath}") from err  # type: ignore[union-attr]
        except (jinja2.UndefinedError, TypeError, ValueError) as err:
            raise TemplateError(f"{_template_location(err, name)}: {err}") from err

    def context(self, digest: Digest, *, personal: dict[str, str] | None = None) -> dict[str, Any]:
        return {
            "digest": digest,
            "newsletter": self.info,
            "personal": personal if personal is not None else MARKERS,
            "archive_url": self.info.links.archive(digest.issue_date.isoformat()),
        }

    def render(self, digest: Digest) -> RenderedVariant:
        ctx = self.context(digest)
        subject = " ".join(self._render("subject.txt.j2", ctx).split())
        preheader = " ".join(self._render("preheader.txt.j2", ctx).split())
        ctx["subject"] = subject
        ctx["preheader"] = preheader
        mjml_source = self._render("digest.mjml.j2", ctx)
        html = compile_mjml(mjml_source, name="digest.mjml.j2")
        text = self._render("digest.txt.j2", ctx)
        return RenderedVariant(
            regions=digest.regions, subject=subject, preheader=preheader, html=html, text=text
        )


def compile_mjml(source: str, *, name: str = "<mjml>") -> str:
    try:
        return mjml2html(source)
    except Exception as err:  # the binding raises a bare error type for MJML problems
        raise TemplateError(f"{name}: MJML did not compile: {err}") from err


def _template_location(err: BaseException, default: str) -> str:
    """The template file and line of the innermost Jinja2 frame in a traceback."""
    tb = err.__traceback__
    where = default
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_globals.get("__jinja_template__") is not None:
            template = frame.f_globals["__jinja_template__"]
            lineno = template.get_corresponding_lineno(tb.tb_lineno)
            where = f"{template.filename or template.name}, line {lineno}"
        tb = tb.tb_next
    return where
