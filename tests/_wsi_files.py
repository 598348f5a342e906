"""Small generated whole-slide and satellite files for the level, mask and georeference tests.

Every writer returns the full-resolution image it stored, so tests can compare against NumPy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile


def slide_image(shape: tuple[int, int], *, background: float = 0.6, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 RGB: a few pink tissue sections on near-white glass with a little dust.

    Tissue is a smooth random field (a 3 x 3 grid of random values, cubic-upsampled) above its
    ``background`` quantile, so exactly that fraction is glass, in one to three connected sections
    with irregular borders. Glass is grey 232..245 with noise; tissue is saturated pink with
    texture; a few 3-pixel dark specks of dust lie on the glass.
    """
    from scipy import ndimage

    h, w = shape
    rng = np.random.default_rng(seed)
    field = ndimage.zoom(rng.normal(size=(3, 3)), (h / 3, w / 3), order=3, mode="nearest")[:h, :w]
    tissue = field > np.quantile(field, background)
    img = np.empty((h, w, 3), np.uint8)
    img[:] = rng.integers(232, 246, size=(h, w, 1), dtype=np.uint8)
    texture = rng.integers(0, 60, size=(h, w, 1))
    pink = np.clip(np.array([205, 115, 175]) - texture, 0, 255).astype(np.uint8)
    img[tissue] = pink[tissue]
    for y, x in rng.integers(0, (h - 3, w - 3), size=(8, 2)):
        if not tissue[y : y + 3, x : x + 3].any():
            img[y : y + 3, x : x + 3] = 90
    return img


def downsample(img: np.ndarray, k: int) -> np.ndarray:
    """Block mean by ``k`` (partial edge blocks dropped), like a scanner's pyramid level."""
    h, w = img.shape[0] // k, img.shape[1] // k
    return img[: h * k, : w * k].reshape(h, k, w, k, -1).mean(axis=(1, 3)).round().astype(img.dtype)


def write_ome_pyramid(
    path: Path, img: np.ndarray, *, levels: int = 3, mpp: float = 0.5, tile: int = 64
) -> list[np.ndarray]:
    """A pyramidal OME-TIFF (levels in SubIFDs, factor 2) with PhysicalSize; returns the levels."""
    pyramid = [img] + [downsample(img, 2**k) for k in range(1, levels)]
    meta = {"axes": "YXS", "PhysicalSizeX": mpp, "PhysicalSizeY": mpp,
            "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm"}
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(img, subifds=levels - 1, tile=(tile, tile), photometric="rgb",
                  compression="zlib", metadata=meta)
        for level in pyramid[1:]:
            tif.write(level, subfiletype=1, tile=(tile, tile), photometric="rgb", compression="zlib")
    return pyramid


def write_svs(
    path: Path, img: np.ndarray, *, levels: int = 3, mpp: float = 0.499, tile: int = 64
) -> list[np.ndarray]:
    """An Aperio-like SVS: JPEG tiles, ``|MPP = ...|`` in the description, thumbnail as page 1."""
    h, w = img.shape[:2]
    pyramid = [img] + [downsample(img, 4**k) for k in range(1, levels)]
    desc = (f"Aperio Image Library v12.0.15 \r\n{w}x{h} [0,0 {w}x{h}] ({tile}x{tile}) JPEG/RGB Q=95"
            f"|AppMag = 20|StripeWidth = 2040|ScanScope ID = SS1234|MPP = {mpp:.4f}|Left = 1.0")
    with tifffile.TiffWriter(path) as tif:
        tif.write(img, tile=(tile, tile), photometric="rgb", compression="jpeg",
                  compressionargs={"level": 95}, description=desc, metadata=None)
        thumb = downsample(img, 8)
        tif.write(thumb, photometric="rgb", compression="jpeg", description=f"Aperio Image Library\r\n"
                  f"{w}x{h} -> {thumb.shape[1]}x{thumb.shape[0]}", metadata=None)
        for level in pyramid[1:]:
            tif.write(level, tile=(tile, tile), photometric="rgb", compression="jpeg",
                      compressionargs={"level": 95}, description=f"Aperio Image Library\r\n{w}x{h}",
                      metadata=None)
    return pyramid


def write_resolution_tiff(path: Path, img: np.ndarray, *, mpp: float, unit: str = "CENTIMETER") -> None:
    """A plain tiled TIFF whose pixel size is only in XResolution/YResolution/ResolutionUnit."""
    per_unit = {"CENTIMETER": 1e4, "INCH": 25400.0}[unit]
    tifffile.imwrite(path, img, tile=(64, 64), photometric="rgb" if img.ndim == 3 else None,
                     resolution=(per_unit / mpp, per_unit / mpp), resolutionunit=unit, metadata=None)


#: EPSG:32633 (WGS 84 / UTM zone 33N), pixel is area, with a citation string and one double param.
GEOKEYS = (1, 1, 0, 5,
           1024, 0, 1, 1,          # GTModelTypeGeoKey = projected
           1025, 0, 1, 1,          # GTRasterTypeGeoKey = PixelIsArea
           1026, 34737, 21, 0,     # GTCitationGeoKey -> ascii params
           3072, 0, 1, 32633,      # ProjectedCSTypeGeoKey
           3076, 0, 1, 9001)       # ProjLinearUnitsGeoKey = metre
GEO_ASCII = "WGS 84 / UTM zone 33N|"
GEO_DOUBLES = (6378137.0,)


def write_geotiff(
    path: Path, img: np.ndarray, *, scale: tuple[float, float] = (10.0, 10.0),
    origin: tuple[float, float] = (500000.0, 4600000.0), transformation: bool = False,
    levels: int = 1,
) -> None:
    """A tiled GeoTIFF (optionally with reduced levels in SubIFDs) with geokeys and params."""
    sx, sy = scale
    x0, y0 = origin
    if transformation:
        matrix = (sx, 0.0, 0.0, x0, 0.0, -sy, 0.0, y0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
        georef = [(34264, "d", 16, matrix, True)]
    else:
        georef = [(33550, "d", 3, (sx, sy, 0.0), True), (33922, "d", 6, (0.0, 0.0, 0.0, x0, y0, 0.0), True)]
    extratags = [*georef, (34735, "H", len(GEOKEYS), GEOKEYS, True),
                 (34736, "d", len(GEO_DOUBLES), GEO_DOUBLES, True), (34737, "s", 0, GEO_ASCII, True)]
    with tifffile.TiffWriter(path) as tif:
        tif.write(img, tile=(64, 64), photometric="rgb" if img.ndim == 3 else "minisblack",
                  subifds=levels - 1, extratags=extratags, metadata=None)
        for k in range(1, levels):
            tif.write(downsample(img if img.ndim == 3 else img[..., None], 2**k).squeeze(),
                      tile=(64, 64), subfiletype=1,
                      photometric="rgb" if img.ndim == 3 else "minisblack")


def _philips_xml(spacings_mm: list[float]) -> str:
    """The ImageDescription of a Philips TIFF: a DPUfsImport DataObject naming one WSI image and the
    pixel spacing of every level (what OpenSlide reads levels and mpp from)."""
    reps = "".join(
        '<DataObject ObjectType="PixelDataRepresentation">'
        f'<Attribute Name="DICOM_PIXEL_SPACING" Group="0x0028" Element="0x0030" PMSVR="IDoubleArray">'
        f'"{s:.6f}" "{s:.6f}"</Attribute>'
        f'<Attribute Name="PIIM_PIXEL_DATA_REPRESENTATION_NUMBER" Group="0x101D" Element="0x2001" '
        f'PMSVR="IUInt16">{k}</Attribute></DataObject>'
        for k, s in enumerate(spacings_mm))
    return (
        '<?xml version="1.0" encoding="UTF-8" ?>\n<DataObject ObjectType="DPUfsImport">'
        '<Attribute Name="PIM_DP_UFS_INTERFACE_VERSION" Group="0x301D" Element="0x1001" PMSVR="IString">3.0'
        '</Attribute><Attribute Name="PIM_DP_SCANNED_IMAGES" Group="0x301D" Element="0x1003" '
        'PMSVR="IDataObjectArray"><Array><DataObject ObjectType="DPScannedImage">'
        f'<Attribute Name="DICOM_PIXEL_SPACING" Group="0x0028" Element="0x0030" PMSVR="IDoubleArray">'
        f'"{spacings_mm[0]:.6f}" "{spacings_mm[0]:.6f}"</Attribute>'
        '<Attribute Name="PIM_DP_IMAGE_TYPE" Group="0x301D" Element="0x1004" PMSVR="IString">WSI</Attribute>'
        '<Attribute Name="PIIM_PIXEL_DATA_REPRESENTATION_SEQUENCE" Group="0x1001" Element="0x8B01" '
        f'PMSVR="IDataObjectArray"><Array>{reps}</Array></Attribute>'
        '</DataObject></Array></Attribute></DataObject>')


def write_philips(path: Path, img: np.ndarray, *, levels: int = 3, mpp: float = 0.25, tile: int = 64
                  ) -> list[np.ndarray]:
    """A Philips-like TIFF: Software ``Philips ...``, the DPUfsImport XML, JPEG tiles, levels halving
    in reduced-resolution pages stored padded to whole tiles (as the scanners do; the XML's pixel
    spacings give their true size). Returns the levels' true pixels."""
    pyramid = [img] + [downsample(img, 2**k) for k in range(1, levels)]
    xml = _philips_xml([mpp * 2**k / 1000.0 for k in range(levels)])
    with tifffile.TiffWriter(path) as tif:
        for k, level in enumerate(pyramid):
            h, w = level.shape[:2]
            padded = np.zeros((-(-h // tile) * tile, -(-w // tile) * tile, 3), np.uint8)
            padded[:h, :w] = level
            tif.write(padded, tile=(tile, tile), photometric="rgb", compression="jpeg",
                      compressionargs={"level": 95}, subfiletype=1 if k else 0, software="Philips DP v1.0",
                      description=xml if k == 0 else f"level={k} mag={40 >> k} quality=95", metadata=None)
    return pyramid
