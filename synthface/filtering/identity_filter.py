"""The ID-similarity filter: which candidate images make a class, which classes stay.

Per image (in this order, the first failing check is the reason):
the analyzer found and embedded a face; its detector score is high enough;
no second face is nearly as large; it is similar enough to the target
identity (only when ``use_target`` and a target is given); it is similar
enough to its class centre.

The class centre is estimated from the class's own accepted images and
re-estimated until the accepted set stops changing. An image is compared
with the centre of the *other* accepted images (leave-one-out): with a few
images per class, letting an image vote for its own centre would pull an
impostor's similarity up by a large margin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthface.errors import ConfigError
from synthface.filtering.config import FilterConfig

INTER_CLASS_REASON = "inter_class_duplicate"


@dataclass
class ImageDecision:
    accepted: bool
    reason: str | None = None
    sim_target: float | None = None
    sim_centre: float | None = None


@dataclass
class ClassDecision:
    images: list[ImageDecision]
    kept: bool
    reason: str | None = None  # class_too_small when not kept
    centre: np.ndarray | None = None  # float32[D], unit norm, from the accepted images
    num_accepted: int = 0
    iterations: int = 0  # rounds the centre estimate took to settle


def _unit(v: np.ndarray) -> np.ndarray | None:
    n = float(np.linalg.norm(v))
    return None if n < 1e-12 else (v / n).astype(np.float32)


class IdentityFilter:
    def __init__(self, cfg: FilterConfig | None = None):
        self.cfg = cfg or FilterConfig()

    @property
    def drops_inter_duplicates(self) -> bool:
        """True when classes returned by :meth:`inter_class` are to be dropped, False when only flagged."""
        return self.cfg.inter_action == "drop"

    # -- per image ---------------------------------------------------------------------------
    def _face_reason(self, result) -> str | None:
        if not result.ok or result.embedding is None:
            return result.reason or "no_face"
        if result.det_score < self.cfg.det_score_min:
            return "low_det_score"
        if result.num_faces > 1 and result.second_face_ratio > self.cfg.max_second_face_ratio:
            return "multiple_faces"
        return None

    def _centre_sims(self, emb: np.ndarray, gram: np.ndarray, members: np.ndarray) -> np.ndarray:
        """Similarity of every row to the centre of ``members`` without itself (NaN without peers)."""
        n = len(emb)
        sims = np.full(n, np.nan, np.float64)
        member_idx = np.flatnonzero(members)
        if self.cfg.centre == "mean":
            total = emb[member_idx].sum(axis=0)
            for i in range(n):
                rest = total - emb[i] if members[i] else total
                peers = len(member_idx) - int(members[i])
                centre = _unit(rest) if peers > 0 else None
                if centre is not None:
                    sims[i] = float(emb[i] @ centre)
        else:  # medoid of the members other than i: the one most similar to the rest of them
            for i in range(n):
                peers = member_idx[member_idx != i]
                if len(peers) == 0:
                    continue
                sub = gram[np.ix_(peers, peers)]
                medoid = peers[int(np.argmax(sub.sum(axis=1)))]
                sims[i] = gram[i, medoid]
        return sims

    def _centre(self, emb: np.ndarray, gram: np.ndarray, members: np.ndarray) -> np.ndarray | None:
        idx = np.flatnonzero(members)
        if len(idx) == 0:
            return None
        if self.cfg.centre == "mean":
            return _unit(emb[idx].sum(axis=0))
        sub = gram[np.ix_(idx, idx)]
        return emb[idx[int(np.argmax(sub.sum(axis=1)))]].astype(np.float32)

    def target_applies(self, bank_dim: int, embedding_dim: int) -> bool:
        """The one rule for "is the bank's identity vector this filter's target?".

        It is when the recognizer's embeddings have the bank's width (one space); the
        similarity is then measured, and judged only with ``filter.use_target``. A filter
        told to judge by the target with embeddings of another width is a config error
        (the worker asks at start, before any shard; ``filter_class`` asks per class).
        """
        if bank_dim == embedding_dim:
            return True
        if self.cfg.use_target:
            raise ConfigError(
                f"'filter.use_target' is true but the recognizer gives {embedding_dim}-d embeddings and the "
                f"identities are {bank_dim}-d, so they are not one space; set filter.use_target: false"
            )
        return False

    def filter_class(self, target: np.ndarray | None, results: list) -> ClassDecision:
        """Decide on one identity's candidate images (``FaceResult``s, in order)."""
        cfg = self.cfg
        decisions = [ImageDecision(accepted=False) for _ in results]
        with_emb = [i for i, r in enumerate(results) if r.ok and r.embedding is not None]
        emb = np.stack([np.asarray(results[i].embedding, np.float32) for i in with_emb]) if with_emb else None

        if target is not None and emb is not None:
            target = np.asarray(target, np.float32).reshape(-1)
            if not self.target_applies(target.shape[0], emb.shape[1]):
                target = None  # another space, and not used: nothing to measure
        if target is not None and emb is not None:
            unit_target = _unit(target)
            sims = emb @ unit_target if unit_target is not None else np.full(len(with_emb), np.nan)
            for row, i in enumerate(with_emb):
                decisions[i].sim_target = float(sims[row])

        # face and target checks
        row_of = {i: row for row, i in enumerate(with_emb)}
        candidate = np.zeros(len(with_emb), bool)
        for i, result in enumerate(results):
            reason = self._face_reason(result)
            if reason is None and cfg.use_target and decisions[i].sim_target is not None:
                if decisions[i].sim_target < cfg.tau_target:
                    reason = "low_target_sim"
            decisions[i].reason = reason
            if reason is None:
                candidate[row_of[i]] = True

        # intra-class check against a re-estimated centre
        iterations = 0
        accepted = candidate.copy()
        centre = None
        if emb is not None:
            gram = emb @ emb.T
            members = candidate.copy()
            settled = False
            for iterations in range(1, cfg.max_iterations + 1):
                sims = self._centre_sims(emb, gram, members)
                # without peers there is no evidence against an image: it passes this check
                passes = candidate & (np.isnan(sims) | (sims >= cfg.tau_intra))
                if np.array_equal(passes, members):
                    settled = True
                    break
                members = passes
                if not members.any():  # no two candidates agree: nothing to build a centre from
                    settled = True
                    break
            if not settled:
                # Images still moving in and out after max_iterations: from here on only
                # remove. The set shrinks every round, so this ends, and then every accepted
                # image passes against the centre of the others (which is what is reported).
                while members.any():
                    sims = self._centre_sims(emb, gram, members)
                    passes = members & (np.isnan(sims) | (sims >= cfg.tau_intra))
                    if np.array_equal(passes, members):
                        break
                    members = passes
            accepted = members
            if accepted.any():
                sims = self._centre_sims(emb, gram, accepted)
            centre = self._centre(emb, gram, accepted)
            for row, i in enumerate(with_emb):
                decisions[i].sim_centre = None if np.isnan(sims[row]) else float(sims[row])
                if candidate[row]:
                    decisions[i].accepted = bool(accepted[row])
                    decisions[i].reason = None if accepted[row] else "low_intra_sim"

        num_accepted = sum(d.accepted for d in decisions)
        kept = num_accepted >= cfg.min_images
        return ClassDecision(
            images=decisions,
            kept=kept,
            reason=None if kept else "class_too_small",
            centre=centre,
            num_accepted=num_accepted,
            iterations=iterations,
        )

    # -- across classes --------------------------------------------------------------------------
    def inter_class_matches(self, ids, centres) -> dict[int, tuple[int, float]]:
        """{class id: (earlier class id it duplicates, similarity)} for classes whose centre is at
        least ``tau_inter`` similar to an earlier class that is itself not a duplicate."""
        ids = np.asarray(ids).reshape(-1)
        centres = np.asarray(centres, np.float32)
        if centres.ndim != 2 or len(centres) != len(ids):
            raise ValueError(f"expected centres [K,D] for K={len(ids)} ids, got {centres.shape}")
        if len(ids) < 2:
            return {}
        norms = np.linalg.norm(centres, axis=1, keepdims=True)
        unit = centres / np.maximum(norms, 1e-12)
        sims = unit @ unit.T
        order = np.argsort(ids, kind="stable")  # earlier id wins, whatever the order given
        survivors: list[int] = []
        matches: dict[int, tuple[int, float]] = {}
        for j in order:
            if survivors:
                best = max(survivors, key=lambda s: sims[j, s])
                if sims[j, best] >= self.cfg.tau_inter:
                    matches[int(ids[j])] = (int(ids[best]), float(sims[j, best]))
                    continue
            survivors.append(int(j))
        return matches

    def inter_class(self, ids, centres) -> dict[int, str]:
        """Classes too close to an earlier class: {class id: 'inter_class_duplicate'}. Whether they
        are dropped or kept flagged is ``filter.inter_action`` (see :attr:`drops_inter_duplicates`)."""
        return {cid: INTER_CLASS_REASON for cid in self.inter_class_matches(ids, centres)}
