"""A small DICOM whole-slide series written with pydicom (VL Whole Slide Microscopy Image, TILED_FULL).

One file per pyramid level, uncompressed or JPEG baseline RGB frames, pixel spacing from ``mpp``,
and patient/study attributes filled in with recognisable values, so tests can check that none of
them travels into tiler's outputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
#: Identifying values the generated files carry; none may appear in anything tiler writes.
PATIENT = {"PatientName": "Doe^Jane", "PatientID": "PID-314159", "PatientBirthDate": "19700101",
           "AccessionNumber": "ACC-271828", "StudyID": "STUDY-161803", "InstitutionName": "Hospital of Nowhere",
           "ReferringPhysicianName": "Who^Doctor"}


def _frames(img: np.ndarray, tile: int) -> list[np.ndarray]:
    """(tile, tile, 3) frames, row by row, the last row/column padded with white."""
    h, w = img.shape[:2]
    rows, cols = -(-h // tile), -(-w // tile)
    padded = np.full((rows * tile, cols * tile, 3), 255, np.uint8)
    padded[:h, :w] = img
    return [padded[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] for r in range(rows) for c in range(cols)]


def write_dicom_wsi(folder: Path, pyramid: list[np.ndarray], *, mpp: float = 0.25, tile: int = 64,
                    jpeg: bool = False) -> list[Path]:
    """One DICOM file per level of ``pyramid`` ((H, W, 3) uint8 arrays, full resolution first)."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame_of_ref = generate_uid(), generate_uid(), generate_uid()
    h0, w0 = pyramid[0].shape[:2]
    paths = []
    for k, img in enumerate(pyramid):
        h, w = img.shape[:2]
        frames = _frames(img, tile)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = WSI_SOP_CLASS
        sop = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit if jpeg else ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = WSI_SOP_CLASS, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_of_ref
        for key, value in PATIENT.items():
            setattr(ds, key, value)
        ds.PatientSex = "F"
        ds.StudyDate, ds.StudyTime, ds.ContentDate, ds.ContentTime = "20240102", "101010", "20240102", "101010"
        ds.AcquisitionDateTime = "20240102101010"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "SM", 1, k + 1
        ds.Manufacturer, ds.ManufacturerModelName, ds.SoftwareVersions = "tiler tests", "synthetic", "1"
        ds.DeviceSerialNumber = "0"
        ds.ContainerIdentifier = "SLIDE-1"
        ds.IssuerOfTheContainerIdentifierSequence = Sequence()
        ds.ContainerTypeCodeSequence = Sequence([_code("433466003", "SCT", "Microscope slide")])
        ds.SpecimenDescriptionSequence = Sequence()
        ds.VolumetricProperties = "VOLUME"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"] if k == 0 else ["DERIVED", "PRIMARY", "VOLUME",
                                                                                 "RESAMPLED"]
        ds.BurnedInAnnotation, ds.SpecimenLabelInImage, ds.FocusMethod = "NO", "NO", "AUTO"
        ds.ImageOrientationSlide = [0, -1, 0, -1, 0, 0]
        ds.DimensionOrganizationType = "TILED_FULL"
        ds.DimensionOrganizationSequence = Sequence([Dataset()])
        ds.DimensionOrganizationSequence[0].DimensionOrganizationUID = generate_uid()
        ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows, ds.TotalPixelMatrixFocalPlanes = w, h, 1
        origin = Dataset()
        origin.XOffsetInSlideCoordinateSystem, origin.YOffsetInSlideCoordinateSystem = 20.0, 40.0
        ds.TotalPixelMatrixOriginSequence = Sequence([origin])
        ds.NumberOfOpticalPaths = 1
        ds.Rows = ds.Columns = tile
        ds.NumberOfFrames = len(frames)
        ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
        ds.PhotometricInterpretation = "YBR_FULL_422" if jpeg else "RGB"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.LossyImageCompression = "01" if jpeg else "00"
        spacing_mm = mpp * (w0 / w) / 1000.0, mpp * (h0 / h) / 1000.0
        ds.ImagedVolumeWidth, ds.ImagedVolumeHeight, ds.ImagedVolumeDepth = w * spacing_mm[0], h * spacing_mm[1], 0.001
        measures = Dataset()
        measures.PixelSpacing = [spacing_mm[1], spacing_mm[0]]  # row spacing (y), column spacing (x)
        measures.SliceThickness, measures.SpacingBetweenSlices = 0.001, 0.001
        shared = Dataset()
        shared.PixelMeasuresSequence = Sequence([measures])
        ds.SharedFunctionalGroupsSequence = Sequence([shared])
        path_ = Dataset()
        path_.OpticalPathIdentifier = "1"
        path_.IlluminationColorCodeSequence = Sequence([_code("414298005", "SCT", "Full Spectrum")])
        path_.IlluminationTypeCodeSequence = Sequence([_code("111744", "DCM", "Brightfield illumination")])
        ds.OpticalPathSequence = Sequence([path_])
        if jpeg:
            import imagecodecs
            from pydicom.encaps import encapsulate

            ds.PixelData = encapsulate([imagecodecs.jpeg8_encode(f, level=95) for f in frames])
            ds["PixelData"].VR = "OB"
        else:
            ds.PixelData = b"".join(f.tobytes() for f in frames)
            ds["PixelData"].VR = "OB"
        path = folder / f"level{k}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, scheme, meaning
    return code
