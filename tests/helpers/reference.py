"""Independent restatements of the definitions behind every reported number, in plain numpy/scipy.

Nothing here imports ``iqa_saliency``. Each function is written from the published definition it names
(the MIT saliency benchmark's metric code, Hendrycks & Dietterich's corruption error, the PaQ-2-PiQ
standalone normaliser, the percentile bootstrap), so the reference tests can hold the project's numbers
against them: a test that compared a function with itself would pass whatever the definition said.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
from scipy import stats

#: eps of the MIT saliency benchmark's MATLAB/Python code (MATLAB's `eps`).
MIT_EPS = 2.2204e-16

# Hendrycks & Dietterich (ICLR 2019), AlexNet top-1 error per ImageNet-C corruption and severity 1..5, as released
# with the paper's evaluation code (github.com/hendrycks/robustness, ImageNet-C). The per-corruption averages
# are the CE normalisers; the paper's Table 1 gives AlexNet's clean error as 43.5%.
ALEXNET_ERRORS_BY_SEVERITY = {
    "gaussian_noise": (0.69528, 0.82542, 0.93554, 0.98138, 0.99452),
    "shot_noise": (0.71224, 0.85108, 0.93574, 0.98182, 0.99146),
    "impulse_noise": (0.78374, 0.89808, 0.9487, 0.9872, 0.99548),
    "defocus_blur": (0.65624, 0.73202, 0.85036, 0.91364, 0.94714),
    "glass_blur": (0.64308, 0.75054, 0.88806, 0.91622, 0.93344),
    "motion_blur": (0.5843, 0.70048, 0.82108, 0.8975, 0.92638),
    "zoom_blur": (0.70008, 0.76992, 0.80784, 0.84198, 0.87198),
    "snow": (0.71726, 0.88392, 0.86468, 0.9187, 0.94952),
    "frost": (0.6139, 0.79734, 0.8879, 0.89942, 0.9343),
    "fog": (0.67474, 0.7605, 0.84378, 0.8726, 0.945),
    "brightness": (0.4514, 0.48502, 0.54048, 0.62166, 0.7244),
    "contrast": (0.64548, 0.7615, 0.88874, 0.9776, 0.9927),
    "elastic_transform": (0.52596, 0.70116, 0.55686, 0.64076, 0.80554),
    "pixelate": (0.52218, 0.5462, 0.73728, 0.87092, 0.91262),
    "jpeg_compression": (0.51002, 0.54718, 0.57294, 0.65458, 0.74778),
}
ALEXNET_CLEAN_ERROR = 0.435

# PaQ-2-PiQ standalone inference (paq2piq_standalone.py): peak, std_left, std_right, n_std, clip, categories.
PAQ_PEAK, PAQ_STD_LEFT, PAQ_STD_RIGHT, PAQ_N_STD = 72.0, 7.798274017370107, 4.118047289170692, 3.5
PAQ_CLIP = 99.9
PAQ_CATEGORIES = ("Bad", "Poor", "Fair", "Good", "Excellent")


# ------------------------------------------------------------------------------------------------ maps


def adaptive_avg_pool(m: np.ndarray, out_h: int, out_w: int | None = None) -> np.ndarray:
    """Adaptive average pooling of a 2-D map: output cell (i, j) averages rows floor(iH/g)..ceil((i+1)H/g)."""
    out_w = out_h if out_w is None else out_w
    h, w = m.shape
    out = np.empty((out_h, out_w))
    for i in range(out_h):
        r0, r1 = (i * h) // out_h, -((-(i + 1) * h) // out_h)
        for j in range(out_w):
            c0, c1 = (j * w) // out_w, -((-(j + 1) * w) // out_w)
            out[i, j] = m[r0:r1, c0:c1].astype(np.float64).mean()
    return out


def mit_cc(a: np.ndarray, b: np.ndarray) -> float:
    """MIT benchmark CC: Pearson correlation of the two maps, each standardised."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.std() == 0 or b.std() == 0:
        return math.nan
    return float(stats.pearsonr(a, b).statistic)


def _normalise_distribution(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64).ravel()
    m = (m - m.min()) / (m.max() - m.min())
    return m / m.sum()


def mit_sim(a: np.ndarray, b: np.ndarray) -> float:
    """MIT benchmark SIM: each map min-max normalised then divided by its sum; Σ min(a, b)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(np.minimum(_normalise_distribution(a), _normalise_distribution(b)).sum())


def mit_kld(q_map: np.ndarray, p_map: np.ndarray) -> float:
    """KL(Q ‖ P) in the MIT benchmark's form, Σ Q log(eps + Q / (P + eps)); Q the reference distribution.

    Here Q is the quality map (the "fixation map" role) and P the attribution map (the prediction). As docs/outputs.md
    documents for this project, both are min-max normalised before being divided by their sums; the MIT code's own
    KLdiv only divides by the sum (its min-max step belongs to SIM).
    """
    if np.ptp(q_map) == 0 or np.ptp(p_map) == 0:
        return math.nan
    q, p = _normalise_distribution(q_map), _normalise_distribution(p_map)
    return float(np.sum(q * np.log(MIT_EPS + q / (p + MIT_EPS))))


def scipy_spearman(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if np.isnan(a).any() or np.isnan(b).any() or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(stats.spearmanr(a, b).statistic)


def similarities(quality: np.ndarray, attribution: np.ndarray) -> dict[str, float]:
    """The four similarity columns for one image: the attribution pooled onto the quality map's grid first."""
    pooled = adaptive_avg_pool(attribution, *quality.shape)
    return {"sim_cc": mit_cc(quality, pooled), "sim_sim": mit_sim(quality, pooled),
            "sim_kld": mit_kld(quality, pooled), "sim_spearman": scipy_spearman(quality, pooled)}


def change_similarity(q_clean: np.ndarray, q_corr: np.ndarray, a_clean: np.ndarray, a_corr: np.ndarray
                      ) -> dict[str, float]:
    """change_cc / change_spearman as docs/maps.md defines them: |q_clean − q_corr| against |Δ attribution|,
    each attribution map min-max scaled to [0, 1] before the difference, which is then averaged onto the
    quality map's grid."""
    def scaled(m: np.ndarray) -> np.ndarray:
        m = np.asarray(m, np.float64)
        return (m - m.min()) / np.ptp(m) if np.ptp(m) > 0 else np.full(m.shape, np.nan)

    moved_q = np.abs(np.asarray(q_clean, np.float64) - np.asarray(q_corr, np.float64))
    moved_a = adaptive_avg_pool(np.abs(scaled(a_clean) - scaled(a_corr)), *moved_q.shape)
    if np.isnan(moved_a).any():
        return {"change_cc": math.nan, "change_spearman": math.nan}
    return {"change_cc": mit_cc(moved_q, moved_a), "change_spearman": scipy_spearman(moved_q, moved_a)}


# --------------------------------------------------------------------------------------------- quality


def paq_normalise(mos: float) -> float:
    """PaQ-2-PiQ standalone normalisation onto 0-100 around the FLIVE peak (two half-Gaussians), clipped."""
    if mos < PAQ_PEAK:
        v = PAQ_PEAK + PAQ_PEAK * (mos - PAQ_PEAK) / (PAQ_N_STD * PAQ_STD_LEFT)
    else:
        v = PAQ_PEAK + (100 - PAQ_PEAK) * (mos - PAQ_PEAK) / (PAQ_N_STD * PAQ_STD_RIGHT)
    return float(min(max(v, 0.0), PAQ_CLIP))


def paq_category(normalised: float) -> str:
    """20 points per category: [0, 20) Bad ... [80, 100) Excellent."""
    return PAQ_CATEGORIES[int(normalised // 20)]


# -------------------------------------------------------------------------------------------- seeding


def corruption_seed(run_seed: int, image_id: str, corruption: str, severity: int) -> int:
    """The per-image corruption seed: the first 4 bytes (little-endian) of sha256("seed|image|corruption|sev")."""
    digest = hashlib.sha256(f"{run_seed}|{image_id}|{corruption}|{severity}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


# ------------------------------------------------------------------------------------------------ splits


def stratified_split(items: list[tuple[str, int]], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, val) positions of (image id, label) items: per label, the members sorted by id, round(n·f) of them
    clamped to [1, n−1] (n ≥ 2), the first ones of numpy's default_rng([seed, label]) permutation go to val."""
    val = []
    for label in sorted({lbl for _, lbl in items}):
        members = sorted((i for i, (_, lbl) in enumerate(items) if lbl == label), key=lambda i: items[i][0])
        n = len(members)
        k = round(n * fraction)
        if n >= 2:
            k = min(max(k, 1), n - 1)
        perm = np.random.default_rng([seed, label]).permutation(n)
        val += [members[j] for j in perm[:k]]
    return sorted(set(range(len(items))) - set(val)), sorted(val)


# ------------------------------------------------------------------------------------------ statistics


def percentile_bootstrap(values, n_boot: int, seed: int, level: float) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean: resample indices with numpy's default_rng(seed), (n_boot, n) at once."""
    x = np.asarray(values, np.float64)
    x = x[~np.isnan(x)]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    means = x[idx].mean(axis=1)
    lo = (1 - level) / 2
    return float(np.quantile(means, lo)), float(np.quantile(means, 1 - lo))


def corruption_error(errors_by_severity: dict[int, float], alexnet: tuple[float, ...]) -> float:
    """CE_c = Σ_{s=1..5} E_{s,c} / Σ_{s=1..5} E^AlexNet_{s,c} (Hendrycks & Dietterich, eq. in §4)."""
    return sum(errors_by_severity[s] for s in range(1, 6)) / sum(alexnet)


def relative_corruption_error(errors_by_severity: dict[int, float], clean: float, alexnet: tuple[float, ...],
                              alexnet_clean: float = ALEXNET_CLEAN_ERROR) -> float:
    """Relative CE_c = Σ_s (E_{s,c} − E_clean) / Σ_s (E^AlexNet_{s,c} − E^AlexNet_clean)."""
    return (sum(errors_by_severity[s] - clean for s in range(1, 6))
            / sum(a - alexnet_clean for a in alexnet))
