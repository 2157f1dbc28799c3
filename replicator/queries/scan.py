"""``replicator queries scan``: every SQL statement in a source tree, translated and checked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .catalog import Catalog
from .extract import iter_files, literals_of, statements_of
from .translate import Translation, looks_like_sql, translate
from .traps import SEVERITIES, make


@dataclass
class Finding:
    """One SQL statement found in the source, with its translation."""

    file: str
    line: int
    language: str
    translation: Translation
    tagged: bool = False  # a tagged template: ${...} are bound by the driver

    def to_json(self) -> dict:
        return {"file": self.file, "line": self.line, "language": self.language,
                "tagged_template": self.tagged, **self.translation.to_json()}


@dataclass
class ScanReport:
    driver: str
    findings: list[Finding]
    files_scanned: int

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys((*SEVERITIES, "clean"), 0)
        for f in self.findings:
            out[f.translation.severity or "clean"] += 1
        return out

    def to_json(self) -> dict:
        return {"driver": self.driver, "files_scanned": self.files_scanned,
                "statements": len(self.findings), "counts": self.counts(),
                "findings": [f.to_json() for f in self.findings]}


def scan(paths: list[Path], driver: str = "asyncpg", catalog: Catalog | None = None,
         root: Path | None = None) -> ScanReport:
    """Find, translate and check the SQL under ``paths``; file names relative to ``root``."""
    findings: list[Finding] = []
    files = 0
    for path in iter_files(paths):
        files += 1
        lang, lits = literals_of(path)
        name = _display(path, root)
        for lit in lits:
            for line, text in statements_of(lit):
                if not looks_like_sql(text):
                    continue
                tr = translate(text, driver, catalog)
                if lit.interpolated:
                    tr.traps.insert(0, make("interpolated"))
                findings.append(Finding(name, line, lang or "?", tr, lit.tagged))
    findings.sort(key=lambda f: (f.file, f.line))
    return ScanReport(driver, findings, files)


def _display(path: Path, root: Path | None) -> str:
    base = (root or Path.cwd()).resolve()
    try:
        return str(path.resolve().relative_to(base))
    except ValueError:
        return str(path)
