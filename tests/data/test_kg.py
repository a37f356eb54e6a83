"""Knowledge-graph ingest (MKR and generic formats), validation with quarantine, and the neighbourhood codes."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.config import KGConfig
from components.data.sources.kg import KnowledgeGraph, read_kg
from components.errors import RecloopError
from components.features.kg import kg_neighbourhoods, read_kg_tables, relation_name
from components.validation.kg import REPORT_JSON, REPORT_MD, kg_stage, validate_kg

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "kg" / "movie"
RESERVOIR_DOGS, PULP_FICTION, DIE_HARD = "1089", "296", "1036"


def fixture_kg() -> KnowledgeGraph:
    return read_kg(KGConfig(path=FIXTURE))


def catalog() -> pd.Series:
    links = pd.read_csv(FIXTURE / "item_index2entity_id.txt", sep="\t", header=None, dtype=str)
    return links[0]


def test_mkr_files_read_as_text_triples_and_links():
    graph = fixture_kg()
    assert len(graph.triples) == 1450 and len(graph.links) == 150
    assert list(graph.triples.columns) == ["head", "relation", "tail"]
    assert graph.triples.iloc[0].tolist() == ["217", "film.film.director", "2360"]
    assert "film.film.director" in graph.relations and len(graph.relations) == 7


def test_dangling_links_unknown_relations_and_duplicates_are_quarantined_the_rest_kept(tmp_path):
    graph = fixture_kg()
    links = pd.concat([graph.links, pd.DataFrame({
        "item_id": ["999999", "1", RESERVOIR_DOGS, None],  # unknown item; duplicate of item 1; unknown entity
        "entity": ["0", "1", "no-such-entity", "0"]})], ignore_index=True)
    links.loc[len(graph.links) + 2, "item_id"] = "42"  # a catalog item linked to an entity with no facts
    triples = pd.concat([graph.triples, graph.triples.iloc[:2], pd.DataFrame({
        "head": ["217", "217"], "relation": ["film.film.composer", "film.film.genre"], "tail": ["9999", "217"]})],
        ignore_index=True)
    result = validate_kg(KnowledgeGraph(triples, links), pd.concat([catalog(), pd.Series(["42"])]),
                         relations=graph.relations)
    reasons = result.quarantine().groupby(["table", "reason"]).size().to_dict()
    assert reasons == {("kg_triples", "duplicate triple"): 2, ("kg_triples", "unknown relation"): 1,
                       ("kg_triples", "self-loop"): 1, ("kg_links", "dangling link: unknown item"): 1,
                       ("kg_links", "duplicate link"): 1, ("kg_links", "dangling link: entity without facts"): 1,
                       ("kg_links", "missing field"): 1}
    # Everything else is kept as it was, the first of each duplicate group among it.
    pd.testing.assert_frame_equal(result.graph.triples, graph.triples)
    pd.testing.assert_frame_equal(result.graph.links, graph.links)


def test_kg_stage_writes_the_clean_graph_quarantine_and_report(tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(FIXTURE, raw)
    with open(raw / "item_index2entity_id.txt", "a") as f:
        f.write("999999\t0\n")
    items = tmp_path / "items.parquet"
    pd.DataFrame({"item_id": catalog()}).to_parquet(items)
    result = kg_stage(KGConfig(path=raw), items, tmp_path / "kg")
    assert len(result.graph.links) == 150
    triples, links = read_kg_tables(tmp_path / "kg")
    pd.testing.assert_frame_equal(links, result.graph.links)
    pd.testing.assert_frame_equal(triples, result.graph.triples)
    quarantine = pd.read_parquet(tmp_path / "kg" / "quarantine.parquet")
    assert quarantine["reason"].tolist() == ["dangling link: unknown item"] and "999999" in quarantine["row"][0]
    report = json.loads((tmp_path / "kg" / REPORT_JSON).read_text())
    assert report["links"] == 150 and report["relations"]["film.film.director"] == 161
    n = catalog().nunique()  # how much of the catalog the graph can reach: what it can lift, and what not
    assert report["catalog_items"] == n and report["linked_share"] == round(150 / n, 4)
    assert f"of the catalog's {n:,} items" in result.describe()
    assert "dangling link: unknown item" in (tmp_path / "kg" / REPORT_MD).read_text()
    # A graph of another catalog loses (nearly) every link: the stage stops and says why.
    pd.DataFrame({"item_id": ["a", "b"]}).to_parquet(items)
    with pytest.raises(RecloopError, match="quarantined"):
        kg_stage(KGConfig(path=raw), items, tmp_path / "other")


def test_generic_format_reads_named_columns(tmp_path):
    pd.DataFrame({"head": ["m1", "m2"], "relation": ["director", "director"], "tail": ["p", "p"],
                  "source": ["x", "y"]}).to_csv(tmp_path / "triples.csv", index=False)
    pd.DataFrame({"item_id": ["1", "2"], "entity": ["m1", "m2"]}).to_parquet(tmp_path / "links.parquet")
    graph = read_kg(KGConfig(path=tmp_path, format="generic", triples="triples.csv", links="links.parquet"))
    assert graph.triples.values.tolist() == [["m1", "director", "p"], ["m2", "director", "p"]]
    assert graph.links.values.tolist() == [["1", "m1"], ["2", "m2"]]
    with pytest.raises(RecloopError, match="lacks the columns"):
        read_kg(KGConfig(path=tmp_path, format="generic", triples="links.parquet", links="links.parquet"))


def test_neighbourhoods_rarest_first_and_two_hops_reach_items_sharing_an_entity():
    triples = pd.DataFrame({
        "head": ["a", "b", "c", "a", "b", "c"],
        "relation": ["director", "director", "director", "language", "language", "language"],
        "tail": ["p", "p", "q", "en", "en", "en"]})
    links = pd.DataFrame({"item_id": ["1", "2", "3"], "entity": ["a", "b", "c"]})
    hoods = kg_neighbourhoods(triples, links, ["1", "2", "3", "4"], one_hop=2, two_hop=3, seed=0)
    entity = {name: code + 1 for code, name in enumerate(hoods.entities)}
    assert hoods.linked.tolist() == [True, True, True, False]
    assert not hoods.one_hop[3].any() and not hoods.two_hop[3].any()
    # Item 1: the director (shared by two films) before the language (shared by three).
    assert [relation_name(hoods.relations, r) for r in hoods.one_hop[0, :, 0]] == ["director", "language"]
    assert hoods.one_hop[0, :, 1].tolist() == [entity["p"], entity["en"]]
    # Two hops: first b through the shared director, then the language's other films; never a itself.
    two = hoods.two_hop[0]
    assert two[0].tolist() == [1, 1 + len(hoods.relations), entity["b"]]
    assert relation_name(hoods.relations, two[0, 1]) == "director^-1"
    assert sorted(two[1:, 2].tolist()) == [entity["b"], entity["c"]] and entity["a"] not in two[:, 2]
    assert np.array_equal(hoods.two_hop, kg_neighbourhoods(triples, links, ["1", "2", "3", "4"], 2, 3, seed=0).two_hop)
