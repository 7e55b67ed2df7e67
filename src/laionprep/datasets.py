"""The dataset registry: one declarative spec per dataset family laionprep knows.

A spec says where the metadata lives, which columns hold the URL and caption, which extra columns are carried
into every record (with their type and the sentinel that replaces a null), which column the similarity filter
reads, and the default filters.  Every stage reads the spec; nothing else hard-codes a dataset.

Column names are matched case-insensitively against a list of candidates, so Re-LAION's lower-case columns and
LAION's upper-case ones resolve to the same canonical names.  After the prefilter, the metadata carries the
canonical names only (``url``, ``caption`` and each extra column's ``name``), so records from any family use the
same keys.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

from laionprep.errors import UsageError
from laionprep.options import option

# Sentinels written in place of nulls, one per column kind.  Documented in the README ("Records").
SENTINELS = {"float": -1.0, "int": -1, "str": ""}


@dataclasses.dataclass(frozen=True)
class Column:
    """A metadata column carried into every record.

    ``kind`` is ``float`` (stored as a float32 feature), ``int`` (int64), ``str`` (bytes/Text) or ``json`` (a list
    or struct column serialised to a JSON string, because img2dataset's TFRecord writer cannot store lists).
    """

    name: str
    kind: str
    candidates: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self):
        if self.kind not in ("float", "int", "str", "json"):
            raise ValueError(f"column {self.name}: unknown kind {self.kind!r}")

    @property
    def all_candidates(self) -> tuple[str, ...]:
        return (self.name,) + tuple(c for c in self.candidates if c != self.name)

    @property
    def sentinel(self):
        return SENTINELS["str" if self.kind == "json" else self.kind]


@dataclasses.dataclass(frozen=True)
class Filters:
    """Row filters applied by the prefilter (on metadata) and again by ``reshard`` (on records).

    ``None`` means "no filter".  ``nsfw`` is the set of NSFW tags to keep.  Thresholds compare with the spec's
    columns: ``min_similarity`` against ``similarity_column``; ``max_punsafe`` / ``max_pwatermark`` against the
    ``punsafe`` / ``pwatermark`` columns.  A row whose filtered value is null (the sentinel) fails the filter.
    """

    nsfw: tuple[str, ...] | None = None
    min_similarity: float | None = None
    max_punsafe: float | None = None
    max_pwatermark: float | None = None

    def describe(self) -> str:
        parts = []
        if self.nsfw is not None:
            parts.append("NSFW in {" + ",".join(self.nsfw) + "}")
        if self.min_similarity is not None:
            parts.append(f"similarity>={self.min_similarity:g}")
        if self.max_punsafe is not None:
            parts.append(f"punsafe<{self.max_punsafe:g}")
        if self.max_pwatermark is not None:
            parts.append(f"pwatermark<{self.max_pwatermark:g}")
        return ", ".join(parts) or "none"

    def replace(self, **overrides) -> "Filters":
        """Return a copy with the given (non-None) overrides applied; ``nsfw=()``-style empties clear a filter."""
        clean = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self, **clean)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if d["nsfw"] is not None:
            d["nsfw"] = list(d["nsfw"])
        return d


def parse_nsfw(value: str | None) -> tuple[str, ...] | None:
    """``--nsfw UNLIKELY,unsure`` -> ("UNLIKELY", "UNSURE"); ``all`` -> () (every tag kept)."""
    if value is None:
        return None
    if value.strip().lower() == "all":
        return ()
    return tuple(v.strip().upper() for v in value.split(",") if v.strip())


@dataclasses.dataclass(frozen=True, kw_only=True)
class FilterOverrides:
    """The filter flags of ``download`` and ``reshard``, declared once: overrides of a base :class:`Filters` (the
    dataset's defaults, or none).  Both configs inherit these fields."""

    nsfw: tuple[str, ...] | None = option(
        "--nsfw", None, "NSFW tags to keep, comma-separated, e.g. UNLIKELY,UNSURE ('all' keeps every tag)",
        parse=parse_nsfw, group="filters")
    min_similarity: float | None = option("--min-similarity", float, "keep rows with similarity >= this",
                                          group="filters")
    max_punsafe: float | None = option("--max-punsafe", float, "keep rows with punsafe < this", group="filters")
    max_pwatermark: float | None = option("--max-pwatermark", float, "keep rows with pwatermark < this",
                                          group="filters")

    def apply(self, base: Filters) -> Filters:
        """``base`` with the given overrides; ``nsfw=()`` (--nsfw all) lifts the NSFW filter."""
        f = base.replace(nsfw=self.nsfw, min_similarity=self.min_similarity, max_punsafe=self.max_punsafe,
                         max_pwatermark=self.max_pwatermark)
        return dataclasses.replace(f, nsfw=None) if f.nsfw == () else f


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    metadata_url: str  # an fsspec URL: hf://datasets/ORG/REPO for the Hugging Face Hub
    file_pattern: str  # glob below metadata_url
    url_candidates: tuple[str, ...]
    caption_candidates: tuple[str, ...]
    extra_columns: tuple[Column, ...]
    default_filters: Filters
    similarity_column: str | None = None
    approx_rows: str = ""
    gated: bool = False
    homepage: str = ""
    citation: str = ""

    @property
    def hub_repo(self) -> str | None:
        prefix = "hf://datasets/"
        return self.metadata_url[len(prefix):] if self.metadata_url.startswith(prefix) else None

    def column(self, name: str) -> Column | None:
        for c in self.extra_columns:
            if c.name == name:
                return c
        return None


_LAION_CITATION = """@inproceedings{schuhmann2022laion5b,
  title={LAION-5B: An open large-scale dataset for training next generation image-text models},
  author={Schuhmann, Christoph and Beaumont, Romain and Vencu, Richard and others},
  booktitle={NeurIPS Datasets and Benchmarks},
  year={2022}
}"""
_LAION400M_CITATION = """@article{schuhmann2021laion400m,
  title={LAION-400M: Open Dataset of CLIP-Filtered 400 Million Image-Text Pairs},
  author={Schuhmann, Christoph and Vencu, Richard and Beaumont, Romain and others},
  journal={arXiv preprint arXiv:2111.02114},
  year={2021}
}"""
_DATACOMP_CITATION = """@inproceedings{gadre2023datacomp,
  title={DataComp: In search of the next generation of multimodal datasets},
  author={Gadre, Samir Yitzhak and Ilharco, Gabriel and Fang, Alex and others},
  booktitle={NeurIPS Datasets and Benchmarks},
  year={2023}
}"""

_URL = ("URL", "url")
_CAPTION = ("TEXT", "caption", "text")

_LAION400M_COLUMNS = (
    Column("NSFW", "str", description="CLIP-based NSFW tag: UNLIKELY, UNSURE or NSFW"),
    Column("similarity", "float", description="CLIP ViT-B/32 image-text cosine similarity"),
    Column("LICENSE", "str", description="license tag found on the page, '?' when unknown"),
)
_LAION2B_COLUMNS = (
    Column("similarity", "float", description="CLIP ViT-B/32 image-text cosine similarity"),
    Column("punsafe", "float", description="probability the image is unsafe (LAION safety classifier)"),
    Column("pwatermark", "float", description="probability the image carries a watermark"),
)
_DATACOMP_COLUMNS = (
    Column("uid", "str", description="DataComp sample id (hex)"),
    Column("clip_b32_similarity_score", "float", description="OpenAI CLIP ViT-B/32 similarity"),
    Column("clip_l14_similarity_score", "float", description="OpenAI CLIP ViT-L/14 similarity"),
    Column("sha256", "str", description="sha256 of the original image bytes (checked by validate)"),
)


def _datacomp(scale: str, repo: str, rows: str) -> DatasetSpec:
    return DatasetSpec(
        name=f"datacomp_{scale}",
        description=f"DataComp CommonPool {scale} ({rows} pairs), unfiltered pool metadata",
        metadata_url=f"hf://datasets/mlfoundations/{repo}",
        file_pattern="**/*.parquet",
        url_candidates=_URL,
        caption_candidates=_CAPTION,
        extra_columns=_DATACOMP_COLUMNS,
        default_filters=Filters(),
        similarity_column="clip_b32_similarity_score",
        approx_rows=rows,
        homepage="https://www.datacomp.ai/",
        citation=_DATACOMP_CITATION,
    )


SPECS: Mapping[str, DatasetSpec] = {
    s.name: s
    for s in [
        DatasetSpec(
            name="laion400m",
            description="LAION-400M: CLIP-filtered English image-text pairs (2021)",
            metadata_url="hf://datasets/laion/laion400m",
            file_pattern="**/*.parquet",
            url_candidates=_URL,
            caption_candidates=_CAPTION,
            extra_columns=_LAION400M_COLUMNS,
            default_filters=Filters(nsfw=("UNLIKELY", "UNSURE"), min_similarity=0.3),
            similarity_column="similarity",
            approx_rows="413M",
            gated=True,
            homepage="https://laion.ai/blog/laion-400-open-dataset/",
            citation=_LAION400M_CITATION,
        ),
        DatasetSpec(
            name="laion2b-en",
            description="LAION-2B-en: English subset of LAION-5B",
            metadata_url="hf://datasets/laion/laion2B-en",
            file_pattern="**/*.parquet",
            url_candidates=_URL,
            caption_candidates=_CAPTION,
            extra_columns=_LAION2B_COLUMNS,
            default_filters=Filters(min_similarity=0.28, max_punsafe=0.5, max_pwatermark=0.8),
            similarity_column="similarity",
            approx_rows="2.32B",
            gated=True,
            homepage="https://laion.ai/blog/laion-5b/",
            citation=_LAION_CITATION,
        ),
        DatasetSpec(
            name="relaion2b-en-research-safe",
            description="Re-LAION-2B-en research-safe: LAION-2B-en with known CSAM/NCII links removed (2024)",
            metadata_url="hf://datasets/laion/relaion2B-en-research-safe",
            file_pattern="**/*.parquet",
            url_candidates=_URL,
            caption_candidates=_CAPTION,
            extra_columns=_LAION2B_COLUMNS,
            default_filters=Filters(min_similarity=0.28, max_punsafe=0.5, max_pwatermark=0.8),
            similarity_column="similarity",
            approx_rows="2.1B",
            gated=True,
            homepage="https://laion.ai/blog/relaion-5b/",
            citation=_LAION_CITATION,
        ),
        _datacomp("small", "datacomp_small", "12.8M"),
        _datacomp("medium", "datacomp_medium", "128M"),
        _datacomp("large", "datacomp_large", "1.28B"),
        _datacomp("xlarge", "datacomp_xlarge", "12.8B"),
        dataclasses.replace(
            _datacomp("1b", "datacomp_1b", "1.4B"),
            description="DataComp-1B: the filtered 1.4B subset of CommonPool xlarge",
        ),
        DatasetSpec(
            name="demo",
            description="synthetic mini-LAION generated and served on 127.0.0.1 by `laionprep demo`",
            metadata_url="",  # generated; pass --metadata-source
            file_pattern="**/*.parquet",
            url_candidates=_URL,
            caption_candidates=_CAPTION,
            extra_columns=_LAION400M_COLUMNS,
            default_filters=Filters(nsfw=("UNLIKELY", "UNSURE"), min_similarity=0.3),
            similarity_column="similarity",
            approx_rows="~3k",
        ),
    ]
}


def get_spec(name: str) -> DatasetSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise UsageError(
            f"unknown dataset {name!r}",
            where="--dataset",
            fix="use one of: " + ", ".join(SPECS) + " (see `laionprep datasets`)",
        ) from None


def resolve_columns(spec: DatasetSpec, names: Sequence[str], *, where: str,
                    columns: Sequence[Column] | None = None) -> dict[str, str | None]:
    """Map canonical names (``url``, ``caption``, each extra column) to the actual column names in a file.

    Matching is case-insensitive.  A missing URL or caption column raises :class:`DataError` listing the columns
    found and the ones expected; a missing extra column maps to ``None`` (it is filled with its sentinel and
    reported by the prefilter).
    """
    from laionprep.errors import DataError

    lower = {}
    for n in names:
        lower.setdefault(n.lower(), n)

    def find(cands):
        for c in cands:
            if c.lower() in lower:
                return lower[c.lower()]
        return None

    out: dict[str, str | None] = {"url": find(spec.url_candidates), "caption": find(spec.caption_candidates)}
    for role, cands in (("url", spec.url_candidates), ("caption", spec.caption_candidates)):
        if out[role] is None:
            import difflib

            near = [n for n in names if difflib.get_close_matches(n.lower(), [c.lower() for c in cands], n=1,
                                                                  cutoff=0.6)]
            hint = f"rename column {near[0]!r} to {cands[0]!r} if it holds the {role}s; or " if near else ""
            raise DataError(
                f"no {role} column: expected one of {list(cands)} (case-insensitive), found {list(names)}",
                where=where,
                fix=f"{hint}check that this is {spec.name} metadata, or pick the dataset whose columns match "
                    "(`laionprep datasets`)",
            )
    for col in spec.extra_columns if columns is None else columns:
        out[col.name] = find(col.all_candidates)
    return out
