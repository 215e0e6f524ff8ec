"""Independent numpy / scikit-image references for colornorm's modes.

Definitions (docs/colornorm.md): tissue pixels have R, G, B all <= 219
(optical density -ln((v+1)/256) >= 0.15 in every channel); Reinhard matches
per-channel mean/std of CIE L*a*b* (skimage rgb2lab, D65) over tissue pixels;
Macenko takes the two main eigenvectors of the tissue OD covariance, the 1st
and 99th percentile angles in that plane, hematoxylin = the vector with the
larger red OD, concentrations by least squares and their 99th percentile.
"""
import numpy as np
import skimage.color

TISSUE_MAX = 219


def tissue_mask(rgb):
    return np.all(rgb <= TISSUE_MAX, axis=-1)


def od(rgb):
    return -np.log((rgb.astype(np.float64) + 1.0) / 256.0)


def lab_stats(rgb):
    m = tissue_mask(rgb)
    lab = skimage.color.rgb2lab(rgb)[m]
    return lab.mean(axis=0), lab.std(axis=0)


def reinhard(rgb, src_mean, src_std, tgt_mean, tgt_std, keep_background=True):
    """Float RGB in [0, 255]. keep_background: blend back to the input by the
    weight clip((max OD - 0.05) / (0.15 - 0.05), 0, 1)."""
    lab = skimage.color.rgb2lab(rgb)
    src_std = np.where(np.asarray(src_std) > 1e-3, src_std, np.asarray(tgt_std))
    lab = (lab - src_mean) / src_std * tgt_std + tgt_mean
    # inverse without skimage's clipping of z < 0, then clip linear RGB
    L, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    fy = (L + 16.0) / 116.0
    f = np.stack([fy + a / 500.0, fy, fy - b / 200.0], axis=-1)
    xyz = np.where(f > 0.2068966, f ** 3, (f - 16.0 / 116.0) / 7.787)
    xyz = xyz * np.array([0.95047, 1.0, 1.08883])
    m = np.array([[0.412453, 0.357580, 0.180423],
                  [0.212671, 0.715160, 0.072169],
                  [0.019334, 0.119193, 0.950227]])
    lin = np.clip(xyz @ np.linalg.inv(m).T, 0.0, 1.0)
    srgb = np.where(lin > 0.0031308, 1.055 * np.power(lin, 1 / 2.4) - 0.055,
                    12.92 * lin)
    out = srgb * 255.0
    if keep_background:
        w = np.clip((od(rgb).max(axis=-1) - 0.05) / 0.10, 0.0, 1.0)[..., None]
        out = rgb + w * (out - rgb)
    return out


def macenko_fit(rgb, alpha=1.0, pmax=99.0):
    """Returns (he 2x3, max_conc 2) or None when degenerate."""
    x = od(rgb.reshape(-1, 3))
    x = x[np.all(x >= 0.15, axis=1)]
    if len(x) < 100:
        return None
    w, v = np.linalg.eigh(np.cov(x.T))
    e1, e2 = v[:, 2], v[:, 1]
    if e1.sum() < 0:
        e1 = -e1
    if e2.sum() < 0:
        e2 = -e2
    phi = np.arctan2(x @ e2, x @ e1)
    lo, hi = np.percentile(phi, alpha), np.percentile(phi, 100 - alpha)
    vlo = np.cos(lo) * e1 + np.sin(lo) * e2
    vhi = np.cos(hi) * e1 + np.sin(hi) * e2
    he = np.array([vlo, vhi]) if vlo[0] > vhi[0] else np.array([vhi, vlo])
    c = np.linalg.lstsq(he.T, x.T, rcond=None)[0]
    return he, np.percentile(c, pmax, axis=1)


def macenko(rgb, src, tgt, keep_residual=True):
    """Float RGB in [0, 255]. keep_residual: add back the part of the OD the
    two source stains do not explain (least-squares residual)."""
    (he_s, mc_s), (he_t, mc_t) = src, tgt
    x = od(rgb.reshape(-1, 3))
    c = np.linalg.lstsq(he_s.T, x.T, rcond=None)[0]
    y = he_t.T @ (c * (np.asarray(mc_t) / np.asarray(mc_s))[:, None])
    if keep_residual:
        y = y + (x.T - he_s.T @ c)
    out = 256.0 * np.exp(-y.T) - 1.0
    return np.clip(out, 0, 255).reshape(rgb.shape)


def lab_distance(a, b):
    """Mean Euclidean distance between the tissue L*a*b* mean/std vectors."""
    ma, sa = lab_stats(a)
    mb, sb = lab_stats(b)
    return float(np.linalg.norm(np.concatenate([ma - mb, sa - sb])))
