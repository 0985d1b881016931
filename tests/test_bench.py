"""compare/bench.py: option checks, the GEMM floor's bookkeeping, and a quick run's output shape.

Timings are never asserted: they depend on the machine and on whatever else runs on it.
"""

import argparse
import json
import os

import numpy as np
import pytest

from compare import bench
from compare.errors import UsageError
from compare.tolerances import matmul_bound
from helpers import assert_close_bound

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def parse(*argv):
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    return p.parse_args([str(a) for a in argv])


# ------------------------------------------------------------------------------ options


@pytest.mark.parametrize("arch", ["785-128-10", "784-128-9", "784-abc-10", "784-0-10", "784", "784--10", ""])
def test_bad_arch_is_a_usage_error_naming_option_and_value(arch):
    with pytest.raises(UsageError, match="--archs") as info:
        bench.settings(parse("--archs", "784-64-10", arch))
    assert repr(arch) in str(info.value) and "784-128-10" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("batch", ["0", "-1", "60001", "abc", "2.5"])
def test_bad_batch_is_a_usage_error(batch):
    with pytest.raises(UsageError, match=r"--batches: invalid value .* from 1 to 60000"):
        bench.settings(parse("--batches", "32", batch))


@pytest.mark.parametrize("threads", ["0", str((os.cpu_count() or 1) + 1), "many"])
def test_bad_threads_is_a_usage_error(threads):
    with pytest.raises(UsageError, match=rf"--threads: invalid value '{threads}': .* from 1 to {os.cpu_count()}"):
        bench.settings(parse("--threads", threads))


def test_main_checks_options_before_any_work(tmp_path):
    out = tmp_path / "never"
    with pytest.raises(UsageError, match="--archs"):
        bench.main(parse("--archs", "784-10-784", "--out", out, "--data-dir", tmp_path / "no-data", "--offline"))
    assert not out.exists()


def test_a_non_empty_out_directory_is_refused(tmp_path):
    (tmp_path / "old.txt").write_text("an earlier run")
    with pytest.raises(UsageError, match="--out: .* not empty"):
        bench.settings(parse("--out", tmp_path))


def test_defaults_and_quick_grid():
    full = bench.settings(parse())
    assert full.archs == [(784, 128, 10), (784, 1024, 10), (784, 512, 256, 10)]
    assert full.batches == [32, 64, 256, 1024] and full.dtype == "float32"
    assert full.threads == os.cpu_count() and full.compile_note is None and full.epoch_images == 60000
    assert full.out.name.startswith("bench-")

    quick = bench.settings(parse("--quick"))
    assert quick.archs == [(784, 128, 10)] and quick.batches == [32, 256]
    assert "--quick" in quick.compile_note and 0 < quick.epoch_images < 60000
    assert bench.settings(parse("--quick", "--batches", "64", "--no-epoch")).batches == [64]
    assert bench.settings(parse("--quick", "--no-epoch")).epoch_images == 0
    assert "--no-compile" in bench.settings(parse("--no-compile")).compile_note
    assert bench.settings(parse("--threads", "1", "--dtype", "float64")).threads == 1


# ------------------------------------------------------------------------------ the floor


def test_floor_of_a_three_layer_net_has_exactly_the_eight_products():
    B, sizes = 64, (784, 512, 256, 10)
    products = bench.gemm_products(sizes, B)
    kinds = [(p["kind"], p["layer"]) for p in products]
    assert kinds == [("forward", 1), ("forward", 2), ("forward", 3),
                     ("dW", 3), ("dx", 3), ("dW", 2), ("dx", 2), ("dW", 1)]  # no ∂L/∂x for the input layer
    shapes = {(p["kind"], p["layer"]): tuple(p["shape"]) for p in products}
    assert shapes[("forward", 1)] == (B, 784, 512)  # z (B, in) · Wᵀ (in, out)
    assert shapes[("dW", 1)] == (512, B, 784)  # δᵀ (out, B) · z (B, in)
    assert shapes[("dx", 2)] == (B, 256, 512)  # δ (B, out) · W (out, in)
    pairs = [(784, 512), (512, 256), (256, 10)]
    expected = 2 * B * (2 * sum(i * o for i, o in pairs) + sum(i * o for i, o in pairs[1:]))
    assert sum(p["flops"] for p in products) == expected


def test_floor_operands_have_the_real_steps_shapes_and_both_floors_compute_the_same():
    sizes, B = (784, 16, 8, 10), 5
    x = np.random.default_rng(3).standard_normal((B, 784)).astype(np.float32)
    products = bench.gemm_products(sizes, B)
    ops = bench.floor_operands(products, x)
    assert len(ops) == len(products) == 3 + 3 + 2
    for p, (a, b, out) in zip(products, ops):
        m, k, n = p["shape"]
        assert a.shape == (m, k) and b.shape == (k, n) and out.shape == (m, n)
        assert a.dtype == b.dtype == out.dtype == np.float32
    fwd1, dw1 = ops[0], ops[-1]
    assert fwd1[0] is x and dw1[1] is x  # layer 1 works on the MNIST batch itself
    # the manual step's layouts: Wᵀ stored as an (in, out) C array, δᵀ a view of a (B, out) δ, dW transposed
    assert fwd1[1].flags.c_contiguous and not dw1[0].flags.c_contiguous and dw1[2].T.flags.c_contiguous

    for layouts in (None, [bench.LAYOUTS[-1]] * len(products)):  # the manual step's, and all transposed
        ops = bench.floor_operands(products, x, layouts)
        for floor in bench.floor_steps(ops):  # numpy, then torch, into the same output arrays
            for _, _, out in ops:
                out.fill(np.nan)
            floor()
            for a, b, out in ops:
                # each float32 BLAS sums in its own order: within 2·γ_k·(|a| @ |b|) of the exact product
                a64, b64 = a.astype(np.float64), b.astype(np.float64)
                assert_close_bound(out, a64 @ b64, matmul_bound(a, b))


def test_every_layout_holds_the_same_numbers_in_its_own_memory_order():
    x = np.random.default_rng(4).standard_normal((3, 784)).astype(np.float32)
    products = bench.gemm_products((784, 6, 10), 3)
    reference = bench.floor_operands(products, x, [bench.LAYOUTS[0]] * len(products))
    assert len(set(bench.LAYOUTS)) == 8
    for layout in bench.LAYOUTS:
        ops = bench.floor_operands(products, x, [layout] * len(products))
        for (a, b, out), (a0, b0, _) in zip(ops, reference):
            for arr, transposed in zip((a, b, out), layout):
                assert arr.T.flags.c_contiguous if transposed else arr.flags.c_contiguous
            np.testing.assert_array_equal(a, a0)
            np.testing.assert_array_equal(b, b0)
    assert bench.layout_name((True, False, True)) == "Aᵀ·B->Cᵀ"


def test_the_floor_keeps_the_fastest_layout_of_each_product(monkeypatch):
    x = np.random.default_rng(5).standard_normal((4, 784)).astype(np.float32)
    products = bench.gemm_products((784, 6, 10), 4)
    slow = {layout: 1.0 + i for i, layout in enumerate(bench.LAYOUTS)}
    fastest = bench.LAYOUTS[5]
    slow[fastest] = 0.5

    def fake_time(call, budget_s):  # the memory order of the call's operands (a, b, out) decides its "time"
        return slow[tuple(not np.asarray(v).flags.c_contiguous for v in call.__defaults__)]

    monkeypatch.setattr(bench, "_quick_time", fake_time)
    best = bench.fastest_layouts(products, x, 0.001)
    assert best == {"numpy": [fastest] * len(products), "torch": [fastest] * len(products)}


def test_table_and_ratios_from_a_synthetic_point():
    r = lambda med: {"median_s": med, "iqr_s": med / 10, "q1_s": med * 0.95, "q3_s": med * 1.05,  # noqa: E731
                     "runs": 3, "steps": 30}
    point = {"arch": "784-128-10", "batch": 32, "dtype": "float32", "manual_over_torch": 2.0,
             "manual_over_floor": 4.0, "images_per_s_manual": 32 / 4e-4,
             "results": {"manual": r(4e-4), "torch": r(2e-4), "floor_numpy": r(1e-4), "floor_torch": r(1e-4)}}
    table = bench.format_table([point]).splitlines()
    assert len(table) == 2 and "compiled µs" in table[0]
    assert table[1].split()[:4] == ["784-128-10", "b32", "float32", "400"]
    assert "-" in table[1].split() and "80,000" in table[1]


# ------------------------------------------------------------------------------ a quick run


@pytest.mark.slow
def test_quick_run_writes_a_json_entry_for_every_point_and_implementation(tmp_path, mnist_dir, capsys):
    out = tmp_path / "b"
    args = parse("--quick", "--no-compile", "--out", out, "--offline", "--data-dir", mnist_dir)
    assert bench.main(args) == 0
    assert {p.name for p in out.iterdir()} == {bench.JSON_NAME, bench.PLOT_NAME}  # and no temporary files
    assert (out / bench.PLOT_NAME).read_bytes()[:8] == PNG_MAGIC

    report = json.loads((out / bench.JSON_NAME).read_text())
    grid = [(a, b) for a in bench.QUICK_ARCHS for b in bench.QUICK_BATCHES]
    assert [(p["arch"], p["batch"]) for p in report["points"]] == grid
    for p in report["points"]:
        assert set(p["results"]) == {"manual", "torch", "floor_numpy", "floor_torch"}
        assert "--no-compile" in p["skipped"]["compiled"] and p["compile_s"] is None
        for name, m in p["results"].items():
            assert m["median_s"] > 0 and m["iqr_s"] >= 0 and m["runs"] >= 1 and m["steps"] >= m["runs"], name
            assert m["q1_s"] <= m["median_s"] <= m["q3_s"], name
        assert len(p["floor"]["products"]) == 2 + 2 + 1 and p["floor"]["flops"] > 0
        assert p["dtype"] == "float32" and p["images_per_s_manual"] > 0

    assert report["config"]["manual_update"] == bench.UPDATE_FUSED  # NumPy's wheels ship OpenBLAS
    machine = report["machine"]
    assert machine["cores"] == os.cpu_count() and machine["threads"] == os.cpu_count()
    assert {"numpy", "torch", "python", "blas", "loadavg_start", "loadavg_end"} <= set(machine)
    assert machine["blas"] and all("internal_api" in lib and "num_threads" in lib for lib in machine["blas"])

    epoch = report["epoch"]
    assert epoch["arch"] == "784-256-10" and epoch["batch"] == 32 and epoch["images"] == bench.QUICK_EPOCH_IMAGES
    for side in ("manual", "torch"):
        assert epoch[side]["seconds"] > 0 and epoch[side]["images_per_s"] > 0

    stdout = capsys.readouterr().out
    for arch, batch in grid:
        assert f"{arch} b{batch} float32" in stdout
    assert "epoch (784-256-10 float32, batch 32" in stdout


def test_cli_bad_values_get_one_line(tmp_path):
    from helpers import assert_one_line_error, run_cli

    proc = run_cli("bench", "--archs", "785-128-10", "--out", tmp_path / "never")
    assert_one_line_error(proc, 2, "--archs", "'785-128-10'")
    assert not (tmp_path / "never").exists()


def test_without_a_reachable_gemm_the_bench_says_so_and_records_it(tmp_path, mnist_dir, monkeypatch, capsys):
    from manual import blas

    monkeypatch.setattr(blas, "descend_available", lambda dtype: False)
    monkeypatch.setattr(blas, "gemm_descend", lambda a, b, c: False)
    out = tmp_path / "b"
    args = parse("--quick", "--no-compile", "--no-epoch", "--batches", "32", "--out", out, "--offline",
                 "--data-dir", mnist_dir)
    assert bench.main(args) == 0
    report = json.loads((out / bench.JSON_NAME).read_text())
    assert report["config"]["manual_update"] == bench.UPDATE_FALLBACK
    assert report["points"][0]["results"]["manual"]["median_s"] > 0
    assert f"manual: {bench.UPDATE_FALLBACK}" in capsys.readouterr().out
