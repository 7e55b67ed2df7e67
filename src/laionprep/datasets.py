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
from laionprep import options
from laionprep.options import option

# Sentinels written in place of nulls, one per column kind.  Documented in the README ("Records").
SENTINELS = {"float": -1.0, "int": -1, "str": ""}
# A filter flag's value that turns that one filter off (``--max-punsafe none``, ``--nsfw none``).
OFF = "none"


@dataclasses.dataclass(frozen=True)
class Column:
    """A metadata column carried into every record.

    ``kind`` is ``float`` (stored as a float32 feature), ``int`` (int64), ``str`` (bytes/Text) or ``json`` (a list
    or struct column serialised to a JSON string, because img2dataset's TFRecord writer cannot store lists).
    ``values``: the known values of a tag column (``--nsfw`` accepts only these).  ``check``: what is switched on by
    the column's presence (``--columns`` leaving it out warns).
    """

    name: str
    kind: str
    candidates: tuple[str, ...] = ()
    description: str = ""
    values: tuple[str, ...] = ()
    check: str = ""

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


@dataclasses.dataclass(frozen=True)
class FilterKind:
    """One of the four shared filters: its :class:`Filters` field, the drop reason it counts under, and the carried
    column it reads (``None``: the spec's ``similarity_column``)."""

    field: str
    reason: str
    column: str | None

    def column_of(self, spec: "DatasetSpec | None") -> str:
        return self.column or (spec.similarity_column if spec and spec.similarity_column else "similarity")

    @property
    def flag(self) -> str:
        return options.flag_of(FilterOverrides, self.field)

    @property
    def off(self) -> str:
        """The flag that turns this filter alone off."""
        return f"{self.flag} {OFF}"


FILTER_KINDS = (FilterKind("nsfw", "nsfw", "NSFW"), FilterKind("min_similarity", "low_similarity", None),
                FilterKind("max_punsafe", "high_punsafe", "punsafe"),
                FilterKind("max_pwatermark", "high_pwatermark", "pwatermark"))


def active_filters(filters: Filters, spec: "DatasetSpec | None") -> list[tuple[FilterKind, str]]:
    """(filter, the column it reads) for each filter ``filters`` applies."""
    return [(k, k.column_of(spec)) for k in FILTER_KINDS if getattr(filters, k.field) is not None]


def parse_nsfw(value: str | None) -> tuple[str, ...] | str | None:
    """``--nsfw UNLIKELY,unsure`` -> ("UNLIKELY", "UNSURE"); ``all`` -> () (every tag kept); ``none`` -> OFF (no
    NSFW filter, the other filters unchanged)."""
    if value is None:
        return None
    if value.strip().lower() == "all":
        return ()
    if value.strip().lower() == OFF:
        return OFF
    tags = value.split(",")
    if any(not t.strip() for t in tags):
        raise UsageError(f"--nsfw {value!r}: an empty tag", where="--nsfw", fix="e.g. --nsfw UNLIKELY,UNSURE")
    return tuple(t.strip().upper() for t in tags)


def _threshold(flag: str):
    """The parser of a threshold flag: a number, or ``none`` (the filter off)."""
    def parse(value: str | float | None) -> float | str | None:
        if value is None or isinstance(value, float):
            return value
        if str(value).strip().lower() == OFF:
            return OFF
        try:
            return float(value)
        except ValueError:
            raise UsageError(f"{flag} {value!r}: not a number", where=flag,
                             fix=f"give a number, e.g. {flag} 0.5, or {flag} {OFF} to turn the filter off") from None
    return parse


@dataclasses.dataclass(frozen=True, kw_only=True)
class FilterOverrides:
    """The filter flags of ``download`` and ``reshard``, declared once: overrides of a base :class:`Filters` (the
    dataset's defaults, or none).  Both configs inherit these fields."""

    nsfw: tuple[str, ...] | str | None = option(
        "--nsfw", None, "NSFW tags to keep, comma-separated, e.g. UNLIKELY,UNSURE ('all' keeps every tag, "
        f"'{OFF}' turns this filter off)", parse=parse_nsfw, group="filters")
    min_similarity: float | str | None = option(
        "--min-similarity", None, f"keep rows with similarity >= this ('{OFF}': filter off)",
        parse=_threshold("--min-similarity"), group="filters")
    max_punsafe: float | str | None = option("--max-punsafe", None, f"keep rows with punsafe < this ('{OFF}': "
                                             "filter off)", parse=_threshold("--max-punsafe"), group="filters")
    max_pwatermark: float | str | None = option(
        "--max-pwatermark", None, f"keep rows with pwatermark < this ('{OFF}': filter off)",
        parse=_threshold("--max-pwatermark"), group="filters")

    def apply(self, base: Filters, spec: "DatasetSpec | None" = None) -> Filters:
        """``base`` with the given overrides; ``nsfw=()`` (--nsfw all) lifts the NSFW filter, ``none`` (OFF) lifts
        that one filter.  NSFW tags are checked against the spec's known tags (any spec's when there is none)."""
        self.check_nsfw(spec)
        f = base.replace(nsfw=self.nsfw, min_similarity=self.min_similarity, max_punsafe=self.max_punsafe,
                         max_pwatermark=self.max_pwatermark)
        off = {k.field: None for k in FILTER_KINDS if getattr(f, k.field) in (OFF, ())}
        return dataclasses.replace(f, **off) if off else f

    def check_nsfw(self, spec: "DatasetSpec | None") -> None:
        if not isinstance(self.nsfw, tuple) or not self.nsfw:
            return
        known = spec.nsfw_tags if spec is not None else tuple(dict.fromkeys(t for s in SPECS.values()
                                                                            for t in s.nsfw_tags))
        if not known:
            raise UsageError(f"--nsfw: dataset {spec.name!r} has no NSFW tag column", where="--nsfw",
                             fix="leave out --nsfw (see `laionprep datasets -v` for the columns)")
        unknown = [t for t in self.nsfw if t not in known]
        if unknown:
            raise UsageError(f"--nsfw {','.join(self.nsfw)}: {', '.join(map(repr, unknown))} is not an NSFW tag"
                             + (f" of {spec.name}" if spec else ""), where="--nsfw",
                             fix=f"known tags: {', '.join(known)} (case-insensitive), or 'all' / '{OFF}'")


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
    # other spellings accepted by --dataset (case and '_'/'-' never matter): names the releases had before
    aliases: tuple[str, ...] = ()
    # the specs whose column sets this name reads, tried in order against the first metadata file's columns
    # (``for_columns``): a public release whose column set changed (LAION -> Re-LAION) keeps its name
    shapes: tuple[str, ...] = ()
    # columns (case-insensitive) that identify this spec's column set when another spec lists it in ``shapes``
    signature: tuple[str, ...] = ()
    # the column of face boxes [x0, y0, x1, y1] in [0, 1] (--blur-faces), and whether blurring is on by default
    bbox_column: str | None = None
    blur_faces: bool = False

    @property
    def hub_repo(self) -> str | None:
        prefix = "hf://datasets/"
        return self.metadata_url[len(prefix):] if self.metadata_url.startswith(prefix) else None

    def column(self, name: str) -> Column | None:
        for c in self.extra_columns:
            if c.name == name:
                return c
        return None

    @property
    def nsfw_tags(self) -> tuple[str, ...]:
        """The tags the NSFW column declares (empty: the spec has no NSFW column)."""
        c = self.column("NSFW")
        return c.values if c else ()


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
    Column("NSFW", "str", description="CLIP-based NSFW tag: UNLIKELY, UNSURE or NSFW",
           values=("UNLIKELY", "UNSURE", "NSFW")),
    Column("similarity", "float", description="CLIP ViT-B/32 image-text cosine similarity"),
    Column("LICENSE", "str", description="license tag found on the page, '?' when unknown"),
)
_RELAION_COLUMNS = (
    Column("similarity", "float", description="CLIP ViT-B/32 image-text cosine similarity"),
    Column("punsafe", "float", description="probability the image is unsafe (LAION safety classifier)"),
    Column("pwatermark", "float", description="probability the image carries a watermark"),
)
_DATACOMP_COLUMNS = (
    Column("uid", "str", description="DataComp sample id (hex)"),
    Column("clip_b32_similarity_score", "float", description="OpenAI CLIP ViT-B/32 similarity"),
    Column("clip_l14_similarity_score", "float", description="OpenAI CLIP ViT-L/14 similarity"),
    Column("sha256", "str", description="sha256 of the original image bytes (checked by validate)",
           check="img2dataset's sha256 check of the downloaded bytes (a mismatch fails as hash mismatch)"),
    Column("face_bboxes", "json", description="face boxes [x0,y0,x1,y1] normalised to [0,1] (JSON text); "
           "--blur-faces blurs them", check="--blur-faces (DataComp's face blurring)"),
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
        bbox_column="face_bboxes",
        blur_faces=True,  # as DataComp's own download_upstream.py (--skip_bbox_blurring turns it off there)
    )


# Default filters.  LAION-400M was published with NSFW tags and filtered at ViT-B/32 similarity 0.3; LAION-2B-en at
# 0.28.  Re-LAION (2024) has no NSFW tag column but the punsafe / pwatermark scores.  Re-LAION multi and nolang were
# CLIP-filtered by LAION with thresholds of their own (multilingual captions): no similarity default is re-applied.
_LAION400M_FILTERS = Filters(nsfw=("UNLIKELY", "UNSURE"), min_similarity=0.3)
_RELAION400M_FILTERS = Filters(min_similarity=0.3, max_punsafe=0.5)
_LAION2B_FILTERS = Filters(nsfw=("UNLIKELY", "UNSURE"), min_similarity=0.28)
_RELAION_EN_FILTERS = Filters(min_similarity=0.28, max_punsafe=0.5, max_pwatermark=0.8)
_RELAION_OTHER_FILTERS = Filters(max_punsafe=0.5, max_pwatermark=0.8)
_RELAION_HOME = "https://laion.ai/blog/relaion-5b/"
_SAFE = ("research-safe: known CSAM/NCII links removed and NSFW-flagged samples left out by LAION")
_RESEARCH = "research: known CSAM/NCII links removed (2024)"


def _relaion(name: str, repo: str, what: str, rows: str, filters: Filters, shapes: tuple[str, ...] = (),
             aliases: tuple[str, ...] = ()) -> DatasetSpec:
    return DatasetSpec(
        name=name, description=f"Re-LAION {what}", metadata_url=f"hf://datasets/laion/{repo}",
        file_pattern="**/*.parquet", url_candidates=_URL, caption_candidates=_CAPTION, extra_columns=_RELAION_COLUMNS,
        default_filters=filters, similarity_column="similarity", approx_rows=rows, gated=True,
        homepage=_RELAION_HOME, citation=_LAION_CITATION, signature=("punsafe",), shapes=shapes, aliases=aliases)


SPECS: Mapping[str, DatasetSpec] = {
    s.name: s
    for s in [
        DatasetSpec(
            name="laion400m",
            description="LAION-400M: CLIP-filtered English image-text pairs (2021; withdrawn Dec 2023, the Hub "
                        "location now serves Re-LAION-400M: read with relaion400m's columns when it has them)",
            metadata_url="hf://datasets/laion/laion400m",
            file_pattern="**/*.parquet",
            url_candidates=_URL,
            caption_candidates=_CAPTION,
            extra_columns=_LAION400M_COLUMNS,
            default_filters=_LAION400M_FILTERS,
            similarity_column="similarity",
            approx_rows="413M",
            gated=True,
            homepage="https://laion.ai/blog/laion-400-open-dataset/",
            citation=_LAION400M_CITATION,
            aliases=("laion-400m",),
            signature=("NSFW",),
            shapes=("laion400m", "relaion400m"),
        ),
        _relaion("relaion400m", "relaion400m", "400M: LAION-400M with known CSAM/NCII links removed (2024); "
                 "the NSFW tag column of the original, when present, is read as laion400m", "~400M",
                 _RELAION400M_FILTERS, shapes=("relaion400m", "laion400m")),
        DatasetSpec(
            name="laion2b-en",
            description="LAION-2B-en: English subset of LAION-5B (2022; withdrawn Dec 2023, the Hub location now "
                        "opens Re-LAION-2B-en research-safe: read with its columns when it has them)",
            metadata_url="hf://datasets/laion/laion2B-en",
            file_pattern="**/*.parquet",
            url_candidates=_URL,
            caption_candidates=_CAPTION,
            extra_columns=_LAION400M_COLUMNS,  # URL, TEXT, WIDTH, HEIGHT, similarity, NSFW, LICENSE
            default_filters=_LAION2B_FILTERS,
            similarity_column="similarity",
            approx_rows="2.32B",
            gated=True,
            homepage="https://laion.ai/blog/laion-5b/",
            citation=_LAION_CITATION,
            aliases=("laion-2b-en",),
            signature=("NSFW",),
            # punsafe first: a copy of laion2B-en-joined (punsafe, pwatermark) keeps the filters it always had
            shapes=("relaion2b-en-research-safe", "laion2b-en"),
        ),
        _relaion("relaion2b-en-research", "relaion2B-en-research", f"2B-en {_RESEARCH}", "2.16B",
                 _RELAION_EN_FILTERS),
        _relaion("relaion2b-en-research-safe", "relaion2B-en-research-safe", f"2B-en {_SAFE}", "2.1B",
                 _RELAION_EN_FILTERS),
        _relaion("relaion2b-multi-research", "relaion2B-multi-research", f"2B-multi {_RESEARCH}", "2.13B",
                 _RELAION_OTHER_FILTERS),
        _relaion("relaion2b-multi-research-safe", "relaion2B-multi-research-safe", f"2B-multi {_SAFE}", "2.06B",
                 _RELAION_OTHER_FILTERS),
        _relaion("relaion1b-nolang-research", "relaion1B-nolang-research", f"1B-nolang {_RESEARCH}", "1.23B",
                 _RELAION_OTHER_FILTERS),
        # the Hub spells this one with a lower-case b
        _relaion("relaion1b-nolang-research-safe", "relaion1b-nolang-research-safe", f"1B-nolang {_SAFE}", "1.19B",
                 _RELAION_OTHER_FILTERS),
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
            default_filters=_LAION400M_FILTERS,
            similarity_column="similarity",
            approx_rows="~3k",
        ),
    ]
}


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-")


_BY_NAME = {_norm(n): s.name for s in SPECS.values() for n in (s.name, *s.aliases)}


def get_spec(name: str) -> DatasetSpec:
    """The spec called ``name``: its name or an alias, in any case, ``_`` and ``-`` alike (``relaion2B-en-research``
    as the Hub spells it, ``datacomp-1b``)."""
    try:
        return SPECS[name] if name in SPECS else SPECS[_BY_NAME[_norm(name)]]
    except KeyError:
        raise UsageError(
            f"unknown dataset {name!r}",
            where="--dataset",
            fix="use one of: " + ", ".join(SPECS) + " (see `laionprep datasets`)",
        ) from None


def for_columns(spec: DatasetSpec, names: Sequence[str]) -> DatasetSpec:
    """The spec whose column set the metadata has: the first of ``spec.shapes`` whose signature columns are all in
    ``names`` (a file's columns, case-insensitive); ``spec`` itself when it has no shapes or none matches (its
    filters then name the missing column, see the prefilter)."""
    have = {n.lower() for n in names}
    for name in spec.shapes:
        cand = SPECS[name]
        if all(c.lower() in have for c in cand.signature):
            return cand
    return spec


def dataset_of(manifest: dict) -> str | None:
    """The spec that reads the folder of ``manifest``: its ``dataset``, re-read by the columns the folder carries
    (``stages.prefilter.columns`` of a download, ``stages.reshard.schema`` of a reshard) when that spec reads several
    column sets: a ``laion2b-en`` download made before the specs split (punsafe, pwatermark) is read as
    ``relaion2b-en-research-safe``, whose columns it has."""
    name = next((d["dataset"] for d in (manifest, manifest.get("parameters") or {}, manifest.get("source") or {})
                 if isinstance(d, dict) and isinstance(d.get("dataset"), str)), None)
    if name is None or _norm(name) not in _BY_NAME:
        return name
    spec = SPECS[_BY_NAME[_norm(name)]]
    st = manifest.get("stages") or {}
    carried = (st.get("prefilter") or {}).get("columns") or (st.get("reshard") or {}).get("schema")
    return for_columns(spec, list(carried)).name if spec.shapes and carried else spec.name


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
