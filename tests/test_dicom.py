"""The DICOM WSI reader (``tiler.sources.dicom``, wsidicom) on series the tests write with pydicom:
levels and pixel spacing, region reads, folders and single files, no patient data in any output."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

import tiler
from tiler.cli import batch
from tiler.cli.main import main
from tiler.errors import InputError
from tiler.sources import open_source

from ._dicom_files import PATIENT, write_dicom_wsi
from ._source_conformance import Case, SourceConformance
from ._wsi_files import downsample, slide_image


def _pyramid(shape=(200, 264), seed=0, levels=3) -> list[np.ndarray]:
    img = slide_image(shape, seed=seed)
    return [img] + [downsample(img, 2**k) for k in range(1, levels)]


def _truncated_copy(folder: Path):
    def write(dst: Path) -> Path:
        dst.mkdir()
        for f in folder.iterdir():
            data = f.read_bytes()
            (dst / f.name).write_bytes(data[: len(data) * 2 // 3] if f.name == "level0.dcm" else data)
        return dst
    return write


class TestDicomFolder(SourceConformance):
    @pytest.fixture
    def case(self, tmp_path: Path) -> Case:
        pyramid = _pyramid()
        folder = tmp_path / "series"
        write_dicom_wsi(folder, pyramid, mpp=0.25, tile=64)
        return Case(folder, "wsidicom", pyramid, 0.25, truncate=_truncated_copy(folder))


class TestDicomJpeg(SourceConformance):
    """JPEG baseline frames (the common transfer syntax): the reference is the same frames decoded."""

    @pytest.fixture
    def case(self, tmp_path: Path) -> Case:
        pyramid = _pyramid(seed=1)
        folder = tmp_path / "jpeg"
        write_dicom_wsi(folder, pyramid, mpp=0.5, tile=64, jpeg=True)
        return Case(folder, "wsidicom", pyramid, 0.5, truncate=_truncated_copy(folder), tolerance=80)

    def test_jpeg_frames_are_decoded_close_to_the_original(self, case: Case) -> None:
        source = open_source(case.path)
        error = np.abs(source.read(0, 200, 0, 264).astype(float) - case.pyramid[0]).mean()
        assert error < 3.0, error


def test_one_file_of_a_series_opens_the_whole_series(tmp_path):
    pyramid = _pyramid(seed=2)
    paths = write_dicom_wsi(tmp_path / "s", pyramid, mpp=0.25)
    write_dicom_wsi(tmp_path / "s" / "other", _pyramid((64, 64), seed=3), mpp=1.0)  # another series, nearby
    source = open_source(paths[1])  # the level-1 file, chosen by content (DICM at byte 128)
    assert source.info.reader == "wsidicom" and source.info.levels == tuple(p.shape[:2] for p in pyramid)
    np.testing.assert_array_equal(source.read(0, 200, 0, 264), pyramid[0])
    assert open_source(paths[0], level=2).info.mpp == pytest.approx((1.0, 1.0))


def test_mpp_chooses_the_dicom_level_and_resamples(tmp_path):
    pyramid = _pyramid(seed=4)
    write_dicom_wsi(tmp_path / "s", pyramid, mpp=0.25)
    source = tiler.sources.open_at(tmp_path / "s", mpp=0.5)
    assert source.info.level == 1 and source.shape[:2] == pyramid[1].shape[:2]
    np.testing.assert_array_equal(source.read(0, 100, 0, 132), pyramid[1])


def test_no_patient_or_study_attribute_reaches_the_output_report_or_preview(tmp_path, plus_one):
    write_dicom_wsi(tmp_path / "slide", _pyramid((160, 192), seed=5), mpp=0.5)
    items = [batch.Item(str(tmp_path / "slide"), str(tmp_path / "out.zarr"))]
    batch.run_batch(items, model=plus_one, report=tmp_path / "report.json", tile=64, overlap=16, preview=True,
                    log=lambda line: None, debug=True)
    assert items[0].status == "ok"
    group = zarr.open_group(tmp_path / "out.zarr", mode="r")
    assert group["0"].shape == (3, 160, 192) and group.attrs["tiler"]["input"]["reader"] == "wsidicom"
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "slide" not in p.relative_to(tmp_path).parts]
    assert any(p.suffix == ".png" for p in written) and any(p.name == "report.json" for p in written)
    blob = b"".join(p.read_bytes() for p in written) + json.dumps(dict(group.attrs)).encode()
    for value in [*PATIENT.values(), "Doe", "19700101", "SLIDE-1"]:
        assert value.encode() not in blob, value


def test_a_dicom_folder_is_one_input_of_an_archive(tmp_path):
    write_dicom_wsi(tmp_path / "slide", _pyramid((64, 64)), mpp=0.5)
    items = batch.collect([str(tmp_path / "slide")])
    assert [i.input for i in items] == [str(tmp_path / "slide")] and items[0].status == "pending"


def test_tiler_info_on_a_dicom_folder_names_the_reader_and_levels(tmp_path, capsys):
    write_dicom_wsi(tmp_path / "slide", _pyramid(), mpp=0.25)
    assert main(["info", str(tmp_path / "slide")]) == 0
    out = capsys.readouterr().out
    assert "reader       wsidicom" in out and "level 2      50 x 66 (downsample 4, 1 µm)" in out
    assert "Doe" not in out


def test_without_the_dicom_extra_a_dicom_file_says_what_to_install(tmp_path, monkeypatch, capsys):
    paths = write_dicom_wsi(tmp_path / "slide", _pyramid((64, 64)), mpp=0.5)
    monkeypatch.setitem(sys.modules, "wsidicom", None)
    with pytest.raises(InputError) as info:
        open_source(paths[0])
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(paths[0]))
    assert "DICOM whole-slide images need the dicom extra" in message and "pip install 'tiler-engine[dicom]'" in message
    assert main(["info", str(tmp_path / "slide")]) == 1  # the folder too, as one error line
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'tiler-engine[dicom]'" in err


def test_a_dicom_file_that_is_not_a_slide_is_one_line(tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.Modality = "Doe^Jane", "CT"
    path = tmp_path / "ct.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(InputError) as info:
        open_source(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value) and "Doe" not in str(info.value)
