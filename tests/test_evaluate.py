"""tiler eval: exact agreement with NumPy, ROI handling, and out-of-core structure."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import zarr

import tiler.results.evaluate as evaluate_mod
from tiler.cli.main import main as cli
from tiler.errors import InputError
from tiler.results.evaluate import evaluate


def make_output(tmp_path, values: np.ndarray, kind: str, chunk: int = 16, name: str = "out.zarr",
                classes: int | None = None):
    """A minimal finished tiler output group holding ``values`` as level 0."""
    g = zarr.open_group(str(tmp_path / name), mode="w", zarr_format=3)
    chunks = (*values.shape[:-2], chunk, chunk)
    g.create_array("0", shape=values.shape, chunks=chunks, dtype=values.dtype, fill_value=0)
    g["0"][...] = values
    spec = {"out_channels": classes or (values.shape[0] if values.ndim == 3 else 0), "activation": "softmax"}
    g.attrs["tiler"] = {"complete": True, "settings": {"output": kind}, "model": {"spec": spec}}
    return tmp_path / name


def numpy_scores(truth: np.ndarray, pred: np.ndarray, k: int, keep: np.ndarray | None = None):
    """The reference: the same formulas, written once more in plain NumPy."""
    keep = np.ones(truth.shape, bool) if keep is None else keep
    cm = np.zeros((k, k), np.int64)
    for t in range(k):
        for p in range(k):
            cm[t, p] = np.sum((truth == t) & (pred == p) & keep)
    tp = np.diag(cm)
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = (2 * tp) / (2 * tp + fp + fn)
        iou = tp / (tp + fp + fn)
    return cm, dice, iou, np.nanmean(iou)


def test_probs_argmax_matches_numpy_exactly(tmp_path) -> None:
    rng = np.random.default_rng(0)
    probs = rng.integers(0, 256, (3, 45, 61)).astype(np.uint8)
    truth = rng.integers(0, 3, (45, 61)).astype(np.uint8)
    roi = rng.random((45, 61)) > 0.3
    out = make_output(tmp_path, probs, "probs")
    scores = evaluate(out, truth, roi=roi.astype(np.uint8))
    cm, dice, iou, miou = numpy_scores(truth, probs.argmax(0), 3, roi)
    np.testing.assert_array_equal(scores.confusion, cm)
    assert scores.dice.tolist() == dice.tolist()  # bit-identical floats
    assert scores.iou.tolist() == iou.tolist()
    assert scores.miou == miou
    assert scores.confusion.sum() == roi.sum()


def test_labels_absent_class_and_json(tmp_path, capsys) -> None:
    labels = np.zeros((20, 30), np.uint8)
    labels[5:15, 5:20] = 1
    truth = np.zeros((20, 30), np.uint8)
    truth[6:16, 5:18] = 1
    out = make_output(tmp_path, labels, "labels", classes=3)
    tifffile.imwrite(tmp_path / "truth.tif", truth)
    assert cli(["eval", str(out), str(tmp_path / "truth.tif"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    cm, dice, iou, miou = numpy_scores(truth, labels, 3)
    assert report["confusion"] == cm.tolist()
    assert report["dice"][:2] == dice[:2].tolist() and report["dice"][2] is None  # class 2: nowhere
    assert report["miou"] == miou
    assert cli(["eval", str(out), str(tmp_path / "truth.tif")]) == 0
    assert "mIoU" in capsys.readouterr().out


def test_single_channel_threshold_and_truth_options(tmp_path) -> None:
    p = np.array([[[0, 127, 128, 255]]], np.uint8)
    out = make_output(tmp_path, p, "probs", chunk=4)
    truth = np.array([[0, 255, 255, 0]], np.uint8)
    scores = evaluate(out, truth, truth_threshold=128)
    np.testing.assert_array_equal(scores.confusion, [[1, 1], [1, 1]])
    scores = evaluate(out, np.array([[0, 255, 1, 1]], np.uint8), ignore_index=255)
    np.testing.assert_array_equal(scores.confusion, [[1, 0], [0, 2]])
    with pytest.raises(InputError, match="truth-threshold"):
        evaluate(out, truth)
    with pytest.raises(InputError, match="output's size"):
        evaluate(out, np.zeros((2, 4), np.uint8))


def test_low_resolution_roi_is_scaled(tmp_path) -> None:
    labels = np.random.default_rng(1).integers(0, 2, (40, 60)).astype(np.uint8)
    truth = np.random.default_rng(2).integers(0, 2, (40, 60)).astype(np.uint8)
    small = np.zeros((4, 6), np.uint8)
    small[1:3, 2:5] = 1
    out = make_output(tmp_path, labels, "labels", classes=2)
    keep = np.kron(small, np.ones((10, 10), np.uint8)).astype(bool)
    cm, *_ = numpy_scores(truth, labels, 2, keep)
    np.testing.assert_array_equal(evaluate(out, truth, roi=small).confusion, cm)


def test_reads_one_chunk_row_at_a_time(tmp_path, monkeypatch) -> None:
    """Structure, not timing: every read of the prediction and of the truth is one chunk row."""
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((2, 300, 170)).astype(np.float32)
    truth = rng.integers(0, 2, (300, 170)).astype(np.uint8)
    out = make_output(tmp_path, logits, "logits", chunk=32)
    tifffile.imwrite(tmp_path / "truth.tif", truth, tile=(32, 32))
    pred_reads, truth_reads = [], []
    real_to_labels, real_confusion = evaluate_mod.to_labels, evaluate_mod._confusion

    def spy_labels(values, kind, *rest):
        pred_reads.append(values.shape)
        return real_to_labels(values, kind, *rest)

    def spy_confusion(result, src, *args):
        real_read = src.read

        def read(y0, y1, x0, x1):
            truth_reads.append((y1 - y0, x1 - x0))
            return real_read(y0, y1, x0, x1)

        src.read = read
        return real_confusion(result, src, *args)

    monkeypatch.setattr(evaluate_mod, "to_labels", spy_labels)
    monkeypatch.setattr(evaluate_mod, "_confusion", spy_confusion)
    scores = evaluate(out, tmp_path / "truth.tif")
    assert len(pred_reads) == len(truth_reads) == 10  # ceil(300 / 32) chunk rows
    assert all(s[1] <= 32 and s[2] == 170 for s in pred_reads)
    assert all(h <= 32 for h, _ in truth_reads)
    cm, *_ = numpy_scores(truth, logits.argmax(0), 2)
    np.testing.assert_array_equal(scores.confusion, cm)


def test_table_prints_whole_class_names_and_threshold_refuses_a_multi_class_truth(tmp_path, capsys) -> None:
    names = ["background", "epithelium", "lymphocyte"]
    labels = np.random.default_rng(3).integers(0, 3, (24, 32)).astype(np.uint8)
    truth = np.random.default_rng(4).integers(0, 3, (24, 32)).astype(np.uint8)
    out = make_output(tmp_path, labels, "labels", classes=3)
    g = zarr.open_group(str(out), mode="r+")
    record = dict(g.attrs["tiler"])
    record["model"] = {"spec": {**record["model"]["spec"], "class_names": names}}
    g.attrs["tiler"] = record
    tifffile.imwrite(tmp_path / "truth.tif", truth)
    assert cli(["eval", str(out), str(tmp_path / "truth.tif")]) == 0
    table = capsys.readouterr().out.splitlines()
    header = table[table.index("confusion matrix (rows: truth, columns: prediction)") + 1]
    assert header.split() == names
    cm, *_ = numpy_scores(truth, labels, 3)
    rows = table[-3:]
    assert [r.split()[0] for r in rows] == names
    assert [[int(v) for v in r.split()[1:]] for r in rows] == cm.tolist()
    assert cli(["eval", str(out), str(tmp_path / "truth.tif"), "--truth-threshold", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {tmp_path / 'truth.tif'}: --truth-threshold makes a two-value mask binary, "
                          "but this truth holds more values (0, 1, 2)")
