"""The camera's image pipeline on rendered images: exposure, white balance, vignetting, blur, noise, JPEG.

Rendered pixels are exact; real camera images are not. Training on exact pixels only teaches a model
that edges are one pixel sharp and flat surfaces are noise-free, so randomised styles pass every view
through these effects. Only the RGB changes: depth and instance IDs stay exact.
"""

from __future__ import annotations

import io

import numpy as np
from scipy.ndimage import gaussian_filter

from .style import ImageEffects


def apply_effects(rgb: np.ndarray, effects: ImageEffects, rng: np.random.Generator) -> np.ndarray:
    """[H,W,3] uint8 -> the same image as the camera `effects` would deliver it (uint8)."""
    if effects.identity:
        return rgb
    img = rgb.astype(np.float32) / 255.0
    img = img * (effects.gain * np.asarray(effects.white_balance, np.float32))
    img = np.clip(img, 0.0, 1.0) ** effects.gamma
    if effects.vignette:
        h, w = img.shape[:2]
        v, u = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((u - (w - 1) / 2) / (w / 2)) ** 2 + ((v - (h - 1) / 2) / (h / 2)) ** 2
        img = img * (1.0 - effects.vignette * r2 / 2.0)[..., None]
    if effects.blur_sigma > 0:
        img = gaussian_filter(img, sigma=(effects.blur_sigma, effects.blur_sigma, 0.0))
    img = img * 255.0
    if effects.noise_sigma > 0:
        img = img + rng.normal(0.0, effects.noise_sigma, img.shape).astype(np.float32)
    out = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    if effects.jpeg_quality:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=int(effects.jpeg_quality))
        out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return out
