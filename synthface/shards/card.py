"""The dataset card: ``README.md`` with a summary, filter statistics and pictures.

Pictures (under ``card/``): ``similarity.png`` (histograms of each candidate's
similarity to its target identity and to its class centre, accepted against
rejected), ``identities.png`` (a contact sheet: one row per identity, its
first accepted aligned crops), ``classes.png`` (per class: mean and spread of
its images' similarity to the class centre, acceptance), ``weakest.png``
(the weakest identities: accepted crops, then rejected candidates with their
reasons, from the thumbnails the parquet keeps when ``run.rejected_thumbnails``) and
``head_pose.png`` (the yaw histogram of the accepted images, from the 5-landmark
head-pose estimate).
Rebuilt any time by ``synthface card OUT``.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from synthface.errors import InputDataError
from synthface.imaging import contact_sheet
from synthface.shards.schema import SURPLUS_REASON
from synthface.shards.manifest import CARD_FILE, DATASET_FILE, read_dataset_manifest
from synthface.shards.storage import Output
from synthface.shards.writer import ALIGNED_SIZE

CARD_DIR = "card"
SIM_PNG = f"{CARD_DIR}/similarity.png"
SHEET_PNG = f"{CARD_DIR}/identities.png"
POSE_PNG = f"{CARD_DIR}/head_pose.png"
CLASSES_PNG = f"{CARD_DIR}/classes.png"
WEAKEST_PNG = f"{CARD_DIR}/weakest.png"
NUM_WEAKEST = 10
# the candidate columns the card's statistics read (not the thumbnails: those only for the weakest)
STAT_COLUMNS = ["id", "index", "accepted", "reason", "sim_target", "sim_centre", "class_kept", "class_reason", "yaw"]


def read_candidates(output: Output, dataset: dict, shards: list | None = None, columns: list | None = None) -> pa.Table:
    tables = []
    for shard in dataset.get("shards", []) if shards is None else shards:
        stem = shard["name"][: -len(".tar")]
        try:
            parquet = pq.ParquetFile(io.BytesIO(output.read_bytes(f"{stem}.parquet")))
            names = parquet.schema_arrow.names
            tables.append(parquet.read(columns=None if columns is None else [c for c in columns if c in names]))
        except (pa.ArrowException, OSError) as exc:
            raise InputDataError(
                f"{output.url_of(stem + '.parquet')}: unreadable ({str(exc).splitlines()[0][:300]}); "
                "`synthface verify` lists what is damaged"
            ) from None
    return pa.concat_tables(tables) if tables else pa.table({})


def _similarity_png(
    candidates: pa.Table, thresholds: dict[str, float | None], unused: frozenset[str] = frozenset()
) -> bytes | None:
    """Histograms per similarity column; a column in ``unused`` was measured but not a filter rule."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if candidates.num_rows == 0:
        return None
    accepted = np.asarray(candidates["accepted"].to_pylist(), dtype=bool)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    for ax, column, title in (
        (axes[0], "sim_target", "cosine to the target identity"),
        (axes[1], "sim_centre", "cosine to the class centre"),
    ):
        values = np.array([np.nan if v is None else v for v in candidates[column].to_pylist()], dtype=float)
        bins = np.linspace(-1, 1, 81)
        drawn = False
        for mask, label, color in ((accepted, "accepted", "tab:green"), (~accepted, "rejected", "tab:red")):
            v = values[mask & np.isfinite(values)]
            if len(v):
                ax.hist(v, bins=bins, alpha=0.6, label=f"{label} ({len(v)})", color=color)
                drawn = True
        if drawn and thresholds.get(column) is not None:
            ax.axvline(thresholds[column], color="black", linestyle="--", linewidth=1, label="threshold")
        if not drawn:
            ax.text(
                0.5, 0.5, "not measured\n(recognizer not in the bank's space)",
                ha="center", va="center", transform=ax.transAxes,
            )
        ax.set_title(title + ("\n(measured, not a rule: filter.use_target is false)" if column in unused else ""))
        ax.set_xlabel("cosine similarity")
        ax.set_ylabel("candidates")
        if drawn:
            ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def accepted_yaw(candidates: pa.Table) -> np.ndarray:
    """Yaw (degrees) of the accepted candidates that have one; empty for shards written before head pose."""
    if candidates.num_rows == 0 or "yaw" not in candidates.column_names:
        return np.zeros(0)
    accepted = np.asarray(candidates["accepted"].to_pylist(), dtype=bool)
    yaw = np.array([np.nan if v is None else v for v in candidates["yaw"].to_pylist()], dtype=float)
    return yaw[accepted & np.isfinite(yaw)]


def _yaw_png(yaw: np.ndarray) -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(yaw) == 0:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    ax.hist(yaw, bins=np.arange(-90, 91, 5), color="tab:blue")
    ax.set_xlabel("yaw (degrees; > 0: face turned to the image's right)")
    ax.set_ylabel("accepted images")
    ax.set_title(f"head yaw of the {len(yaw)} accepted images")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _shard_crops(output: Output, shard: dict, wanted: Callable[[int], bool]) -> Iterator[tuple[int, Image.Image]]:
    """(identity, decoded crop) for each accepted crop of a shard tar whose identity ``wanted``
    accepts at that moment (asked lazily, so the caller's counts so far decide); a damaged
    tar or crop is one InputDataError naming the shard."""
    try:
        with tarfile.open(fileobj=io.BytesIO(output.read_bytes(shard["name"])), mode="r:") as tar:
            for member in tar:
                key, _, ext = member.name.partition(".")
                if ext == "jpg" and wanted(identity := int(key.split("_")[0])):
                    yield identity, Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB")
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise InputDataError(
            f"{output.url_of(shard['name'])}: unreadable ({exc}); `synthface verify` lists what is damaged"
        ) from None


def _contact_sheet_png(output: Output, dataset: dict, rows: int = 8, cols: int = 8) -> bytes | None:
    """First accepted crops of the first ``rows`` non-empty identities."""
    per_id: dict[int, list[Image.Image]] = {}
    for shard in dataset.get("shards", []):
        # all images of an identity are in one shard (its shard job), so once a whole
        # shard has been read the identities found so far are complete
        if len(per_id) >= rows:
            break
        if shard["num_samples"] == 0:
            continue
        has_room = lambda i: (i in per_id or len(per_id) < rows) and len(per_id.get(i, ())) < cols  # noqa: E731
        for identity, crop in _shard_crops(output, shard, has_room):
            per_id.setdefault(identity, []).append(crop)
    if not per_id:
        return None
    identities = sorted(per_id)
    sheet = contact_sheet(
        [[np.asarray(crop) for crop in per_id[i]] for i in identities],
        row_labels=[f"id {i}" for i in identities],
        tile=ALIGNED_SIZE, pad=0, label_width=70, background=(255, 255, 255), text=(0, 0, 0), label_x=6,
    )
    buf = io.BytesIO()
    Image.fromarray(sheet).save(buf, format="PNG")
    return buf.getvalue()


def class_stats(candidates: pa.Table) -> dict[str, np.ndarray]:
    """Per identity (sorted by id): candidates, accepted (written), acceptance (share of its
    candidates that passed the filter: ``surplus`` ones count, they only came after the class
    was full), and the mean, spread (std) and minimum of its written images' cosine to the
    class centre (NaN without images)."""
    if candidates.num_rows == 0:
        return {}
    ids = candidates["id"].to_numpy()
    uniq, inv = np.unique(ids, return_inverse=True)
    accepted = np.asarray(candidates["accepted"].to_numpy(zero_copy_only=False), bool)
    sim = candidates["sim_centre"].to_numpy(zero_copy_only=False).astype(np.float64)  # null -> NaN
    n_cand = np.bincount(inv, minlength=len(uniq))
    n_acc = np.bincount(inv, weights=accepted, minlength=len(uniq)).astype(np.int64)
    surplus = np.asarray(pc.fill_null(pc.equal(candidates["reason"], SURPLUS_REASON), False).to_numpy(zero_copy_only=False), bool)
    n_passed = np.bincount(inv, weights=accepted | surplus, minlength=len(uniq))
    use = accepted & np.isfinite(sim)
    n_sim = np.bincount(inv[use], minlength=len(uniq))
    total = np.bincount(inv[use], weights=sim[use], minlength=len(uniq))
    total_sq = np.bincount(inv[use], weights=sim[use] ** 2, minlength=len(uniq))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n_sim > 0, total / n_sim, np.nan)
        std = np.where(n_sim > 0, np.sqrt(np.maximum(total_sq / n_sim - mean**2, 0.0)), np.nan)
    low = np.full(len(uniq), np.inf)
    np.minimum.at(low, inv[use], sim[use])
    # a class's outcome, the same on all its rows: "" = kept in full, "dropped: why", "flagged: why"
    first = candidates.select(["class_kept", "class_reason"]).take(pa.array(np.unique(inv, return_index=True)[1]))
    outcome = np.array(
        [("" if not why else f"{'flagged' if kept else 'dropped'}: {why}") for kept, why in
         zip(first["class_kept"].to_pylist(), first["class_reason"].to_pylist())],
        object,
    )
    return {
        "id": uniq, "candidates": n_cand, "accepted": n_acc, "acceptance": n_passed / np.maximum(n_cand, 1),
        "sim_mean": mean, "sim_std": std, "sim_min": np.where(np.isfinite(low), low, np.nan), "outcome": outcome,
    }


def weakest_ids(stats: dict[str, np.ndarray], k: int = NUM_WEAKEST) -> list[int]:
    """The ``k`` identities with the lowest acceptance by the filter; ties by the lowest mean
    similarity to their centre, then by id."""
    if not stats:
        return []
    mean = np.where(np.isnan(stats["sim_mean"]), -2.0, stats["sim_mean"])
    order = np.lexsort((stats["id"], mean, stats["acceptance"]))
    return [int(stats["id"][j]) for j in order[:k]]


def _classes_png(stats: dict[str, np.ndarray], tau_intra: float | None = None) -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not stats:
        return None
    has_sim = np.isfinite(stats["sim_mean"])
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), dpi=100)
    panels = (
        (axes[0], stats["sim_mean"][has_sim], 40, "mean cosine of its images to the class centre"),
        (axes[1], stats["sim_std"][has_sim], 40, "spread (std) of that cosine within the class"),
        (axes[2], stats["acceptance"], np.linspace(0, 1, 41), "acceptance (passed the filter / candidates)"),
    )
    for ax, values, bins, title in panels:
        if len(values):
            ax.hist(values, bins=bins, color="tab:blue", alpha=0.8)
        else:
            ax.text(0.5, 0.5, "no accepted images", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("identities")
    if tau_intra is not None and has_sim.any():
        axes[0].axvline(tau_intra, color="black", linestyle="--", linewidth=1, label="tau_intra")
        axes[0].legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _shard_of(dataset: dict, identity: int) -> dict | None:
    for shard in dataset.get("shards", []):
        lo, hi = shard.get("ids", (0, 0))
        if lo <= identity < hi:
            return shard
    return None


def _weakest_png(output: Output, dataset: dict, ids: list[int], max_accepted: int = 4, max_rejected: int = 8) -> bytes | None:
    """One row per identity: up to ``max_accepted`` accepted crops (green frame, from the tar),
    then up to ``max_rejected`` rejected candidates (red frame, the parquet's thumbnails; grey
    when none was kept, e.g. no face found) with their reasons."""
    if not ids:
        return None
    cell, label_w, text_h = 64, 70, 14
    shards = {s["name"]: s for s in (_shard_of(dataset, i) for i in ids) if s is not None}
    wanted = set(ids)
    accepted: dict[int, list[Image.Image]] = {}
    rejected: dict[int, list[tuple[Image.Image | None, str]]] = {}
    for shard in shards.values():
        table = read_candidates(output, dataset, [shard], ["id", "index", "accepted", "reason", "thumb"])
        rows = table.filter(pc.is_in(table["id"], pa.array(sorted(wanted), pa.int64()))).to_pylist()
        # the filter's rejections first; surplus images (they passed) only where room is left
        for row in sorted((r for r in rows if not r["accepted"]), key=lambda r: (r["reason"] == SURPLUS_REASON, r["index"])):
            got = rejected.setdefault(row["id"], [])
            if len(got) < max_rejected:
                thumb = row.get("thumb")
                got.append((Image.open(io.BytesIO(thumb)).convert("RGB") if thumb else None, row["reason"] or ""))
        if not shard["num_samples"]:
            continue
        has_room = lambda i: i in wanted and len(accepted.get(i, ())) < max_accepted  # noqa: E731
        for identity, crop in _shard_crops(output, shard, has_room):
            accepted.setdefault(identity, []).append(crop)
    width = label_w + (max_accepted + max_rejected) * cell + 10
    row_h = cell + text_h
    sheet = Image.new("RGB", (width, len(ids) * row_h), "white")
    draw = ImageDraw.Draw(sheet)
    for r, identity in enumerate(ids):
        y = r * row_h
        draw.text((6, y + cell // 2 - 6), f"id {identity}", fill="black")
        x = label_w
        for crop in accepted.get(identity, []):
            sheet.paste(crop.resize((cell - 4, cell - 4)), (x + 2, y + 2))
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), outline="green", width=2)
            x += cell
        x = label_w + max_accepted * cell + 10
        for thumb, reason in rejected.get(identity, []):
            if thumb is None:
                draw.rectangle((x + 2, y + 2, x + cell - 3, y + cell - 3), fill=(200, 200, 200))
            else:
                sheet.paste(thumb.resize((cell - 4, cell - 4)), (x + 2, y + 2))
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), outline="red", width=2)
            draw.text((x + 1, y + cell), reason.replace("low_", "")[:11], fill="black")
            x += cell
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return buf.getvalue()


def _fmt(x: float, spec: str = ".3f") -> str:
    return "-" if x is None or not np.isfinite(x) else format(x, spec)


def _classes_text(dataset: dict, stats: dict[str, np.ndarray], candidates: pa.Table, has_png: bool, has_weakest: bool) -> list[str]:
    if not stats:
        return []
    out = ["## Classes", ""]
    sizes = [s.get("images_per_id") for s in dataset.get("shards", []) if s.get("images_per_id")]
    outcomes = {}
    for o in stats["outcome"]:
        outcomes[o or "kept in full"] = outcomes.get(o or "kept in full", 0) + 1
    out += [
        "Every identity ends with exactly its class size of accepted images "
        f"({', '.join(str(n) for n in sorted(set(sizes))) or '-'}), unless it spent its candidate cap "
        "short of it (`short_class`: dropped or, with `run.short_classes: flag`, kept and flagged) or the "
        "filter dropped it. Candidates beyond the class size that passed the filter are `surplus`.",
        "",
        _table([(k, str(v)) for k, v in sorted(outcomes.items(), key=lambda kv: -kv[1])], ("identities", "count")),
        "",
    ]
    has = np.isfinite(stats["sim_mean"])

    def q(values):
        v = values[np.isfinite(values)]
        return ("-", "-", "-") if not len(v) else tuple(_fmt(x) for x in np.percentile(v, [5, 50, 95]))

    rows = [
        ("mean cosine to the class centre", *q(stats["sim_mean"])),
        ("spread (std) of that cosine", *q(stats["sim_std"])),
        ("lowest cosine in the class", *q(stats["sim_min"])),
        ("acceptance (passed the filter / candidates)", *q(stats["acceptance"].astype(float))),
        ("candidates per identity", *(str(int(x)) for x in np.percentile(stats["candidates"], [5, 50, 95]))),
    ]
    out += [f"Per identity ({int(has.sum())} with accepted images), 5th percentile / median / 95th percentile:", ""]
    out += ["| | p5 | median | p95 |", "| --- | ---: | ---: | ---: |"] + [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    out += [""]
    if has_png:
        out += [f"![per-class similarity and acceptance]({CLASSES_PNG})", ""]
    weak = weakest_ids(stats)
    if weak:
        pos = {int(i): j for j, i in enumerate(stats["id"])}
        reasons: dict[int, dict[str, int]] = {i: {} for i in weak}
        mask = pc.is_in(candidates["id"], pa.array(weak, pa.int64()))
        for row in candidates.filter(mask).select(["id", "accepted", "reason"]).to_pylist():
            if not row["accepted"]:
                r = reasons[row["id"]]
                r[row["reason"]] = r.get(row["reason"], 0) + 1
        out += [
            f"### The {len(weak)} weakest identities",
            "",
            "Lowest acceptance by the filter first (then lowest mean similarity to the centre); every "
            "candidate not written counted by reason (`surplus` last: those passed the filter).",
            "",
            "| id | outcome | written / candidates | acceptance | mean cos | lowest cos | not written: reason x count |",
            "| ---: | --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for i in weak:
            j = pos[i]
            why = ", ".join(f"`{r}` x{n}" for r, n in sorted(reasons[i].items(), key=lambda kv: (kv[0] == SURPLUS_REASON, -kv[1])))
            outcome = stats["outcome"][j] or "kept"
            out.append(
                f"| {i} | {outcome} | {stats['accepted'][j]} / {stats['candidates'][j]} | {stats['acceptance'][j]:.0%} | "
                f"{_fmt(stats['sim_mean'][j])} | {_fmt(stats['sim_min'][j])} | {why or '-'} |"
            )
        out += [""]
        if has_weakest:
            out += [
                "Each row: written crops (green), then candidates not written (red) with their reason, the "
                "filter's rejections first; grey where no face was found (or `run.rejected_thumbnails` was "
                "off), so there is no crop to show.",
                "",
                f"![weakest identities]({WEAKEST_PNG})",
                "",
            ]
    return out


def _table(rows: list[tuple[str, str]], header: tuple[str, str]) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "| --- | ---: |"]
    lines += [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(lines)


SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"))


def size_category(num_images: int) -> str:
    """The Hub's size_categories bucket for this many examples."""
    return next((name for limit, name in SIZE_CATEGORIES if num_images < limit), "n>1T")


def front_matter(dataset: dict) -> str:
    """The YAML block Hugging Face reads from a dataset card: licence, task, tags, size, and
    the data files, so that ``load_dataset(OUT)`` and the Hub viewer read the shards only."""
    import yaml

    meta = {
        "pretty_name": "synthface synthetic face-recognition dataset",
        "license": "other",
        "license_name": "synthface-generated",
        "license_details": "Generated images; terms of the generating models apply (see the Licence section).",
        "task_categories": ["image-classification"],
        "tags": ["synthetic", "face-recognition", "webdataset", "arc2face", "synthface"],
        "size_categories": [size_category(int(dataset.get("num_images", 0)))],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "shard-*.tar"}]}],
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def terms_sections(dataset: dict) -> list[str]:
    """Licence, intended use, limitations, privacy, settings and citation: what a reader must
    know before using generated faces."""
    import json

    cfg = dataset.get("config", {})
    identity = cfg.get("identity", {})
    screen = identity.get("screen", {}) if isinstance(identity.get("screen"), dict) else {}
    novelty = screen.get("novelty_gallery")
    out = [
        "## Licence and terms",
        "",
        "The images were generated; their use is bound by the licences of the models that made them. "
        "Check each before any use, commercial use in particular:",
        "",
        "- Stable Diffusion 1.5 (VAE, tokenizer, scheduler, and the base Arc2Face was fine-tuned from): "
        "CreativeML OpenRAIL-M, whose use restrictions pass on to derived outputs.",
        "- Arc2Face (UNet and ID encoder, FoivosPar/Arc2Face): see its model card for the current licence; "
        "it was trained on a restored WebFace42M.",
        "- insightface models (the SCRFD detector and the ArcFace recognizer that defines the identity "
        "space, antelopev2): released for non-commercial research only.",
        "",
        "## Intended use",
        "",
        "Training and evaluating face-recognition models for research, in place of or beside datasets of "
        "real people collected without consent. Not for identifying, profiling or surveilling people.",
        "",
        "## Limitations",
        "",
        "- The identities are points sampled on the recognizer's hypersphere; how well they cover human "
        "variation (age, ethnicity, pose, lighting, occlusion) follows the generator's training data, "
        "not a designed demographic balance.",
        "- The filter keeps images by a recognizer's similarity; its errors and biases shape which images "
        "and identities were kept.",
        "- Images are 112x112 aligned crops meant for face recognition, not general face imagery.",
        "",
        "## Privacy",
        "",
        "No photo of a real person is in this dataset; identities are sampled, not copied. A generated "
        "identity can still resemble a real person. "
        + (
            f"The bank was screened against a gallery of real identities (`{novelty}`): identities above "
            f"cosine `{screen.get('max_gallery_similarity')}` to any of them were rejected and redrawn."
            if novelty
            else "**No gallery screen was used** (`identity.screen.novelty_gallery` unset): identities were not "
            "checked against real people's embeddings."
        ),
        "",
        "## Generation settings",
        "",
        "```json",
        json.dumps({k: cfg.get(k) for k in ("seed", "identity", "generation", "faces", "filter", "run") if k in cfg},
                   indent=2, sort_keys=True),
        "```",
        "",
        "## Citation",
        "",
        "```bibtex",
        "@inproceedings{paraperas2024arc2face,",
        "  title     = {Arc2Face: A Foundation Model for ID-Consistent Human Faces},",
        "  author    = {Paraperas Papantoniou, Foivos and Lattas, Alexandros and Moschoglou, Stylianos and "
        "Deng, Jiankang and Kainz, Bernhard and Zafeiriou, Stefanos},",
        "  booktitle = {European Conference on Computer Vision (ECCV)},",
        "  year      = {2024}",
        "}",
        "```",
        "",
    ]
    return out


def _class_size_text(run: dict) -> str:
    groups = run.get("groups")
    if groups:
        return " + ".join(f"{g['num_ids']} x {g.get('images_per_id') or run.get('images_per_id')}" for g in groups)
    return str(run.get("images_per_id", "-"))


def card_text(
    dataset: dict, candidates: pa.Table, has_sim: bool, has_sheet: bool, classes: list[str] | None = None,
    has_pose: bool = False, location: str = ".",
) -> str:
    """The card's Markdown; ``location``: where the shards are (for the loading snippets)."""
    cfg = dataset["config"]
    run = cfg.get("run", {})
    models = dataset.get("models", {})
    origin = models.get("origin", "unknown")
    n_img, n_cand = dataset["num_images"], dataset["num_candidates"]
    reasons = dataset.get("reasons", {})
    out = [front_matter(dataset), "# synthface dataset", ""]
    if origin == "tiny-random":
        rejected = n_cand - n_img
        out += [
            "> **The models of this run are tiny networks with random weights** (written by "
            "`synthface models init-tiny`), not Arc2Face, SCRFD or ArcFace. The images are not "
            "faces, the detector's boxes and landmarks and the recognizer's embeddings are "
            "arbitrary, and the filter thresholds of this config are set permissively so that "
            f"the pipeline runs end to end. The filter accepted {n_img} and rejected {rejected} "
            f"of {n_cand} candidates (reasons below) on that arbitrary signal. This dataset tests "
            "the plumbing only; it is useless for training. Real faces need the real weights "
            "(`synthface models download`) and a GPU.",
            "",
        ]
    elif origin != "download":
        out += [f"> Model folder origin: `{origin}` (not a `synthface models download` folder).", ""]
    if not dataset.get("complete", True):
        out += [f"> **Incomplete**: missing shards {', '.join(dataset.get('missing_shards', []))}.", ""]
    summary = [
        ("identities (classes, `cls` = identity id)", str(dataset["num_classes"])),
        ("identities with at least one image", str(dataset.get("num_classes_nonempty", "-"))),
        ("images (accepted)", str(n_img)),
        ("candidates generated", str(n_cand)),
        ("acceptance rate", f"{dataset.get('acceptance_rate', 0):.1%}"),
        ("images per identity (class size: accepted images)", _class_size_text(run)),
        ("candidates generated per image kept (GPU cost)", _fmt(dataset.get("candidates_per_image"), ".2f")),
        ("of the candidates, generated in top-up rounds", str(dataset.get("topup_candidates", "-"))),
        ("shards", str(len(dataset.get("shards", [])))),
        ("seed", str(dataset.get("seed"))),
        ("config hash", f"`{dataset.get('config_hash', '')[:16]}`"),
        ("model folder origin", f"`{origin}`"),
    ]
    out += ["## Summary", "", _table(summary, ("", "")), ""]
    out += ["## Filter", "", "Every generated candidate, and why it was kept or not (from the shards' parquet files):", ""]
    out += [_table([(f"`{r}`", f"{n} ({n / n_cand:.1%})" if n_cand else str(n)) for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])], ("outcome", "candidates")), ""]
    if dataset.get("class_reasons"):
        out += ["Whole identities dropped:", ""]
        out += [_table([(f"`{r}`", str(n)) for r, n in dataset["class_reasons"].items()], ("reason", "identities")), ""]
    if dataset.get("class_flags"):
        out += ["Identities kept but flagged (`class_flag` in their samples' json):", ""]
        out += [_table([(f"`{r}`", str(n)) for r, n in dataset["class_flags"].items()], ("flag", "identities")), ""]
    filt = cfg.get("filter", {})
    if filt:
        out += ["Filter settings: " + ", ".join(f"`{k}={v}`" for k, v in filt.items()), ""]
    if has_sim:
        out += ["### Similarity", "", f"![similarity histograms]({SIM_PNG})", ""]
    yaw = accepted_yaw(candidates)
    if len(yaw):
        p5, p50, p95 = np.percentile(yaw, [5, 50, 95])
        pose_rows = [
            ("accepted images with a head-pose estimate", str(len(yaw))),
            ("yaw 5th / 50th / 95th percentile", f"{p5:.1f} / {p50:.1f} / {p95:.1f} deg"),
            ("share with abs(yaw) > 30 deg", f"{np.mean(np.abs(yaw) > 30):.1%}"),
        ]
        gen = cfg.get("generation", {})
        controls = [f"`{k}.mode={gen[k].get('mode')}`" for k in ("expression", "pose") if gen.get(k, {}).get("mode", "off") != "off"]
        out += ["## Head pose", "", "Estimated from the 5 detected landmarks (a generic 3D face fitted with solvePnP).", ""]
        out += [_table(pose_rows, ("", "")), ""]
        out += [f"Controls of this run: {', '.join(controls) if controls else 'none (pose varies only through the seed and jitter)'}.", ""]
        if has_pose:
            out += [f"![yaw histogram]({POSE_PNG})", ""]
    out += classes or []
    if has_sheet:
        out += ["## Identities", "", "One row per identity: its first accepted aligned crops.", "", f"![identities]({SHEET_PNG})", ""]
    out += [
        "## Layout and loading",
        "",
        "`shard-NNNNNN.tar` (WebDataset): samples keyed `{id:07d}_{index:03d}` with `jpg` "
        "(aligned 112x112 RGB), `cls` (identity id) and `json` (seed, similarities, detector "
        "score, landmarks, generator settings). `shard-NNNNNN.parquet`: every candidate with its "
        "outcome; `shard-NNNNNN.json`: shard stats (the commit marker). `dataset.json`: the "
        "manifest; `sizes.json`: per-shard counts (open_clip); `wids-index.json`: wids index.",
        "",
        "```python",
        "import webdataset as wds",
        "ds = wds.WebDataset(%r, shardshuffle=False).decode(\"rgb8\").to_tuple(\"jpg\", \"cls\")"
        % f"{location.rstrip('/')}/shard-{{000000..{max(len(dataset.get('shards', [])) - 1, 0):06d}}}.tar",
        "",
        "from datasets import load_dataset  # reads this card's `configs`: the shards, nothing else",
        "hf = load_dataset(%r, split=\"train\")" % location,
        "```",
        "",
        "See docs/dataset.md of synthface for wids, S3 and the parquet files.",
        "",
    ]
    gen_models = models.get("info", {})
    if gen_models:
        out += ["## Models", "", "```json", __import__("json").dumps(gen_models, indent=2, sort_keys=True), "```", ""]
    files = models.get("files") or {}
    if files:
        how = models.get("verified")
        checked = f"checked against synthface-models.json ({how})" if how else "NOT verified (the folder had no synthface-models.json)"
        out += [
            f"{len(files)} model files, {checked}; {len(models.get('pinned') or [])} pinned to a known-good sha256. "
            "Their sha256 are in dataset.json (`models.files`).",
            "",
        ]
    out += terms_sections(dataset)
    return "\n".join(out)


def write_card(out: str | Output) -> str:
    """(Re)build README.md and its pictures from dataset.json and the shards."""
    output = out if isinstance(out, Output) else Output(out)
    if not output.exists(DATASET_FILE):
        raise InputDataError(f"{output.url_of(DATASET_FILE)} not found: run `synthface generate` first")
    dataset = read_dataset_manifest(output)
    candidates = read_candidates(output, dataset, columns=STAT_COLUMNS)
    filt = dataset.get("config", {}).get("filter", {})
    thresholds = {
        "sim_target": filt.get("tau_target") if filt.get("use_target", True) else None,
        "sim_centre": filt.get("tau_intra"),
    }
    unused = frozenset() if filt.get("use_target", True) else frozenset({"sim_target"})
    sim = _similarity_png(candidates, thresholds, unused)
    if sim is not None:
        output.write_bytes(SIM_PNG, sim)
    sheet = _contact_sheet_png(output, dataset)
    if sheet is not None:
        output.write_bytes(SHEET_PNG, sheet)
    pose = _yaw_png(accepted_yaw(candidates))
    if pose is not None:
        output.write_bytes(POSE_PNG, pose)
    per_class = class_stats(candidates)
    classes_png = _classes_png(per_class, filt.get("tau_intra"))
    if classes_png is not None:
        output.write_bytes(CLASSES_PNG, classes_png)
    weakest_png = _weakest_png(output, dataset, weakest_ids(per_class))
    if weakest_png is not None:
        output.write_bytes(WEAKEST_PNG, weakest_png)
    classes = _classes_text(dataset, per_class, candidates, classes_png is not None, weakest_png is not None)
    text = card_text(
        dataset, candidates, sim is not None, sheet is not None, classes, pose is not None,
        location=output.url_of("").rstrip("/"),
    )
    text += audit_section(output, dataset)
    output.write_bytes(CARD_FILE, text.encode("utf-8"))
    return output.url_of(CARD_FILE)


def _search_sentence(search: dict | None) -> str:
    """How the duplicate search ran, for the card (dataset.json finalise.search)."""
    if not search:
        return ""
    if search.get("method") == "sketch":
        return (
            f" The search used {search['bits']}-bit sign sketches with exact re-scoring: no false duplicate, and "
            f"a pair at or above tau_inter is missed with probability at most {search['miss_rate_bound']:g}."
        )
    return f" The search was {search.get('method')} (every pair of centres compared)."


def audit_section(output: Output, dataset: dict) -> str:
    """Duplicate identities and benchmark leakage: what finalising dropped (dataset.json) and
    the last `synthface audit` (audit.json, card/audit.png)."""
    from synthface.shards.manifest import AUDIT_FILE

    fin = dataset.get("finalise")
    audit = output.read_json(AUDIT_FILE) if output.exists(AUDIT_FILE) else None
    if not fin and not audit:
        return ""
    out = ["", "## Duplicates and leakage", ""]
    if fin:
        by_reason = fin.get("dropped_by_reason", {})
        out += [
            f"Finalising compared the class centres of all identities (`run.inter_class: {fin.get('inter_class')}`, "
            f"`tau_inter={fin.get('tau_inter')}`) and dropped {fin.get('num_dropped', 0)} identities "
            "after the shards were written: "
            + (", ".join(f"`{r}`: {n}" for r, n in by_reason.items()) or "none")
            + (f"; {len(fin['flagged'])} kept but flagged (`filter.inter_action: flag`)" if fin.get("flagged") else "")
            + "."
            + _search_sentence(fin.get("search")),
            "",
        ]
    if audit:
        rows = [
            (f"`{name}`", f"{s['faces']} faces; {s['identities_matched']} identities within the threshold "
             f"(matching {s['faces_matched']} faces); max cosine {s['max_similarity']}")
            for name, s in audit.get("sources", {}).items()
        ]
        out += [
            f"Leakage audit (`synthface audit`): {audit.get('identities_audited')} generated identities compared "
            f"by class centre with real faces, threshold cosine {audit.get('threshold')}"
            + (f"; the {len(audit['dropped'])} matched identities were dropped (`benchmark_leak`)" if audit.get("dropped") else "")
            + ".",
            "",
            _table(rows, ("source", "result")),
            "",
        ]
        if audit.get("picture"):
            out += [f"![closest pairs: generated identity | real face]({audit['picture']})", ""]
    return "\n".join(out)
