"""Knowledge-graph validation: the quarantine rules of the canonical tables, applied to triples and links.

Rules (each a `Check`, so `split_rows` gives every rejected row the first reason it broke, and a
duplicate group keeps its first clean member):
- triples: a missing field; a relation outside `kg.relations` (when given); a self-loop; a duplicate;
- links: a missing field; an item the catalog does not have (dangling); an entity with no clean
  triple (dangling); a second link for the same item (an item is one entity).
The clean graph, the quarantine (table, reason, row) and a report (JSON for DVC, Markdown for
people) go to paths.kg; the run stops only when more than `kg.max_quarantine_fraction` of the links
would go, which means the graph belongs to another catalog or its ids are in another format.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from great_expectations.expectations.metadata_types import FailureSeverity

from components.atomic import staged_dir
from components.config import KGConfig
from components.data.schema import KG_LINKS_FILE, KG_TRIPLES_FILE, QUARANTINE_FILE
from components.data.sources.kg import KnowledgeGraph, read_kg
from components.errors import RecloopError
from components.validation.quarantine import PANDAS, Check, TableOutcome, reference_check, split_rows

REPORT_JSON = "kg.json"
REPORT_MD = "kg.md"


def _check(table: str, rule: str, columns: list[str], description: str, reason: str, flagged: np.ndarray,
           keep_first: bool = False) -> Check:
    return Check(table=table, rule=rule, columns=columns, description=description, params="", reason=reason,
                 severity=FailureSeverity.CRITICAL.value, engine=PANDAS,
                 flagged=np.flatnonzero(flagged) if flagged.dtype == bool else flagged, keep_first=keep_first)


def _missing(table: str, frame: pd.DataFrame) -> Check:
    return _check(table, "fields_present", list(frame.columns), "every field is present",
                  "missing field", frame.isna().any(axis=1).to_numpy())


def _duplicates(table: str, frame: pd.DataFrame, columns: list[str], reason: str) -> Check:
    return _check(table, "unique", columns, f"({', '.join(columns)}) occurs once", reason,
                  frame.duplicated(columns, keep=False).to_numpy(), keep_first=True)


def triple_checks(triples: pd.DataFrame, relations: list[str] | None) -> list[Check]:
    checks = [_missing("kg_triples", triples)]
    if relations is not None:
        checks.append(_check("kg_triples", "relation_known", ["relation"], f"relation is one of {len(relations)}",
                             "unknown relation",
                             (~triples["relation"].isin(relations) & triples["relation"].notna()).to_numpy()))
    checks.append(_check("kg_triples", "no_self_loop", ["head", "tail"], "head differs from tail", "self-loop",
                         (triples["head"] == triples["tail"]).to_numpy()))
    checks.append(_duplicates("kg_triples", triples, ["head", "relation", "tail"], "duplicate triple"))
    return checks


def link_checks(links: pd.DataFrame, catalog: pd.Series, entities: pd.Series) -> list[Check]:
    return [
        _missing("kg_links", links),
        reference_check("kg_links", links, "item_id", catalog, "items", "dangling link: unknown item"),
        reference_check("kg_links", links, "entity", entities, "knowledge-graph entities",
                        "dangling link: entity without facts"),
        _duplicates("kg_links", links, ["item_id"], "duplicate link"),
    ]


@dataclass
class KGValidation:
    """The clean graph and what each table's checks decided."""

    graph: KnowledgeGraph
    triples: TableOutcome
    links: TableOutcome
    catalog_items: int  # the items the graph was validated against: what a kept link's share is of

    def quarantine(self) -> pd.DataFrame:
        return pd.concat([self.triples.quarantine, self.links.quarantine], ignore_index=True)

    def link_loss(self) -> float:
        return len(self.links.quarantine) / max(self.links.rows_in, 1)

    def metrics(self) -> dict:
        graph = self.graph
        return {
            "triples_in": self.triples.rows_in, "triples": len(graph.triples),
            "links_in": self.links.rows_in, "links": len(graph.links), "catalog_items": self.catalog_items,
            "linked_share": round(len(graph.links) / max(self.catalog_items, 1), 4),
            "entities": int(pd.concat([graph.triples["head"], graph.triples["tail"]]).nunique()),
            "relations": {r: int(n) for r, n in graph.triples["relation"].value_counts().sort_index().items()},
            "quarantined": {f"{c.table}: {c.reason}": c.quarantined
                            for o in (self.triples, self.links) for c in o.checks if c.quarantined},
        }

    def describe(self) -> str:
        m = self.metrics()
        return (f"knowledge graph: {m['triples']:,} of {m['triples_in']:,} triples, {m['links']:,} of "
                f"{m['links_in']:,} item links kept ({m['linked_share']:.0%} of the catalog's {m['catalog_items']:,} "
                f"items), {m['entities']:,} entities, {len(m['relations'])} relations; "
                f"quarantined {sum(m['quarantined'].values()):,} rows")


def validate_kg(graph: KnowledgeGraph, catalog: pd.Series, relations: list[str] | None = None) -> KGValidation:
    """Split `graph` into clean rows and quarantined ones; `catalog` holds the valid item ids."""
    triples = split_rows("kg_triples", graph.triples, triple_checks(graph.triples, relations))
    clean = triples.clean
    entities = pd.Series(pd.unique(pd.concat([clean["head"], clean["tail"]])))
    links = split_rows("kg_links", graph.links, link_checks(graph.links, catalog.astype(str), entities))
    return KGValidation(KnowledgeGraph(clean, links.clean), triples, links, int(catalog.nunique()))


def _markdown(result: KGValidation) -> str:
    lines = ["# Knowledge-graph validation", "", result.describe(), "",
             "| table | rule | reason | rows flagged | quarantined | examples |", "|---|---|---|---|---|---|"]
    for outcome in (result.triples, result.links):
        for c in outcome.checks:
            examples = "<br>".join(e.replace("|", "\\|") for e in c.examples[:2])
            lines.append(f"| {c.table} | {c.description} | {c.reason} | {c.unexpected:,} | {c.quarantined:,} "
                         f"| {examples} |")
    relations = result.metrics()["relations"]
    lines += ["", "| relation | triples |", "|---|---|", *(f"| {r} | {n:,} |" for r, n in relations.items())]
    return "\n".join(lines) + "\n"


def write_kg(result: KGValidation, out_dir: Path) -> None:
    """Clean triples and links, the quarantine and the report, swapped in as one folder."""
    with staged_dir(Path(out_dir)) as tmp:
        result.graph.triples.to_parquet(tmp / KG_TRIPLES_FILE, index=False)
        result.graph.links.to_parquet(tmp / KG_LINKS_FILE, index=False)
        result.quarantine().to_parquet(tmp / QUARANTINE_FILE, index=False)
        (tmp / REPORT_JSON).write_text(json.dumps(result.metrics(), indent=1) + "\n")
        (tmp / REPORT_MD).write_text(_markdown(result))


def kg_stage(cfg: KGConfig, items_path: Path, out_dir: Path) -> KGValidation:
    """`recloop kg`: read the graph named by `cfg`, validate it against the items table, write paths.kg."""
    catalog = pd.read_parquet(items_path, columns=["item_id"])["item_id"]
    result = validate_kg(read_kg(cfg), catalog, cfg.relations)
    write_kg(result, out_dir)
    if result.link_loss() > cfg.max_quarantine_fraction:
        raise RecloopError(f"{result.link_loss():.0%} of the knowledge graph's item links were quarantined "
                           f"(kg.max_quarantine_fraction {cfg.max_quarantine_fraction}); see {out_dir / REPORT_MD}: "
                           "is it the graph of this catalog, with the same item ids?")
    return result
