"""Face verification on insightface ``.bin`` pair files (LFW, CFP-FP, AgeDB-30, ...).

A ``.bin`` is a pickle of ``(bins, issame)``: ``bins`` holds 2N encoded
images (pair members consecutive), as ``bytes`` or numpy uint8 arrays, and
``issame`` N booleans. Pickles can run code, so :func:`load_bin` uses an
unpickler that resolves only the numpy globals an array needs and refuses
every other global.

The protocol is insightface's (``eval/verification.py`` there): embed each
image and its horizontal flip, sum, L2-normalise; squared L2 distance between
pair members; 10-fold cross-validation where each fold's threshold is the
best one (on a 0.00..3.99 grid) on the other nine folds; accuracy mean and
std over folds. We add ROC AUC and TAR at a fixed FAR (scikit-learn).
"""

from __future__ import annotations

import _codecs
import io
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import KFold

from eval.backbones import INPUT_SIZE
from eval.data import decode_image
from synthface.errors import InputDataError, UnsafePickleError


def _numpy_reconstruct():
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    return _reconstruct, scalar


_RECONSTRUCT, _SCALAR = _numpy_reconstruct()


def _latin1_bytes(text, encoding="utf-8"):
    """``_codecs.encode`` as protocol <= 2 pickles of ``bytes`` use it: latin1 only.

    Any other codec name would make the codec registry import and run a codec
    module chosen by the file; a .bin never needs that.
    """
    if not isinstance(text, str) or encoding.replace("-", "").replace("_", "").lower() != "latin1":
        raise UnsafePickleError(f"refusing to load: the pickle calls _codecs.encode with codec {encoding!r}")
    return _codecs.encode(text, "latin1")

# The only globals a .bin may reference: what numpy needs to rebuild a uint8
# array (or a numpy bool in issame), under its numpy 1 and numpy 2 module
# names. `_codecs.encode` is how Python 3 stores bytes in protocol <= 2 pickles.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
    ("_codecs", "encode"): _latin1_bytes,
}


class _BinUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load: the pickle references {module}.{name}, which a verification .bin never needs"
            ) from None

    def persistent_load(self, pid):
        raise UnsafePickleError("refusing to load: the pickle uses persistent ids")


@dataclass
class PairSet:
    name: str
    images: np.ndarray  # uint8 [2N, 112, 112, 3] RGB, pair members consecutive
    issame: np.ndarray  # bool [N]


def _as_bytes(entry, i: int, path) -> bytes:
    if isinstance(entry, (bytes, bytearray)):
        return bytes(entry)
    if isinstance(entry, str):  # Python 2 `str` read with encoding="latin1"
        return entry.encode("latin1")
    if isinstance(entry, np.ndarray) and entry.dtype == np.uint8:
        return entry.tobytes()
    raise InputDataError(f"{path}: entry {i} is {type(entry).__name__}, expected encoded image bytes")


def load_bin(path: str | Path) -> PairSet:
    """Read and decode an insightface verification ``.bin`` safely."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputDataError(f"cannot read {path}: {exc}") from None
    try:
        # latin1 keeps Python 2 `str` payloads byte-exact (numpy's advice for py2 pickles).
        obj = _BinUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}") from None
    except Exception as exc:  # truncated / not a pickle at all
        raise InputDataError(f"{path}: not a verification .bin ({type(exc).__name__}: {exc})") from None
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise InputDataError(f"{path}: expected a pickle of (bins, issame_list)")
    bins, issame = obj
    if not all(isinstance(x, (list, tuple, np.ndarray)) for x in (bins, issame)):
        raise InputDataError(f"{path}: expected a pickle of (bins, issame_list), got ({type(bins).__name__}, {type(issame).__name__})")
    issame = np.asarray(list(issame))
    if issame.ndim != 1 or issame.dtype != bool or len(issame) < 2:
        raise InputDataError(f"{path}: issame_list must hold at least 2 booleans")
    if len(bins) != 2 * len(issame):
        raise InputDataError(f"{path}: {len(bins)} images for {len(issame)} pairs (expected twice as many)")
    from synthface.resources import require_memory

    require_memory(len(bins) * INPUT_SIZE * INPUT_SIZE * 3, f"{path}: its {len(bins):,} images, decoded,")
    images = np.empty((len(bins), INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
    for i, entry in enumerate(bins):
        try:
            images[i] = decode_image(_as_bytes(entry, i, path))
        except ValueError:
            raise InputDataError(f"{path}: image {i} cannot be decoded") from None
    return PairSet(name=path.stem, images=images, issame=issame)


def pair_embeddings(embed, images: np.ndarray, batch_size: int = 128, flip: bool = True) -> np.ndarray:
    """Unit-norm embeddings of ``images`` (uint8 NHWC RGB); ``embed`` maps such a batch to [B, D]."""
    chunks = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        emb = np.asarray(embed(batch), dtype=np.float64)
        if flip:
            emb = emb + np.asarray(embed(np.ascontiguousarray(batch[:, :, ::-1])), dtype=np.float64)
        chunks.append(emb)
    emb = np.concatenate(chunks)
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


@dataclass
class VerificationResult:
    name: str
    pairs: int
    accuracy: float  # mean over folds
    accuracy_std: float
    threshold: float  # mean best squared-L2 threshold over folds
    auc: float | None  # None when only one kind of pair is present
    tar_at_far: float | None
    far: float
    negatives: int  # the FAR resolution is 1 / negatives

    def as_dict(self) -> dict:
        return asdict(self)


def evaluate_embeddings(
    embeddings: np.ndarray, issame: np.ndarray, folds: int = 10, far: float = 1e-3, name: str = ""
) -> VerificationResult:
    """insightface 10-fold accuracy (+ AUC, TAR@FAR) from unit embeddings of consecutive pairs."""
    issame = np.asarray(issame, dtype=bool)
    e1, e2 = embeddings[0::2], embeddings[1::2]
    if len(e1) != len(issame):
        raise ValueError("need exactly two embeddings per pair")
    dist = np.sum(np.square(e1 - e2), axis=1)
    thresholds = np.arange(0, 4, 0.01)
    # Accuracy of each threshold on each pair: [num_thresholds, N] booleans.
    correct = (dist[None, :] < thresholds[:, None]) == issame[None, :]
    accs, best = [], []
    k_fold = KFold(n_splits=min(folds, len(issame)), shuffle=False)
    for train, test in k_fold.split(np.arange(len(issame))):
        i = int(np.argmax(correct[:, train].mean(axis=1)))  # first best, as insightface
        best.append(thresholds[i])
        accs.append(correct[i, test].mean())
    negatives = int((~issame).sum())
    auc = tar = None
    if 0 < negatives < len(issame):
        score = -dist  # higher = more similar
        auc = float(roc_auc_score(issame, score))
        fpr, tpr, _ = roc_curve(issame, score)
        tar = float(tpr[fpr <= far].max())
    return VerificationResult(
        name=name,
        pairs=len(issame),
        accuracy=float(np.mean(accs)),
        accuracy_std=float(np.std(accs)),
        threshold=float(np.mean(best)),
        auc=auc,
        tar_at_far=tar,
        far=far,
        negatives=negatives,
    )


def verify(embed, pairs: PairSet, batch_size=128, flip=True, folds=10, far=1e-3) -> VerificationResult:
    emb = pair_embeddings(embed, pairs.images, batch_size=batch_size, flip=flip)
    return evaluate_embeddings(emb, pairs.issame, folds=folds, far=far, name=pairs.name)
