"""Measuring the filter on labelled real photos: how its defaults are justified.

Two measurements, both on embeddings of labelled images (one per image):

- :func:`pair_stats`: cosine similarity of labelled pairs (same / different
  person): AUC, the best-accuracy threshold range, and accuracy at a given
  threshold. This is what tau_target and tau_inter are read from.
- :func:`candidate_set_stats`: the filter itself on candidate sets built from
  real photos, as a generated class would look: all images of one person
  plus one image of another person (the impostor), optionally with a
  held-out image of the person as the target. Counts how many same-person
  images are accepted and how many impostors are rejected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthface.filtering.config import FilterConfig
from synthface.filtering.identity_filter import IdentityFilter


def pair_stats(sims: np.ndarray, same: np.ndarray, threshold: float | None = None) -> dict:
    """Separation of same/different-person similarities; accuracy at ``threshold`` if given."""
    from sklearn.metrics import roc_auc_score

    sims, same = np.asarray(sims, np.float64), np.asarray(same, bool)
    cuts = np.unique(np.concatenate([sims, [sims.min() - 1e-6, sims.max() + 1e-6]]))
    accs = np.array([((sims >= t) == same).mean() for t in cuts])
    best = accs.max()
    # thresholds t in (lo, hi] give the best accuracy ("same" means sim >= t)
    best_idx = np.flatnonzero(accs == best)
    lo = float(cuts[best_idx[0] - 1]) if best_idx[0] > 0 else float(cuts[0])
    hi = float(cuts[best_idx[-1]])
    out = {
        "pairs": int(len(sims)),
        "same": int(same.sum()),
        "auc": float(roc_auc_score(same, sims)) if 0 < same.sum() < len(same) else float("nan"),
        "best_accuracy": float(best),
        "best_threshold_range": [round(lo, 4), round(hi, 4)],
        "same_min": float(sims[same].min()) if same.any() else float("nan"),
        "same_p05": float(np.percentile(sims[same], 5)) if same.any() else float("nan"),
        "diff_max": float(sims[~same].max()) if (~same).any() else float("nan"),
        "diff_p95": float(np.percentile(sims[~same], 95)) if (~same).any() else float("nan"),
    }
    if threshold is not None:
        out["threshold"] = float(threshold)
        out["accuracy_at_threshold"] = float(((sims >= threshold) == same).mean())
    return out


def _rounded(x: float) -> float | None:
    return None if np.isnan(x) else round(float(x), 4)


@dataclass
class CandidateSetStats:
    sets: int
    same_total: int
    same_accepted: int
    same_rejected_reasons: dict
    impostors_total: int
    impostors_rejected: int
    impostor_accepted_examples: list
    same_sim_centre_min: float = float("nan")  # lowest similarity of a same-person image to its centre
    impostor_sim_centre_max: float = float("nan")  # highest similarity of an impostor to that centre
    same_sim_target_min: float = float("nan")
    impostor_sim_target_max: float = float("nan")

    @property
    def same_acceptance(self) -> float:
        return self.same_accepted / max(1, self.same_total)

    @property
    def impostor_rejection(self) -> float:
        return self.impostors_rejected / max(1, self.impostors_total)

    @property
    def accuracy(self) -> float:
        return (self.same_accepted + self.impostors_rejected) / max(1, self.same_total + self.impostors_total)

    def as_dict(self) -> dict:
        return {
            "sets": self.sets,
            "same_accepted": f"{self.same_accepted}/{self.same_total}",
            "same_acceptance": round(self.same_acceptance, 4),
            "same_rejected_reasons": self.same_rejected_reasons,
            "impostors_rejected": f"{self.impostors_rejected}/{self.impostors_total}",
            "impostor_rejection": round(self.impostor_rejection, 4),
            "accuracy": round(self.accuracy, 4),
            "same_sim_centre_min": _rounded(self.same_sim_centre_min),
            "impostor_sim_centre_max": _rounded(self.impostor_sim_centre_max),
            "same_sim_target_min": _rounded(self.same_sim_target_min),
            "impostor_sim_target_max": _rounded(self.impostor_sim_target_max),
        }


def candidate_set_stats(
    results: list, labels, cfg: FilterConfig | None = None, with_target: bool = False, min_person_images: int = 3
) -> CandidateSetStats:
    """Run the filter on every (person, impostor image) candidate set.

    ``results``: one FaceResult per labelled image; ``labels``: person per image.
    With ``with_target``, each of the person's images in turn is held out as
    the target identity and the rest (plus the impostor) are the candidates.
    """
    labels = np.asarray(labels)
    id_filter = IdentityFilter(cfg or FilterConfig())
    same_total = same_acc = imp_total = imp_rej = sets = 0
    reasons: dict[str, int] = {}
    examples: list = []
    sims = {"same_centre": [], "imp_centre": [], "same_target": [], "imp_target": []}
    for person in np.unique(labels):
        own = np.flatnonzero(labels == person)
        if len(own) < min_person_images:
            continue
        impostors = np.flatnonzero(labels != person)
        targets = own if with_target else [None]
        for t in targets:
            members = [i for i in own if i != t]
            target = None
            if t is not None:
                if results[t].embedding is None:
                    continue
                target = results[t].embedding
            for x in impostors:
                decision = id_filter.filter_class(target, [results[i] for i in members] + [results[x]])
                sets += 1
                for who, d in [("same", d) for d in decision.images[:-1]] + [("imp", decision.images[-1])]:
                    if d.sim_centre is not None:
                        sims[who + "_centre"].append(d.sim_centre)
                    if d.sim_target is not None:
                        sims[who + "_target"].append(d.sim_target)
                for i, d in zip(members, decision.images):
                    same_total += 1
                    if d.accepted:
                        same_acc += 1
                    else:
                        reasons[d.reason] = reasons.get(d.reason, 0) + 1
                imp_total += 1
                if decision.images[-1].accepted:
                    if len(examples) < 10:
                        examples.append((int(person), int(x), decision.images[-1].sim_centre, decision.images[-1].sim_target))
                else:
                    imp_rej += 1
    def extreme(values, fn):
        return float(fn(values)) if values else float("nan")

    return CandidateSetStats(
        sets, same_total, same_acc, dict(sorted(reasons.items())), imp_total, imp_rej, examples,
        same_sim_centre_min=extreme(sims["same_centre"], min),
        impostor_sim_centre_max=extreme(sims["imp_centre"], max),
        same_sim_target_min=extreme(sims["same_target"], min),
        impostor_sim_target_max=extreme(sims["imp_target"], max),
    )


def centre_stats(embeddings: np.ndarray, labels, min_split_images: int = 4) -> dict:
    """What tau_inter is read from: the most similar pair of different people's class centres
    (mean of their images), and the least similar pair of centres of one person's images split
    in two halves (the duplicate a tau_inter check must catch)."""
    emb, labels = np.asarray(embeddings, np.float32), np.asarray(labels)

    def centre(rows):
        c = emb[rows].sum(axis=0)
        return c / np.linalg.norm(c)

    people = np.unique(labels)
    centres = np.stack([centre(np.flatnonzero(labels == p)) for p in people])
    sims = centres @ centres.T
    np.fill_diagonal(sims, -np.inf)
    halves = []
    for p in people:
        own = np.flatnonzero(labels == p)
        if len(own) >= min_split_images:
            halves.append(float(centre(own[::2]) @ centre(own[1::2])))
    return {
        "people": int(len(people)),
        "different_person_centre_max": round(float(sims.max()), 4) if len(people) > 1 else None,
        "same_person_split_centre_min": round(min(halves), 4) if halves else None,
        "people_split": len(halves),
    }
