"""compare/bench/: options, the GEMM floor's bookkeeping, the worker processes, the reliability
classifier, the machine record, the output, a quick run's shape, and that the timed steps do the
same work (JAX and torch against the manual step on a real MNIST batch).

Timings are never asserted: they depend on the machine and on whatever else runs on it.
"""

import argparse
import importlib.util
import json
import os
import re

import numpy as np
import pytest
import torch

from compare import spin
from compare import bench
from compare.bench import breakdown, config, floor, grid, machine, output, parts, reliability, steps, timing, worker
from compare.errors import CrosscheckError, UsageError
from compare.tolerances import gradient_rel, matmul_bound, unit_roundoff
from helpers import assert_close_bound, assert_one_line_error, run_cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HAVE_GPU = torch.cuda.is_available()


def parse(*argv):
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    return p.parse_args([str(a) for a in argv])


# ------------------------------------------------------------------------------ options


@pytest.mark.parametrize("arch", ["785-128-10", "784-128-9", "784-abc-10", "784-0-10", "784", "784--10", ""])
def test_bad_arch_is_a_usage_error_naming_option_and_value(arch):
    with pytest.raises(UsageError, match="--archs") as info:
        bench.settings(parse("--archs", "784-64-10", arch))
    assert repr(arch) in str(info.value) and "784" in str(info.value) and "10" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("option, value, allowed", [
    ("--batches", "0", "from 1 to 60000"), ("--batches", "60001", "from 1 to 60000"),
    ("--batches", "abc", "from 1 to 60000"), ("--batches", "2.5", "from 1 to 60000"),
    ("--threads", "0", f"from 1 to {os.cpu_count()}"), ("--threads", str((os.cpu_count() or 1) + 1), "from 1 to"),
    ("--threads", "many", "from 1 to")])
def test_bad_integer_options_are_refused_naming_option_value_and_range(option, value, allowed, capsys):
    with pytest.raises(SystemExit) as info:
        parse(option, value)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert option in err and repr(value) in err and allowed in err


def test_cli_bad_values_get_one_line(tmp_path):
    proc = run_cli("bench", "--archs", "785-128-10", "--out", tmp_path / "never")
    assert_one_line_error(proc, 2, "--archs", "'785-128-10'")
    proc = run_cli("bench", "--batches", "0", "--out", tmp_path / "never")
    assert_one_line_error(proc, 2, "--batches", "'0'")
    assert not (tmp_path / "never").exists()


def test_main_checks_options_before_any_work(tmp_path):
    out = tmp_path / "never"
    with pytest.raises(UsageError, match="--archs"):
        bench.main(parse("--archs", "784-10-784", "--out", out, "--data-dir", tmp_path / "no-data", "--offline"))
    assert not out.exists()


def test_a_non_empty_out_directory_is_refused_before_any_work(tmp_path):
    (tmp_path / "old.txt").write_text("an earlier run")
    with pytest.raises(UsageError, match="--out: .* not empty"):
        bench.main(parse("--out", tmp_path, "--data-dir", tmp_path / "no-data", "--offline"))
    assert [p.name for p in tmp_path.iterdir()] == ["old.txt"]


def test_defaults_and_quick_grid():
    full = bench.settings(parse())
    assert full.archs == [(784, 128, 10), (784, 1024, 10), (784, 512, 256, 10)]
    assert full.batches == [32, 64, 256, 1024] and full.dtype == "float32"
    assert full.threads == machine.default_threads() and "compiled" not in full.skipped and full.epoch_images == 60000
    assert full.timing.max_processes >= reliability.MIN_PROCESSES and full.out is None

    quick = bench.settings(parse("--quick"))
    assert quick.archs == [(784, 128, 10)] and quick.batches == [32, 256]
    assert reliability.MIN_PROCESSES <= quick.timing.max_processes <= full.timing.max_processes
    assert bench.settings(parse("--quick", "--max-processes", "20")).timing.max_processes == 20
    assert "--quick" in quick.skipped["compiled"] and 0 < quick.epoch_images < 60000
    assert bench.settings(parse("--quick", "--batches", "64", "--no-epoch")).batches == [64]
    assert bench.settings(parse("--quick", "--no-epoch")).epoch_images == 0
    assert "--no-compile" in bench.settings(parse("--no-compile")).skipped["compiled"]
    assert "--no-jax" in bench.settings(parse("--no-jax")).skipped["jax"]
    assert bench.settings(parse("--threads", "1", "--dtype", "float64")).threads == 1
    for t in (config.FULL, config.QUICK):  # long enough for the machine's CPU accounting to judge
        assert t.blocks * t.block_s >= reliability.MIN_REGION_S


def test_without_jax_the_column_is_skipped_with_how_to_add_it(monkeypatch):
    monkeypatch.setattr(config, "_jax_missing", lambda: True)
    reason = bench.settings(parse("--quick")).skipped["jax"]
    assert "not installed" in reason and "pip install -e '.[jax]'" in reason


# ------------------------------------------------------------------------------ the floor


def test_floor_of_a_three_layer_net_has_exactly_the_eight_products():
    B, sizes = 64, (784, 512, 256, 10)
    products = floor.gemm_products(sizes, B)
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
    products = floor.gemm_products(sizes, B)
    plain = [floor.LAYOUTS[0]] * len(products)
    ops = floor.floor_operands(products, x, plain)
    assert len(ops) == len(products) == 3 + 3 + 2
    for p, (a, b, out) in zip(products, ops):
        m, k, n = p["shape"]
        assert a.shape == (m, k) and b.shape == (k, n) and out.shape == (m, n)
        assert a.dtype == b.dtype == out.dtype == np.float32
    assert ops[0][0] is x and ops[-1][1] is x  # layer 1 works on the MNIST batch itself

    for layouts in (plain, [floor.LAYOUTS[-1]] * len(products)):  # all C-order, and all transposed
        ops = floor.floor_operands(products, x, layouts)
        for library in floor.LIBRARIES:  # numpy, then torch, into the same output arrays
            for _, _, out in ops:
                out.fill(np.nan)
            floor.floor_step(ops, library)()
            for a, b, out in ops:
                # each float32 BLAS sums in its own order: within 2·γ_k·(|a| @ |b|) of the exact product
                a64, b64 = a.astype(np.float64), b.astype(np.float64)
                assert_close_bound(out, a64 @ b64, matmul_bound(a, b))


def test_every_layout_holds_the_same_numbers_in_its_own_memory_order():
    x = np.random.default_rng(4).standard_normal((3, 784)).astype(np.float32)
    products = floor.gemm_products((784, 6, 10), 3)
    reference = floor.floor_operands(products, x, [floor.LAYOUTS[0]] * len(products))
    assert len(set(floor.LAYOUTS)) == 8
    for layout in floor.LAYOUTS:
        ops = floor.floor_operands(products, x, [layout] * len(products))
        for (a, b, out), (a0, b0, _) in zip(ops, reference):
            for arr, transposed in zip((a, b, out), layout):
                assert arr.T.flags.c_contiguous if transposed else arr.flags.c_contiguous
            np.testing.assert_array_equal(a, a0)
            np.testing.assert_array_equal(b, b0)
    assert floor.layout_name((True, False, True)) == "Aᵀ·B->Cᵀ"


def test_the_floor_keeps_the_fastest_layout_of_each_product(monkeypatch):
    x = np.random.default_rng(5).standard_normal((4, 784)).astype(np.float32)
    products = floor.gemm_products((784, 6, 10), 4)
    slow = {layout: 1.0 + i for i, layout in enumerate(floor.LAYOUTS)}
    fastest = floor.LAYOUTS[5]
    slow[fastest] = 0.5

    def fake_time(call, budget_s, sync=None):  # the memory order of the call's operands (a, b, out) decides its "time"
        return slow[tuple(not np.asarray(v).flags.c_contiguous for v in call.__defaults__)]

    monkeypatch.setattr(floor, "_quick_time", fake_time)
    best = floor.fastest_layouts(products, x, 0.001)
    assert best == {"numpy": [fastest] * len(products), "torch": [fastest] * len(products)}
    step, recorded, sync = floor.floor_bench_step((784, 6, 10), x, "numpy", 0.001)
    assert sync is None  # nothing to wait for on the CPU
    assert [p["layout"] for p in recorded] == [floor.layout_name(fastest)] * len(products)
    step()


# ------------------------------------------------------------------------------ the machine's accounting


def test_proc_stat_is_read_per_allowed_cpu_in_seconds():
    text = ("cpu  300 0 60 1000 5 1 2 7 0 0\n"
            "cpu0 100 0 20 500 2 0 1 3 0 0\n"
            "cpu1 200 0 40 500 3 1 1 4 0 0\n"
            "intr 12345 0 0\nctxt 999\n")
    assert machine.read_proc_stat(text, None, hz=100) == {"busy_s": 3.63, "steal_s": 0.07, "cpus": 2}
    assert machine.read_proc_stat(text, {1}, hz=100) == {"busy_s": 2.42, "steal_s": 0.04, "cpus": 1}


# ------------------------------------------------------------------------------ workers


def test_workers_run_with_the_users_environment_not_the_harness_spin_settings():
    environ = {"PATH": "/bin", "OPENBLAS_THREAD_TIMEOUT": "18", "GOMP_SPINCOUNT": "10000"}
    env = worker.worker_env(environ, {"OPENBLAS_THREAD_TIMEOUT": None, "GOMP_SPINCOUNT": None})
    assert env == {"PATH": "/bin", worker.WORKER_MARK: "1"}
    env = worker.worker_env(environ, {"OPENBLAS_THREAD_TIMEOUT": "25", "GOMP_SPINCOUNT": None})
    assert env["OPENBLAS_THREAD_TIMEOUT"] == "25" and "GOMP_SPINCOUNT" not in env
    assert environ["OPENBLAS_THREAD_TIMEOUT"] == "18"  # the caller's environment is not touched


def _tiny_spec(tmp_path, impl="manual", sizes=(784, 8, 10), labels=(0, 3, 9, 5)):
    x = np.random.default_rng(0).standard_normal((len(labels), 784)).astype(np.float32)
    np.savez(tmp_path / "b.npz", x=x, y=np.array(labels, dtype=np.int64))
    return {"impl": impl, "sizes": list(sizes), "batch_file": str(tmp_path / "b.npz"), "threads": 1, "lr": 0.01,
            "warmup_s": 0.001, "blocks": 2, "block_s": 0.002, "layout_s": 0.0005}


@pytest.mark.parametrize("user", [None, "25"])
def test_a_worker_process_sees_only_the_spin_settings_the_user_made(tmp_path, monkeypatch, user):
    monkeypatch.setattr(spin, "USER_SPIN_ENV", {"OPENBLAS_THREAD_TIMEOUT": user, "GOMP_SPINCOUNT": None})
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "18")  # as crosscheck's entry point sets it (compare.spin)
    result = worker.spawn(_tiny_spec(tmp_path))
    assert "error" not in result, result
    assert result["env"].get("OPENBLAS_THREAD_TIMEOUT") == user and "GOMP_SPINCOUNT" not in result["env"]
    assert result["pid"] != os.getpid() and result["budget"]["threadpoolctl"] == 1
    assert len(result["times_s"]) == 2 and result["steps"] >= 2 and result["wall_s"] > 0 and result["cpu_s"] > 0
    assert result["info"]["function"]  # what the manual column times, recorded
    assert 0 < result["reference_s"] < 1  # the machine's speed around the work: one product, timed


def test_a_failing_worker_reports_one_line(tmp_path):
    spec = _tiny_spec(tmp_path, sizes=(784, 8, 7))  # a label 9 for 7 classes
    result = worker.spawn(spec)
    assert result["impl"] == "manual" and "\n" not in result["error"] and "Traceback" in result["traceback"]


def test_an_optional_implementation_that_fails_is_skipped_others_stop_the_bench(monkeypatch):
    calls = []

    def fake_spawn(spec):
        calls.append(spec["impl"])
        return {"error": "RuntimeError: no C++ compiler"} if spec["impl"] in ("compiled", "floor_torch") else \
            {"times_s": [1e-3], "steps": 1, "wall_s": 0.5, "cpu_s": 0.5}

    monkeypatch.setattr(worker, "spawn", fake_spawn)
    skipped = {}
    s = bench.settings(parse("--quick"))
    runs = grid.spawn_rounds(["manual", "compiled", "torch"], lambda impl: {"impl": impl}, s, "here", skipped)
    assert calls[:5] == ["manual", "compiled", "torch", "torch", "manual"]  # rotated, and compiled tried once
    assert calls.count("compiled") == 1 and len(calls) == 1 + 2 * reliability.MIN_PROCESSES
    assert set(runs) == {"manual", "torch"} and skipped == {"compiled": "failed: RuntimeError: no C++ compiler"}
    with pytest.raises(CrosscheckError, match="floor_torch worker failed at here: RuntimeError"):
        grid.spawn_rounds(["manual", "floor_torch"], lambda impl: {"impl": impl}, s, "here", {})


# ------------------------------------------------------------------------------ machine and output


def test_the_machine_record_names_cpu_blas_kernels_backends_and_versions():
    pools = [{"user_api": "blas", "internal_api": "openblas", "prefix": "libscipy_openblas", "version": "0.3.30",
              "architecture": "SkylakeX", "threading_layer": "pthreads", "filepath": "/x/numpy.libs/libopenblas.so",
              "num_threads": 2}]
    gomp = [{"user_api": "openmp", "internal_api": "openmp", "prefix": "libgomp", "version": None,
             "filepath": "/x/torch/lib/libgomp.so.1", "num_threads": 2}]
    workers = {"manual": {"threadpools": pools, "info": {"function": "f"}},
               "torch": {"threadpools": pools + gomp, "torch_backend": machine.torch_backend()},
               "jax": {"threadpools": pools, "info": {"backend": "cpu", "devices": ["cpu:0"]}}}
    record = machine.record(2, workers)
    assert record["cores"] == os.cpu_count() and record["threads"] == 2
    assert {"cpu", "vendor", "physical_cores", "platform"} <= set(record)
    assert {"numpy", "scipy", "torch", "jax", "python"} <= set(record["versions"])
    assert record["versions"]["numpy"] == np.__version__
    assert [lib["loaded_by"] for lib in record["blas"]] == [["manual", "torch", "jax"], ["torch"]]
    assert record["blas"][0]["architecture"] == "SkylakeX" and record["blas"][0]["filepath"].endswith(".so")
    tb = record["torch_backend"]
    assert {"mkl", "onednn", "blas_info", "cpu_capability", "threads", "version"} <= set(tb)
    assert record["jax_backend"] == {"backend": "cpu", "devices": ["cpu:0"]}

    lines = output.head(record, {"threads": 2, "min_processes": 5, "max_processes": 15, "interval_max": 0.1,
                                 "manual_step": {"function": "f"}})
    assert lines[0].startswith("machine: ") and "2 threads for every implementation" in lines[0]
    assert "5 to 15 fresh processes per point" in lines[0] and "wider than 10 %" in lines[0]
    assert "openblas 0.3.30 SkylakeX (manual, torch, jax)" in lines[1] and "libgomp (torch)" in lines[1]
    assert lines[-1] == "manual column: f" and any(line.startswith("versions: numpy ") for line in lines)


def test_the_head_says_the_manual_column_is_the_checked_fast_step_and_how_it_ran():
    x = np.random.default_rng(6).standard_normal((32, 784)).astype(np.float32)
    y = np.arange(32) % 10
    step = steps.manual_step((784, 128, 10), x, y, 0.01)
    step.run()
    lines = output.manual_lines(step.record())
    assert lines[0] == "manual column: manual.fast.FastStep, the step `crosscheck train --step fast` checks"
    assert any(line.startswith("  update: ") for line in lines)
    assert any("numpy's BLAS" in line for line in lines) and any(line.startswith("  threads: ") for line in lines)


def test_physical_cores_count_smt_siblings_once_and_only_usable_cpus():
    block = "processor\t: {p}\nvendor_id\t: GenuineIntel\nmodel name\t: Xeon\nphysical id\t: {s}\ncore id\t\t: {c}\n\n"
    text = "".join(block.format(p=p, s=p // 4, c=p % 2) for p in range(8))  # 2 sockets × 2 cores × 2 threads
    assert machine.parse_cpuinfo(text) == {"model": "Xeon", "vendor": "GenuineIntel", "physical_cores": 4}
    assert machine.parse_cpuinfo(text, {0, 1})["physical_cores"] == 2  # cpus 0, 1: socket 0, cores 0 and 1
    assert machine.parse_cpuinfo(text, {0, 2})["physical_cores"] == 1  # siblings of one core
    assert 1 <= machine.default_threads() <= os.cpu_count()


def test_this_machines_cpu_is_recorded():
    described = machine.host(1)
    if os.path.exists("/proc/cpuinfo"):
        assert described["cpu"] and described["vendor"]
    assert machine.counters() is None or machine.counters()["cpus"] >= 1


def synthetic_point(reliable=True, jax=True):
    r = lambda med: {"median_s": med, "interval_s": [med * 0.96, med * 1.03]}  # noqa: E731
    results = {"manual": r(4e-4), "torch": r(2e-4), "floor_numpy": r(1e-4), "floor_torch": r(1e-4)}
    point = {"arch": "784-128-10", "batch": 32, "dtype": "float32", "manual_over_torch": 2.0,
             "manual_over_floor": 4.0, "images_per_s_manual": 32 / 4e-4, "results": results,
             "skipped": {"compiled": "skipped: --quick"},
             "reliability": {"reliable": reliable, "busy": False, "widest": 0.07 if reliable else 0.15,
                             "reasons": [] if reliable else ["torch: its processes vary: ..."]}}
    if not reliable:
        results["torch"]["reasons"] = ["its processes vary: ..."]
    if jax:
        results["jax"] = {**r(8e-4), "compile_s": [0.5, 0.4]}
        point["manual_over_jax"] = 0.5
    return point


def test_table_marks_unreliable_points_and_shows_the_jax_column():
    table = output.format_table([synthetic_point(), synthetic_point(reliable=False)]).splitlines()
    assert len(table) == 3 and "jax.jit µs" in table[0] and "compiled µs" not in table[0]
    assert table[0].split()[-1] == "!" and table[1].split()[-1] == "80,000" and table[2].split()[-1] == "!"
    assert table[1].split()[:5] == ["784-128-10", "b32", "float32", "400", "±4%"]
    assert "0.50" in table[1].split() and "2.00" in table[1].split()
    without_jax = output.format_table([synthetic_point(jax=False)]).splitlines()
    assert "jax" not in without_jax[0] and "manual/jax" not in without_jax[0]


def test_the_autograd_cost_is_torch_over_the_same_derivation_on_torch_tensors():
    point = synthetic_point()
    point["results"]["manual_torch"] = {"median_s": 1.6e-4, "interval_s": [1.55e-4, 1.7e-4]}
    point["autograd_cost"] = grid._ratios(point["results"])["autograd_cost"]
    assert point["autograd_cost"] == pytest.approx(2e-4 / 1.6e-4)
    table = output.format_table([point]).splitlines()
    assert "manual on torch µs" in table[0] and "autograd ×" in table[0] and "1.25" in table[1].split()
    lines = output.tail([point], None, threads=2)
    assert output.AUTOGRAD_LINE in lines and "what autograd itself costs" in output.AUTOGRAD_LINE
    assert output.AUTOGRAD_LINE not in output.tail([synthetic_point()], None, threads=2)


def test_autograds_cost_is_given_per_library_and_mode_each_over_its_own_hand_derived_step():
    point = synthetic_point()
    r = lambda med: {"median_s": med, "interval_s": [med * 0.96, med * 1.03]}  # noqa: E731
    point["results"].update(manual_torch=r(1.6e-4), compiled=r(1.5e-4), manual_compiled=r(1.2e-4),
                            jax_eager=r(3e-3), manual_jax_eager=r(1e-3), manual_jax=r(1e-3))
    ratios = grid._ratios(point["results"])
    assert ratios["autograd_cost"] == pytest.approx(2e-4 / 1.6e-4)
    assert ratios["autograd_cost_compiled"] == pytest.approx(1.5 / 1.2)
    assert ratios["autograd_cost_jax_eager"] == pytest.approx(3.0) and ratios["autograd_cost_jax"] == pytest.approx(0.8)
    point.update(ratios)
    table = output.format_table([point]).splitlines()
    header = re.split(r"\s{2,}", table[0].strip())
    for column in ("autograd × torch", "× torch.compile", "× jax eager", "× jax.jit", "manual compiled µs",
                   "manual jax.jit µs", "jax eager µs", "manual jax eager µs"):
        assert column in header, column
    assert {"1.25", "3.00", "0.80"} <= set(table[1].split())
    del point["results"]["manual_compiled"], point["autograd_cost_compiled"]  # not timed: no column, no ratio
    assert "× torch.compile" not in output.format_table([point]).splitlines()[0]


def test_tail_gives_the_reasons_and_the_closing_line():
    lines = output.tail([synthetic_point(), synthetic_point(reliable=False)], None, threads=2)
    assert "! 784-128-10 b32 torch: its processes vary: ..." in lines
    assert any(line.startswith("jax.jit compile time") and "b32 0.4-0.5 s" in line for line in lines)
    assert "torch.compile: skipped: --quick" in lines
    assert lines[-1].startswith("1 of 2 points marked ! because their processes vary, intervals up to 15 % wide")
    assert output.tail([synthetic_point()], None, threads=2)[-1].startswith("every figure stood")


# ------------------------------------------------------------------------------ the steps do the same work


def synthetic_batch(batch=8, dtype=np.float32, seed=0):
    """(x (B, 784) standard normal, y (B,) int64 labels): MNIST's shapes, normalised pixels' scale."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, 784)).astype(dtype), rng.integers(0, 10, batch).astype(np.int64)


def reference_step(sizes, x, y, lr) -> steps.Step:
    """The step every implementation is held to: the manual reference, ``MLP.loss_and_grads`` and
    ``SGD(lr).step``, in float64 from the bench's initial weights (``steps.initial`` in x's dtype)."""
    from manual.mlp import MLP
    from manual.optim import SGD

    start = steps.initial(sizes, x.dtype).parameters()
    mlp = MLP(sizes, steps.ACTIVATION, dtype=np.float64)
    mlp.set_parameters([W.astype(np.float64) for W, _ in start], [b.astype(np.float64) for _, b in start])
    x64 = x.astype(np.float64)

    def run():
        loss, grads = mlp.loss_and_grads(x64, y)
        SGD(lr).step(mlp.parameters(), grads)
        return loss

    return steps.Step(run, lambda: [(W.copy(), b.copy()) for W, b in mlp.parameters()])


def step_differences(reference, other, x, lr, sizes) -> list[str]:
    """What differs, beyond rounding, between one step of `reference` and of `other`
    (``steps.Step``s from the same weights on batch x): the loss, and each layer's update Δθ = θ₀ − θ₁.

    Allowances: the loss within ``gradient_rel`` (manual against torch in x's dtype: the same sums in
    another order, widened for confident batches); an update is lr·∂L/∂θ, whose float32 gradient
    carries the same relative error as the harness's gradients (``gradient_rel``), plus the
    rounding of θ₁ = θ₀ − lr·∂L/∂θ on each side (u·|θ₁| elementwise, so 2u·‖θ₁‖ in norm).
    """
    before = reference.weights()
    logits = np.asarray(x, np.float64)
    for i, (W, b) in enumerate(before):
        logits = logits @ W.T.astype(np.float64) + b
        if i < len(before) - 1:
            logits = 1 / (1 + np.exp(-logits))
    loss_ref, loss_other = (float(getattr(v, "detach", lambda: v)()) for v in (reference.run(), other.run()))
    bound = gradient_rel(x.dtype, loss=loss_ref, logit_scale=float(np.abs(logits).max()))
    problems = []
    if abs(loss_ref - loss_other) > bound * abs(loss_ref):
        problems.append(f"loss {loss_ref!r} vs {loss_other!r}")
    u = unit_roundoff(x.dtype)
    for i, (start, after_ref, after_other) in enumerate(zip(before, reference.weights(), other.weights()), start=1):
        for name, p0, p1, q1 in zip("Wb", start, after_ref, after_other):
            d_ref, d_other = (p0.astype(np.float64) - a.astype(np.float64) for a in (p1, q1))
            allowed = bound * max(np.linalg.norm(d_ref), np.linalg.norm(d_other)) + 2 * u * max(
                np.linalg.norm(p1), np.linalg.norm(q1))
            if not np.linalg.norm(d_ref - d_other) <= allowed:
                problems.append(f"layer {i} {name}: update differs by {np.linalg.norm(d_ref - d_other):.3g}, "
                                f"allowed {allowed:.3g}")
    return problems


def build_step(impl, sizes, x, y, lr, device="cpu"):
    """``steps.BUILDERS[impl]``, skipping where the implementation cannot run here (JAX not installed;
    torch.compile without a C++ compiler: the bench then skips the column the same way)."""
    if impl in config.JAX_IMPLS:
        pytest.importorskip("jax", reason="JAX is an optional extra: pip install -e '.[jax]'")
    try:
        return steps.BUILDERS[impl](sizes, x, y, lr, device)
    except Exception as e:
        if impl not in config.COMPILED:
            raise
        pytest.skip(f"torch.compile unavailable here: {type(e).__name__}: {str(e).splitlines()[0][:200]}")


WHOLE_STEP_CASES = [((784, 16, 10), np.float32), ((784, 12, 8, 10), np.float64)]
SLOW_TO_BUILD = config.COMPILED + ("jax_eager", "manual_jax_eager")  # seconds per case (compiling; JAX op by op): one case each


@pytest.mark.parametrize("impl, sizes, dtype", [
    pytest.param(impl, sizes, dtype, id=f"{'-'.join(map(str, sizes))}-{np.dtype(dtype).name}-{impl}")
    for sizes, dtype in WHOLE_STEP_CASES for impl in steps.BUILDERS
    if impl not in SLOW_TO_BUILD or sizes == WHOLE_STEP_CASES[0][0]])
def test_every_timed_step_does_the_whole_steps_work(impl, sizes, dtype):
    """Loss and updated weights of each implementation's timed step against the manual reference:
    a step that skips its backward or its update fails here."""
    x, y = synthetic_batch(dtype=dtype)
    lr = 0.5  # a large step: the update, not θ's rounding, dominates the allowance
    step = build_step(impl, sizes, x, y, lr)
    assert step_differences(reference_step(sizes, x, y, lr), step, x, lr, sizes) == []
    assert step.compile_s is None or step.compile_s > 0
    if step.train is not None:  # the epoch's per-batch path does the same step
        again = build_step(impl, sizes, x, y, lr)
        per_batch = steps.Step(lambda: again.train(x, y), again.weights)
        assert step_differences(reference_step(sizes, x, y, lr), per_batch, x, lr, sizes) == []


def test_a_step_without_backward_and_update_is_caught():
    """The check above can fail: a torch step that computes forward and loss only (the update that
    never happens) is caught in every parameter, its loss being right."""
    import torch.nn.functional as F

    sizes, lr = (784, 16, 10), 0.5
    x, y = synthetic_batch()
    model, _, tx, ty = steps._torch_setup(sizes, x, y, lr, "cpu")
    forward_only = steps.Step(lambda: F.cross_entropy(model(tx), ty), lambda: steps._torch_weights(model))
    wrong = step_differences(reference_step(sizes, x, y, lr), forward_only, x, lr, sizes)
    assert [p.split(":")[0] for p in wrong] == ["layer 1 W", "layer 1 b", "layer 2 W", "layer 2 b"]
    # and a 1 % larger learning rate is caught too
    wrong = step_differences(reference_step(sizes, x, y, lr), steps.torch_step(sizes, x, y, lr * 1.01), x, lr, sizes)
    assert [p.split(":")[0] for p in wrong] == ["layer 1 W", "layer 1 b", "layer 2 W", "layer 2 b"]


def test_the_torch_step_is_the_plain_sequential_net_a_torch_user_writes():
    from torch import nn

    x, y = synthetic_batch()
    model = steps.torch_sequential((784, 16, 8, 10), np.float32)
    assert type(model) is nn.Sequential
    assert [type(m) for m in model] == [nn.Linear, nn.Sigmoid, nn.Linear, nn.Sigmoid, nn.Linear]
    for (W, b), layer in zip(steps.initial((784, 16, 8, 10), np.float32).parameters(), steps.linears(model)):
        np.testing.assert_array_equal(layer.weight.detach().numpy(), W)
        np.testing.assert_array_equal(layer.bias.detach().numpy(), b)


@pytest.mark.slow
def test_the_steps_do_the_manual_steps_work_on_mnist(mnist32):
    idx = np.random.default_rng(0).permutation(len(mnist32.x_train))[:64]
    x, y = np.ascontiguousarray(mnist32.x_train[idx]), np.ascontiguousarray(mnist32.y_train[idx])
    sizes, lr = (784, 128, 10), 0.5
    for impl in ("manual", "torch", "jax"):
        if impl == "jax" and importlib.util.find_spec("jax") is None:
            continue
        step = steps.BUILDERS[impl](sizes, x, y, lr)
        assert step_differences(reference_step(sizes, x, y, lr), step, x, lr, sizes) == [], impl


# ------------------------------------------------------------------------------ where the time goes


def test_the_part_clock_gives_each_part_the_time_since_the_last_mark():
    readings = iter([10.0, 10.5, 12.0, 12.25])
    waits = []
    clock = parts.PartClock(sync=lambda: waits.append(1))
    with pytest.MonkeyPatch.context() as m:
        m.setattr(parts.time, "perf_counter", lambda: next(readings))
        clock.start()
        clock.mark("forward")
        clock.mark("backward")
        clock.mark("forward")
    assert clock.seconds == {"forward": 0.75, "backward": 1.5} and len(waits) == 4  # waits before every reading


@pytest.mark.parametrize("impl, names", [
    ("manual", ["other", "forward", "loss", "backward + update"]),
    ("manual_torch", ["other", "forward", "loss", "backward + update"]),
    ("torch", ["update", "forward", "loss", "backward"]),
    ("compiled", ["update", "forward + loss", "backward"])])
def test_the_parts_timed_are_the_whole_step(impl, names):
    """A step run part by part, as the breakdown times it, does the whole step's work; every part is marked."""
    x, y = synthetic_batch()
    sizes, lr = (784, 16, 10), 0.5
    step = build_step(impl, sizes, x, y, lr)
    clock = parts.PartClock()
    clock.start()
    part_by_part = steps.Step(lambda: step.parts(clock), step.weights)
    assert step_differences(reference_step(sizes, x, y, lr), part_by_part, x, lr, sizes) == []
    assert sorted(clock.seconds) == sorted(names) and all(v >= 0 for v in clock.seconds.values())
    assert step_differences(reference_step(sizes, x, y, lr), build_step(impl, sizes, x, y, lr), x, lr, sizes) == []


def test_the_jax_prefixes_end_with_the_whole_step():
    pytest.importorskip("jax", reason="JAX is an optional extra: pip install -e '.[jax]'")
    x, y = synthetic_batch()
    step = steps.jax_step((784, 16, 10), x, y, 0.5)
    assert list(step.prefixes) == ["forward", "loss", "backward", "update"] and step.parts is None
    assert step.prefixes["update"] is step.run
    logits, loss = step.prefixes["forward"](), step.prefixes["loss"]()
    value, grads = step.prefixes["backward"]()
    assert logits.shape == (8, 10) and float(loss) == float(value) and len(grads) == 2
    record = parts.time_parts(step, warmup_s=0.001, blocks=2, block_s=0.004)
    assert record["method"] == "prefixes" and list(record["parts_s"]) == ["forward", "loss", "backward", "update"]
    for name, prev in (("loss", "forward"), ("backward", "loss"), ("update", "backward")):
        cumulative = record["prefixes_s"]
        assert record["parts_s"][name] == [c - p for c, p in zip(cumulative[name], cumulative[prev])]
    assert record["times_s"] == record["prefixes_s"]["update"]


def test_a_worker_times_the_parts_beside_whole_steps(tmp_path):
    result = worker.spawn({**_tiny_spec(tmp_path), "breakdown": True})
    assert "error" not in result, result
    assert result["method"] == "parts" and len(result["times_s"]) == 2
    assert set(result["parts_s"]) == {"other", "forward", "loss", "backward + update"}
    assert all(len(v) == 2 and min(v) >= 0 for v in result["parts_s"].values())


def test_the_breakdown_table_spans_fused_parts_and_gives_the_sum_and_the_whole_step():
    def figure(parts, method="parts"):
        whole = {"median_s": 1e-3, "interval_s": [0.98e-3, 1.05e-3], "pinned": True}
        return {"parts_s": parts, "sum_s": sum(parts.values()), "whole": whole, "method": method, "processes": 5}

    point = {"arch": "784-128-10", "batch": 32, "dtype": "float32", "skipped": {}, "impls": {
        "manual": figure({"forward": 3e-4, "loss": 1e-4, "backward + update": 5e-4, "other": 2e-5}),
        "compiled": figure({"forward + loss": 4e-4, "backward": 4e-4, "update": 1e-4}),
        "jax": figure({"forward": 3e-4, "loss": 0.0, "backward": 4e-4, "update": 2e-4}, "prefixes")}}
    rows = [line.split() for line in breakdown.format_table([point]).splitlines()]
    assert rows[1][2:] == ["manual", "300", "100", "500", "(in", "backward)", "20", "920", "1000", "±5%", "in", "the",
                           "step"]
    assert rows[2][3:7] == ["400", "(in", "forward)", "400"] and rows[3][-1] == "prefixes"


# ------------------------------------------------------------------------------ the device


def test_cuda_without_a_gpu_is_one_line_naming_the_option(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:1", "tpu"):
        with pytest.raises(SystemExit) as info:
            parse("--device", device)
        assert info.value.code == 2
        [line] = capsys.readouterr().err.strip().splitlines()[-1:]
        assert f"argument --device: invalid value '{device}': " in line
    with pytest.raises(SystemExit):
        parse("--device", "cuda")
    assert "torch sees no CUDA device on this machine" in capsys.readouterr().err
    assert bench.settings(parse("--device", "cpu")).device == "cpu"


@pytest.mark.skipif(HAVE_GPU, reason="this machine has a GPU: --device cuda is accepted here")
def test_cli_cuda_without_a_gpu_exits_2_with_one_line(tmp_path):
    proc = run_cli("bench", "--device", "cuda", "--quick", "--out", tmp_path / "never")
    assert_one_line_error(proc, 2, "--device", "'cuda'", "torch sees no CUDA device")
    assert not (tmp_path / "never").exists()


def test_on_a_gpu_the_numpy_columns_and_the_epoch_figure_are_skipped(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    s = bench.settings(parse("--device", "cuda", "--quick"))
    assert s.device == "cuda" and s.epoch_images == 0
    assert {"manual", "floor_numpy"} <= set(s.skipped) and "NumPy runs on the CPU only" in s.skipped["manual"]
    assert not {"manual_torch", "torch", "floor_torch"} & set(s.skipped)
    with pytest.raises(ValueError, match="the NumPy step runs on the CPU only"):
        steps.manual_step((784, 8, 10), *synthetic_batch(), 0.1, device="cuda")


def test_every_timed_block_waits_for_the_queued_work_before_and_after_the_clock():
    events = []
    record = timing.time_blocks(lambda: events.append("step"), warmup_s=0, blocks=3, block_s=0.001,
                                sync=lambda: events.append("sync"))
    n = record["per_block"]
    assert events[-3 * (n + 2):] == (["sync"] + ["step"] * n + ["sync"]) * 3  # the three timed blocks
    assert events[3] == "sync"  # after the warm-up's three steps


def test_the_head_names_the_device_and_the_tail_the_gpu_memory():
    gpu = {"name": "NVIDIA H200", "memory_bytes": 141 * 2**30, "capability": "9.0", "cuda": "12.4"}
    assert output.device_line("cpu", None) == "device: cpu"
    line = output.device_line("cuda", gpu)
    assert line.startswith("device: cuda, NVIDIA H200 (141 GiB, compute capability 9.0, CUDA 12.4)")
    assert "torch.cuda.synchronize" in line
    point = synthetic_point()
    point["results"]["torch"]["gpu_peak_bytes"] = 3 * 2**20
    lines = output.memory_lines([point])
    assert lines[0].startswith("GPU memory: torch.cuda.max_memory_allocated")
    assert lines[1] == "peak GPU memory 784-128-10 b32: torch 3.0 MiB"
    assert output.memory_lines([synthetic_point()]) == []


gpu = pytest.mark.skipif(not HAVE_GPU, reason="no GPU: torch.cuda.is_available() is False")


@gpu
@pytest.mark.parametrize("impl", ["manual_torch", "yardstick", "torch", "compiled", "manual_compiled", "jax", "manual_jax"])
def test_on_a_gpu_every_timed_step_does_the_whole_steps_work(impl):
    x, y = synthetic_batch()
    sizes, lr = (784, 16, 10), 0.5
    if impl == "jax":
        pytest.importorskip("jax", reason="JAX is an optional extra")
        try:
            steps.jax_device("cuda")
        except RuntimeError as e:
            pytest.skip(str(e))
    step = build_step(impl, sizes, x, y, lr, device="cuda")
    assert (step.sync is not None) == (impl != "jax")  # the JAX step blocks on its result itself
    assert step_differences(reference_step(sizes, x, y, lr), step, x, lr, sizes) == []


@gpu
def test_a_gpu_worker_waits_for_its_steps_and_reports_the_gpu_and_its_memory(tmp_path):
    spec = {**_tiny_spec(tmp_path, impl="torch"), "device": "cuda"}
    result = worker.spawn(spec)
    assert "error" not in result, result
    assert result["device"] == "cuda" and result["gpu"]["name"] and result["gpu"]["memory_bytes"] > 0
    assert result["gpu_memory"]["max_memory_allocated"] > 0
    floor_result = worker.spawn({**spec, "impl": "floor_torch"})
    assert "error" not in floor_result, floor_result
    assert floor_result["gpu_memory"]["max_memory_allocated"] > 0


@gpu
def test_the_torch_floor_on_a_gpu_computes_the_products():
    x = np.random.default_rng(3).standard_normal((5, 784)).astype(np.float32)
    products = floor.gemm_products((784, 16, 8, 10), 5)
    for layouts in ([floor.LAYOUTS[0]] * len(products), [floor.LAYOUTS[-1]] * len(products)):
        ops = floor.floor_operands(products, x, layouts)
        calls = floor.product_calls(ops, "torch", "cuda")
        for call, (a, b, _) in zip(calls, ops):
            out = call()
            torch.cuda.synchronize()
            assert out.is_cuda
            assert_close_bound(out.cpu().numpy(), a.astype(np.float64) @ b.astype(np.float64), matmul_bound(a, b))


# ------------------------------------------------------------------------------ a quick run


@pytest.mark.slow
def test_quick_run_writes_a_json_entry_for_every_point_and_implementation(tmp_path, mnist_dir, capsys):
    out = tmp_path / "b"
    # The fewest processes that give an interval: the tests run beside each other (pytest -n 2), so a
    # figure would rarely stand and the bench would add processes up to its budget (13 minutes seen).
    fewest = str(reliability.MIN_PROCESSES)
    args = parse("--quick", "--no-compile", "--batches", "32", "--max-processes", fewest, "--out", out, "--offline",
                 "--data-dir", mnist_dir)
    assert bench.main(args) == 0
    assert {p.name for p in out.iterdir()} == {bench.JSON_NAME, bench.PLOT_NAME}  # and no temporary files
    assert (out / bench.PLOT_NAME).read_bytes()[:8] == PNG_MAGIC

    report = json.loads((out / bench.JSON_NAME).read_text())
    jax_columns = {"jax", "jax_eager", "manual_jax_eager", "manual_jax"}
    timed = ({"manual", "manual_torch", "yardstick", "torch", "floor_numpy", "floor_torch"}
             | (jax_columns if "jax" not in report["config"]["skipped"] else set()))
    [p] = report["points"]
    assert (p["arch"], p["batch"], p["dtype"]) == ("784-128-10", 32, "float32")
    assert set(p["results"]) == timed and "--no-compile" in p["skipped"]["compiled"]
    r = p["results"]
    assert p["autograd_cost"] == pytest.approx(r["torch"]["median_s"] / r["manual_torch"]["median_s"])
    assert report["config"]["manual_torch_step"]["function"].startswith("manual.fast_torch.FastTorchStep")
    for name, m in p["results"].items():
        assert m["median_s"] > 0 and m["interval_s"][0] <= m["median_s"] <= m["interval_s"][1], name
        assert report["config"]["min_processes"] <= len(m["processes"]) <= report["config"]["max_processes"], name
        assert len({q["pid"] for q in m["processes"]}) == len(m["processes"])  # fresh processes
        assert m["used"] + m["set_aside"] == len(m["processes"]) and m["pinned"] == (not m["reasons"]), name
        for q in m["processes"]:
            assert q["wall_s"] > 0 and q["cpu_s"] > 0 and q["steps"] > 0 and "others_cores" in q, name
    assert isinstance(p["reliability"]["reliable"], bool) and isinstance(p["reliability"]["reasons"], list)
    assert p["reliability"]["reliable"] == (not p["reliability"]["reasons"])
    assert len(p["floor"]["products"]) == 2 + 2 + 1 and p["floor"]["flops"] > 0
    assert len(p["floor"]["layouts"]["floor_numpy"]) == 5 and p["images_per_s_manual"] > 0

    machine_record = report["machine"]
    assert machine_record["cores"] == os.cpu_count() and machine_record["threads"] == machine.default_threads()
    assert machine_record["cpu"] and machine_record["versions"]["numpy"] == np.__version__
    openblas = [lib for lib in machine_record["blas"] if lib["internal_api"] == "openblas"]
    assert openblas and all(lib["version"] and lib["architecture"] and lib["filepath"] for lib in openblas)
    assert machine_record["torch_backend"]["blas_info"] and report["config"]["manual_step"]["function"]

    epoch = report["epoch"]
    assert epoch["arch"] == "784-256-10" and epoch["batch"] == 32 and epoch["images"] == bench.QUICK_EPOCH_IMAGES
    for side in ("manual", "torch"):
        assert epoch[side]["seconds"] > 0 and len(epoch[side]["pass_seconds"]) >= reliability.MIN_PROCESSES
    assert "reliable" in epoch["reliability"]

    stdout = capsys.readouterr().out
    assert "784-128-10 b32 float32" in stdout and stdout.count("machine: ") == 1
    assert "epoch (784-256-10 float32, batch 32" in stdout
    assert report["summary"] in stdout.splitlines()  # the point and the epoch figure
    assert re.match(r"every figure stood|machine busy|[12] of 2 points marked", report["summary"])


@pytest.mark.slow
def test_quick_breakdown_writes_its_table_json_and_plot(tmp_path, mnist_dir, capsys):
    out = tmp_path / "b"
    args = parse("--breakdown", "--quick", "--batches", "32", "--no-jax", "--max-processes", str(reliability.MIN_PROCESSES),
                 "--out", out, "--offline", "--data-dir", mnist_dir)
    assert bench.main(args) == 0
    assert {p.name for p in out.iterdir()} == {breakdown.JSON_NAME, breakdown.PLOT_NAME}
    assert (out / breakdown.PLOT_NAME).read_bytes()[:8] == PNG_MAGIC
    report = json.loads((out / breakdown.JSON_NAME).read_text())
    [p] = report["points"]
    assert set(p["impls"]) == {"manual", "manual_torch", "torch"} and report["date"] and report["machine"]["cpu"]
    assert set(p["impls"]["torch"]["parts_s"]) == {"forward", "loss", "backward", "update"}
    assert p["impls"]["manual"]["whole"]["median_s"] > 0 and p["impls"]["manual"]["processes"] >= 5
    stdout = capsys.readouterr().out
    assert "784-128-10 b32  manual" in stdout and "(in backward)" in stdout
