"""The dataset card: ``README.md`` with a summary, filter statistics and pictures.

Pictures (under ``card/``): ``similarity.png`` (histograms of each candidate's
similarity to its target identity and to its class centre, accepted against
rejected) and ``identities.png`` (a contact sheet: one row per identity, its
first accepted aligned crops). Rebuilt any time by ``synthface card OUT``.
"""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from synthface.errors import InputDataError
from synthface.shards.manifest import CARD_FILE, DATASET_FILE, read_dataset_manifest
from synthface.shards.storage import Output

CARD_DIR = "card"
SIM_PNG = f"{CARD_DIR}/similarity.png"
SHEET_PNG = f"{CARD_DIR}/identities.png"


def read_candidates(output: Output, dataset: dict) -> pa.Table:
    tables = []
    for shard in dataset.get("shards", []):
        stem = shard["name"][: -len(".tar")]
        try:
            tables.append(pq.read_table(io.BytesIO(output.read_bytes(f"{stem}.parquet"))))
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
        try:
            with tarfile.open(fileobj=io.BytesIO(output.read_bytes(shard["name"])), mode="r:") as tar:
                for member in tar:
                    key, _, ext = member.name.partition(".")
                    if ext != "jpg":
                        continue
                    identity = int(key.split("_")[0])
                    if identity not in per_id and len(per_id) >= rows:
                        continue
                    crops = per_id.setdefault(identity, [])
                    if len(crops) < cols:
                        crops.append(Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB"))
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            raise InputDataError(
                f"{output.url_of(shard['name'])}: unreadable ({exc}); `synthface verify` lists what is damaged"
            ) from None
    if not per_id:
        return None
    cell, label_w = 112, 70
    width = max(len(v) for v in per_id.values())
    sheet = Image.new("RGB", (label_w + width * cell, len(per_id) * cell), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (identity, crops) in enumerate(sorted(per_id.items())):
        draw.text((6, r * cell + cell // 2 - 6), f"id {identity}", fill="black")
        for c, crop in enumerate(crops):
            sheet.paste(crop.resize((cell, cell)), (label_w + c * cell, r * cell))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return buf.getvalue()


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


def card_text(dataset: dict, candidates: pa.Table, has_sim: bool, has_sheet: bool, location: str = ".") -> str:
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
        ("images per identity (generated)", str(run.get("images_per_id", "-"))),
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
    filt = cfg.get("filter", {})
    if filt:
        out += ["Filter settings: " + ", ".join(f"`{k}={v}`" for k, v in filt.items()), ""]
    if has_sim:
        out += ["### Similarity", "", f"![similarity histograms]({SIM_PNG})", ""]
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
    out += terms_sections(dataset)
    return "\n".join(out)


def write_card(out: str | Output) -> str:
    """(Re)build README.md and its pictures from dataset.json and the shards."""
    output = out if isinstance(out, Output) else Output(out)
    if not output.exists(DATASET_FILE):
        raise InputDataError(f"{output.url_of(DATASET_FILE)} not found: run `synthface generate` first")
    dataset = read_dataset_manifest(output)
    candidates = read_candidates(output, dataset)
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
    text = card_text(dataset, candidates, sim is not None, sheet is not None, location=output.url_of("").rstrip("/"))
    output.write_bytes(CARD_FILE, text.encode("utf-8"))
    return output.url_of(CARD_FILE)
