"""The images workload on real files: kernels agree, backends agree, bad files are recorded."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from smallbig.backends import available, get_backend
from smallbig.workloads.base import checksum
from smallbig.workloads.imagegen import make_images
from smallbig.workloads.images import ImageItem, balanced_order, images_workload, process_image
from smallbig.workloads.kernels import KERNELS


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("images")
    make_images(directory, 12, seed=3)
    return directory


def test_dataset_is_a_realistic_deterministic_mix(image_dir, tmp_path):
    files = sorted(image_dir.iterdir())
    assert len(files) == 12
    kinds = set()
    for path in files:
        with Image.open(path) as image:
            kinds.add((image.format, image.mode))
            assert min(image.size) >= 200 and max(image.size) <= 3000 * 1.35
            pixels = np.asarray(image.convert("L"), dtype=np.float64)
            assert pixels.std() > 10  # structure and noise, not flat colour
    assert {fmt for fmt, _ in kinds} == {"JPEG", "PNG"} and {m for _, m in kinds} >= {"L"}
    again = make_images(tmp_path, 12, seed=3)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in files]


def test_every_prefix_of_the_order_has_about_the_mean_cost(image_dir):
    rng = np.random.default_rng(5)
    costs = list(rng.pareto(1.5, 200) + 1)  # a heavy tail, as a few huge scans make
    order = balanced_order(costs, seed=1)
    assert sorted(order) == list(range(200)) and order == balanced_order(costs, seed=1)
    mean = np.mean(costs)
    for n in (1, 3, 10, 30, 100):
        prefix = np.mean([costs[i] for i in order[:n]])
        assert abs(prefix - mean) / mean < 0.25, n
    # The folder's own items: one image of about the mean size comes first.
    items = images_workload(image_dir).prepare(24)
    pixels = []
    for item in items:
        with Image.open(item.path) as image:
            pixels.append(image.width * image.height)
    mean = np.mean(pixels[:12])  # the first 12 are the 12 files once each
    assert sorted(i.path for i in items[:12]) == sorted(str(p) for p in image_dir.iterdir())
    assert abs(np.mean(pixels[:3]) - mean) / mean < 0.35


def test_four_kernels_agree_on_a_decoded_image(image_dir):
    path = sorted(image_dir.glob("*.jpg"))[0]
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L").resize((97, 83)))
    outputs = {name: kernel(pixels) for name, kernel in KERNELS.items()}
    for name, out in outputs.items():
        assert out.dtype == np.uint8 and out.shape == pixels.shape
        np.testing.assert_array_equal(out, outputs["python"], err_msg=name)
    assert not np.array_equal(outputs["numpy"], pixels)  # the kernel does change the image


def test_process_image_returns_a_small_summary(image_dir, tmp_path):
    path = sorted(image_dir.iterdir())[0]
    result = process_image(ImageItem(str(path), out_dir=str(tmp_path)))
    assert result["shape"] == [256, 256]
    with Image.open(result["output"]) as saved:
        assert saved.size == (256, 256) and saved.mode == "L"
    assert len(repr(result)) < 400  # never the array


SPECS = ["serial", "threads", "processes"] + [
    n for n in ("dask", "ray", "spark") if n in available()
]


def test_checksums_equal_on_every_backend(image_dir):
    # Each file by its path and by its bytes shipped with the item: one start of each
    # backend for both (a start of each per way cost ~20 s more).
    ways = {ship: images_workload(image_dir, ship_bytes=ship) for ship in (False, True)}
    items = {ship: w.prepare(20, seed=1) for ship, w in ways.items()}
    sums = {}
    for spec in SPECS:
        with get_backend(spec, workers=None if spec == "serial" else 2) as ex:
            for ship, workload in ways.items():
                outcomes = workload.run(ex, items[ship])
                assert all(o.error is None for o in outcomes), (spec, ship)
                sums[spec, ship] = checksum(outcomes)
    assert len(set(sums.values())) == 1, sums


def _bad_files(directory, good_source):
    data = good_source.read_bytes()
    (directory / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (directory / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    (directory / "empty.jpg").write_bytes(b"")
    (directory / "notes.txt").write_text("not an image at all\n")
    # 196 megapixels of 1-bit zeros: a few KB on disk, over twice Pillow's pixel limit.
    Image.new("1", (14_000, 14_000)).save(directory / "bomb.png")
    (directory / "good.jpg").write_bytes(data)


@pytest.mark.parametrize("spec", ["serial", "processes"])
def test_bad_files_are_recorded_and_the_rest_completes(image_dir, tmp_path, spec):
    _bad_files(tmp_path, sorted(image_dir.glob("*.jpg"))[0])
    workload = images_workload(tmp_path)
    items = sorted(workload.prepare(6), key=lambda i: i.id)
    with get_backend(spec, workers=None if spec == "serial" else 2) as ex:
        outcomes = {o.item: o for o in workload.run(ex, items, chunksize="auto")}
    assert outcomes["good.jpg"].error is None and outcomes["good.jpg"].value["shape"] == [256, 256]
    expected = {
        "truncated.jpg": "OSError",
        "corrupt.png": "UnidentifiedImageError",
        "empty.jpg": "UnidentifiedImageError",
        "notes.txt": "UnidentifiedImageError",
        "bomb.png": "DecompressionBombError",
    }
    for name, error in expected.items():
        assert outcomes[name].error is not None and outcomes[name].error.startswith(error), (
            name,
            outcomes[name],
        )


def test_unknown_kernel_and_empty_folder_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="unknown kernel 'gpu'"):
        images_workload(tmp_path, kernel="gpu")
    with pytest.raises(ValueError, match="no files in image folder"):
        images_workload(tmp_path)


@pytest.mark.parametrize("spec", ["processes", "dask"])
def test_shipped_bytes_need_no_shared_files_and_give_the_same_results(image_dir, tmp_path, spec):
    if spec not in available():
        pytest.skip(f"{spec} is not installed")
    own = tmp_path / "copy"
    own.mkdir()
    for f in sorted(image_dir.iterdir())[:5]:
        (own / f.name).write_bytes(f.read_bytes())
    by_path = images_workload(own).prepare(8)
    shipped = images_workload(own, ship_bytes=True)
    items = shipped.prepare(8)
    assert shipped.params["ship_bytes"] and all(i.data for i in items)
    assert shipped.data_size(items[0]) == len(items[0].data)
    with get_backend("serial") as ex:
        expected = checksum(images_workload(own).run(ex, by_path))
    for f in own.iterdir():  # the workers can only have the bytes they were sent
        f.unlink()
    with get_backend(spec, workers=2) as ex:
        outcomes = shipped.run(ex, items)
    assert all(o.error is None for o in outcomes), [o.error for o in outcomes]
    assert checksum(outcomes) == expected


def test_bytes_are_shipped_by_default_only_to_workers_off_this_machine():
    from smallbig.running.runner import remote_workers

    assert not remote_workers(["serial", "processes", "dask", "dask@tcp://127.0.0.1:8786"])
    assert not remote_workers(["ray@localhost:6379"])
    assert remote_workers(["serial", "dask@tcp://198.18.0.10:8786"])
    assert remote_workers(["ray@head.example:6379"])
