"""The ``minifim`` command line, run in-process through ``cli.main`` (and once as
``python -m minifim``): help for every sub-command, fixture make/list/show, check with its exit
status, --json, layouts, --diagnose, and the errors (exit status 2)."""

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from minifim.fixtures import PRESETS, SCHEMA_VERSION, load_fixture

import minifim
from minifim.oracle import from_minifim_layout
from minifim.oracle.cli import build_parser, main


def run(*argv):
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def fixture_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("fx") / "ct.npz"
    code, text = run("fixture", "make", "categorical-tanh", "-o", str(path))
    assert code == 0 and f"wrote {path}" in text
    return path


@pytest.mark.parametrize(
    "argv",
    [[], ["fixture"], ["fixture", "make"], ["fixture", "list"], ["fixture", "show"], ["check"]],
)
def test_every_subcommand_has_help(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv + ["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: minifim")
    if argv == ["check"]:
        assert "--diagnose" in text and "ravel_pytree" in text and "--json" in text


def test_version_and_missing_command(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and minifim.__version__ in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


def test_python_dash_m(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "minifim", "fixture", "list"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0 and "wide-rank-deficient" in proc.stdout
    assert build_parser().prog == "minifim"


def test_fixture_list():
    code, text = run("fixture", "list")
    assert code == 0
    for name in PRESETS:
        assert name in text
    assert "4x8x3" in text and "324" in text


def test_fixture_make_is_deterministic(tmp_path, fixture_path):
    other = tmp_path / "again.npz"
    assert run("fixture", "make", "categorical-tanh", "-o", str(other))[0] == 0
    assert other.read_bytes() == fixture_path.read_bytes()
    fx = load_fixture(other)
    assert fx.manifest["command"] == "minifim fixture make categorical-tanh"


def test_fixture_make_several_and_spec(tmp_path):
    code, text = run(
        "fixture", "make", "logistic-regression", "linear-regression", "--out-dir", str(tmp_path)
    )
    assert code == 0 and text.count("wrote") == 2
    assert (tmp_path / "logistic-regression.npz").is_file()
    spec = tmp_path / "mine.json"
    spec.write_text(json.dumps({"preset": "logistic-regression", "num_samples": 3, "seed": 11}))
    code, _ = run("fixture", "make", "--spec", str(spec), "-o", str(tmp_path / "m.npz"))
    assert code == 0
    fx = load_fixture(tmp_path / "m.npz")
    assert fx.N == 3 and fx.manifest["spec"]["seed"] == 11 and fx.name == "mine"
    assert fx.manifest["command"] == "minifim fixture make --spec mine.json"


def test_fixture_make_trajectory(tmp_path):
    out = tmp_path / "t.npz"
    code, _ = run(
        "fixture",
        "make",
        "linear-regression",
        "--trajectory",
        "momentum:steps=3,lr=0.1",
        "-o",
        str(out),
    )
    assert code == 0
    fx = load_fixture(out)
    assert fx["trajectory/theta"].shape == (4, fx.P)
    assert fx.manifest["command"].endswith("--trajectory momentum:steps=3,lr=0.1")
    code, text = run("fixture", "show", str(out))
    assert code == 0 and "trajectory momentum" in text


@pytest.mark.parametrize(
    "argv, match",
    [
        (["fixture", "make"], "PRESET"),
        (["fixture", "make", "nope"], "preset"),
        (["fixture", "make", "a", "b", "-o", "x.npz"], "one file"),
        (["fixture", "make", "--spec", "missing.json"], "no such file"),
        (["fixture", "make", "logistic-regression", "--spec", "x.json"], "not both"),
        (["fixture", "make", "logistic-regression", "--trajectory", "sgd"], "trajectory"),
        (["fixture", "show", "missing.npz"], "no such file"),
        (["check", "missing.npz", "c.npz"], "no such file"),
    ],
)
def test_usage_errors_exit_2(argv, match, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _ = run(*argv)
    assert code == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1  # one line, no traceback


def test_bad_spec_file(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert run("fixture", "make", "--spec", str(bad))[0] == 2
    assert "not valid JSON" in capsys.readouterr().err
    bad.write_text(json.dumps({"sizes": [2, 2], "colour": 3}))
    assert run("fixture", "make", "--spec", str(bad))[0] == 2
    assert "unknown key" in capsys.readouterr().err


def test_fixture_show(fixture_path):
    code, text = run("fixture", "show", str(fixture_path))
    assert code == 0 and "MLP([4, 8, 3]" in text and "kfac/true/folded/A0" in text
    code, text = run("fixture", "show", str(fixture_path), "--json")
    assert code == 0 and json.loads(text)["schema_version"] == SCHEMA_VERSION


# --- check ------------------------------------------------------------------------------------------
def test_check_passes_and_fails(fixture_path, tmp_path):
    fx = load_fixture(fixture_path)
    good = tmp_path / "good.npz"
    np.savez(
        good, F=fx["true_fisher"], grad=fx["gradient"], **{"0.weight": fx["state_dict/0.weight"]}
    )
    code, text = run("check", str(fixture_path), str(good))
    assert code == 0 and "PASSED" in text and "F -> true_fisher" in text
    assert "rtol = 1e-07" in text
    bad = tmp_path / "bad.npz"
    np.savez(
        bad,
        true_fisher=fx["empirical_fisher"],
        gradient=8 * fx["gradient"],
        extra=np.ones(2),
        **{"0.weight": fx["state_dict/0.weight"].T},
    )
    code, text = run("check", str(fixture_path), str(bad))
    assert code == 1
    assert "empirical Fisher (data labels) instead of the true Fisher" in text
    assert "sum instead of mean" in text and "transposed layout" in text
    assert "'extra': no array of that name" in text and "FAILED: 4 problem(s)" in text
    code, text = run("check", str(fixture_path), str(bad), "--json")
    data = json.loads(text)
    assert code == 1 and data["passed"] is False and data["unmatched"] == ["extra"]
    worst = {c["name"]: c for c in data["comparisons"]}["true_fisher"]
    assert worst["max_abs_err"] > 0 and len(worst["worst_index"]) == 2
    code, text = run(
        "check", str(fixture_path), str(bad), "--keys", "gradient", "--reduction", "sum"
    )
    assert code == 0
    code, text = run("check", str(fixture_path), str(bad), "--keys", "extra", "--map", "extra=nope")
    assert code == 2


def test_check_layouts_tolerances_and_map(fixture_path, tmp_path):
    fx = load_fixture(fixture_path)
    cand = tmp_path / "jax.npz"
    np.savez(
        cand,
        fisher=from_minifim_layout(fx.net, fx.N * fx["true_fisher"], [0, 1], "jax"),
        mine=from_minifim_layout(fx.net, fx.N * fx["fisher_diagonal"], [0], "jax"),
    )
    argv = ["check", str(fixture_path), str(cand), "--map", "mine=fisher_diagonal"]
    assert run(*argv)[0] == 1
    code, text = run(*argv, "--layout", "jax", "--reduction", "sum")
    assert code == 0, text
    noisy = tmp_path / "noisy.npz"
    np.savez(noisy, true_fisher=fx["true_fisher"] * (1 + 1e-6))
    assert run("check", str(fixture_path), str(noisy))[0] == 1
    assert run("check", str(fixture_path), str(noisy), "--rtol", "1e-5")[0] == 0
    assert run("check", str(fixture_path), str(noisy), "--atol", "1e-4")[0] == 0
    assert run("check", str(fixture_path), str(noisy), "--map", "bad")[0] == 2


def test_check_diagnose(fixture_path, tmp_path):
    fx = load_fixture(fixture_path)
    cand = tmp_path / "mc.npz"
    mc = minifim.mc_fisher(fx.net, fx.theta, fx.X, 20, rng=1)
    np.savez(cand, my_fisher=mc, diag=np.diag(fx["empirical_fisher"]).copy())
    code, text = run(
        "check",
        str(fixture_path),
        str(cand),
        "--diagnose",
        "my_fisher",
        "--mc-samples",
        "20",
        "--keys",
        "my_fisher",
    )
    assert code == 0, text
    assert "consistent with a Monte-Carlo estimate of the true Fisher with k = 20" in text
    assert "square-of-mean-gradient" in text and "within the band" in text
    code, text = run("check", str(fixture_path), str(cand), "--diagnose")
    assert code == 1 and "'empirical' variant" in text  # 'diag' is an alias of the diagonal
    code, text = run("check", str(fixture_path), str(cand), "--diagnose", "my_fisher", "--json")
    data = json.loads(text)
    assert data["diagnoses"][0]["closest"] == "true" and data["diagnoses"][0]["ok"] is False
    assert run("check", str(fixture_path), str(cand), "--mc-samples", "3")[0] == 2
    assert run("check", str(fixture_path), str(cand), "--diagnose", "zzz")[0] == 2
    only = tmp_path / "only.npz"
    np.savez(only, something=np.ones(3))
    assert run("check", str(fixture_path), str(only), "--diagnose")[0] == 2


def test_check_rejects_bad_candidates(fixture_path, tmp_path, capsys):
    np.save(tmp_path / "single.npy", np.ones(3))
    assert run("check", str(fixture_path), str(tmp_path / "single.npy"))[0] == 2
    assert "single .npy" in capsys.readouterr().err
    (tmp_path / "junk.npz").write_bytes(b"junk")
    assert run("check", str(fixture_path), str(tmp_path / "junk.npz"))[0] == 2
    assert "cannot be read" in capsys.readouterr().err
    np.savez(tmp_path / "obj.npz", F=np.array([{"a": 1}], dtype=object))
    assert run("check", str(fixture_path), str(tmp_path / "obj.npz"))[0] == 2
    np.savez(tmp_path / "plain.npz", F=np.ones(2))
    assert run("check", str(tmp_path / "plain.npz"), str(tmp_path / "plain.npz"))[0] == 2
    assert "not a minifim fixture" in capsys.readouterr().err


# --- failures: one line on stderr, the documented exit status, no traceback ---------------------
def _one_line(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("minifim: error: "), err
    assert "Traceback" not in err
    return err


def test_non_finite_candidate_is_a_failure_exit_1(fixture_path, tmp_path, capsys):
    fx = load_fixture(fixture_path)
    F = fx["true_fisher"].copy()
    F[2, 3] = np.nan
    cand = tmp_path / "nan.npz"
    np.savez(cand, true_fisher=F, diag=np.full(fx.P, np.inf))
    code, text = run("check", str(fixture_path), str(cand))
    assert code == 1 and "FAILED: 2 problem(s)" in text
    assert (
        "1 NaN/Inf entry where the reference is finite: true_fisher[W0[0, 2], W0[0, 3]] = "
        "nan" in text
    )
    code, text = run("check", str(fixture_path), str(cand), "--json")
    assert code == 1 and json.loads(text)["comparisons"][0]["num_nonfinite"] == 1
    code, text = run("check", str(fixture_path), str(cand), "--diagnose", "diag", "--keys", "diag")
    assert code == 1 and "67 NaN/Inf entries" in text
    assert capsys.readouterr().err == ""


def test_complex_candidate_is_refused_exit_2(fixture_path, tmp_path, capsys):
    fx = load_fixture(fixture_path)
    np.savez(tmp_path / "c.npz", true_fisher=fx["true_fisher"] + 0j)
    assert run("check", str(fixture_path), str(tmp_path / "c.npz"))[0] == 2
    assert "complex" in _one_line(capsys)


def test_bad_fixtures_and_candidates_exit_2_with_one_line(fixture_path, tmp_path, capsys):
    import zipfile

    from numpy.lib import format as npf

    header = io.BytesIO()
    npf.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**8,)})
    liar = tmp_path / "liar.npz"
    with zipfile.ZipFile(liar, "w") as z:
        z.writestr("true_fisher.npy", header.getvalue())
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "folder.npz").mkdir()
    good = tmp_path / "good.npz"
    np.savez(good, true_fisher=load_fixture(fixture_path)["true_fisher"])
    cases = [
        (["check", str(liar), str(good)], "no 'manifest' entry"),
        (["check", str(fixture_path), str(liar)], "over the limit"),  # a candidate bomb
        (["check", str(tmp_path / "empty.npz"), str(good)], "empty"),
        (["check", str(fixture_path), str(tmp_path / "empty.npz")], "empty"),
        (["check", str(fixture_path), str(tmp_path / "folder.npz")], "no such file"),
        (["check", str(tmp_path / "folder.npz"), str(good)], "no such file"),
        (["fixture", "show", str(liar)], "no 'manifest' entry"),
    ]
    for argv, match in cases:
        assert run(*argv)[0] == 2, argv
        assert match in _one_line(capsys), argv


@pytest.mark.parametrize(
    "where, err, match",
    [
        ("replace", PermissionError(13, "Permission denied"), "Permission denied"),
        ("fsync", OSError(28, "No space left on device"), "No space left on device"),
        ("mkstemp", PermissionError(13, "Permission denied"), "Permission denied"),
    ],
)
def test_write_failures_exit_2_with_one_line_and_no_temporary_file(
    tmp_path, capsys, monkeypatch, where, err, match
):
    from minifim import _io

    def fail(*args, **kwargs):
        raise err

    target = _io.tempfile if where == "mkstemp" else _io.os
    monkeypatch.setattr(target, where, fail)
    code, _ = run("fixture", "make", "logistic-regression", "--out-dir", str(tmp_path))
    monkeypatch.undo()
    assert code == 2
    line = _one_line(capsys)
    assert f"cannot write {str(tmp_path / 'logistic-regression.npz')!r}" in line
    assert match in line
    assert list(tmp_path.iterdir()) == []


def test_output_path_problems_exit_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    (tmp_path / "folder.npz").mkdir()
    for argv in (
        ["--out-dir", str(blocker)],
        ["-o", str(blocker / "x.npz")],
        ["-o", str(tmp_path / "folder.npz")],
    ):
        assert run("fixture", "make", "logistic-regression", *argv)[0] == 2, argv
        assert "cannot write" in _one_line(capsys), argv
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder.npz"]


def test_spec_name_cannot_escape_the_output_folder(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("../escaped", "/tmp/escaped", "a/b", ""):
        spec = tmp_path / "spec.json"
        spec.write_text(json.dumps({"preset": "logistic-regression", "name": name}))
        assert run("fixture", "make", "--spec", str(spec), "--out-dir", str(out))[0] == 2
        assert "spec['name']: expected a file name" in _one_line(capsys)
    assert list(out.iterdir()) == [] and not (tmp_path / "escaped.npz").exists()


def test_memory_budget_and_interrupt_exit_cleanly(tmp_path, capsys, monkeypatch):
    with minifim.memory_limit(10_000):
        code, _ = run("fixture", "make", "wide-rank-deficient", "--out-dir", str(tmp_path))
    assert code == 2 and "over the memory budget" in _one_line(capsys)
    from minifim.oracle import cli

    def interrupted(args, out):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_cmd_list", interrupted)
    assert run("fixture", "list")[0] == 130
    assert capsys.readouterr().err == "minifim: interrupted\n"


def test_check_uses_the_oracles_conventions(fixture_path, tmp_path):
    from minifim import oracle

    parser = build_parser()
    args = parser.parse_args(["check", "a.npz", "b.npz"])
    assert args.rtol == oracle.DEFAULT_RTOL and args.layout == "pytorch"
    check = parser._subparsers._group_actions[0].choices["check"]
    choices = {a.dest: a.choices for a in check._actions if a.choices}
    assert tuple(choices["layout"]) == oracle.LAYOUTS
    assert tuple(choices["reduction"]) == oracle.REDUCTIONS
    # --diagnose without KEY finds a Fisher named as a state-dict-free alias or exact key
    fx = load_fixture(fixture_path)
    cand = tmp_path / "d.npz"
    np.savez(cand, fisher_diag=fx["fisher_diagonal"])
    code, text = run("check", str(fixture_path), str(cand), "--diagnose")
    assert code == 0 and "diagnosis of 'fisher_diag'" in text


def test_exit_codes_are_documented():
    from minifim.oracle import cli

    doc = cli.__doc__
    for code in ("0 ", "1 ", "2 ", "130 "):
        assert f"\n    {code}" in doc or f" {code}" in doc
    assert "Exit status" in doc and "full disk" in doc and "interrupted" in doc


# --- conventions (issue 16) ------------------------------------------------------------------
def test_check_help_lists_the_loss_conventions(capsys):
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    text = capsys.readouterr().out
    for loss in ("nll", "mse-mean", "mse-sum", "ce-mean", "ce-sum", "bce-mean", "bce-sum"):
        assert loss in text
    assert "--loss" in text and "MSELoss" in text


@pytest.fixture(scope="module")
def gaussian_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("fxg") / "gs.npz"
    code, _ = run("fixture", "make", "gaussian-softplus", "-o", str(path))
    assert code == 0
    return path


def test_check_names_the_flag_of_a_convention_mismatch(gaussian_path, tmp_path):
    fx = load_fixture(gaussian_path)
    s = 2 * 0.3**2 / 2  # MSELoss(reduction="mean") of a C = 2 regression
    cand = tmp_path / "c.npz"
    np.savez(cand, ggn=s * fx["ggn"], grad=s * fx["gradient"])
    code, text = run("check", str(gaussian_path), str(cand))
    assert code == 1 and "would pass with: --loss mse-mean" in text
    code, text = run("check", str(gaussian_path), str(cand), "--loss", "mse-mean")
    assert code == 0 and "loss mse-mean" in text
    # another layout and a sum: the flags name both
    np.savez(cand, F=from_minifim_layout(fx.net, fx.N * fx["true_fisher"], [0, 1], "in-out"))
    code, text = run("check", str(gaussian_path), str(cand))
    assert code == 1 and "would pass with: --reduction sum --layout in-out" in text
    code, _ = run(
        "check", str(gaussian_path), str(cand), "--reduction", "sum", "--layout", "in-out"
    )
    assert code == 0


def test_check_json_carries_the_explanation(gaussian_path, tmp_path):
    fx = load_fixture(gaussian_path)
    cand = tmp_path / "c.npz"
    N = fx.N
    np.savez(cand, EF=fx["empirical_fisher"] * N / (N - 1), S=-fx["scores"] / N)
    code, text = run("check", str(gaussian_path), str(cand), "--diagnose", "--json")
    assert code == 1
    diags = {d["name"]: d for d in json.loads(text)["diagnoses"]}
    assert diags["EF"]["explanation"]["variant"] == "empirical"
    assert diags["EF"]["explanation"]["factors"] == {"N": 1, "N-1": -1}
    assert diags["S"]["explanation"]["factors"] == {"N": -1}
    assert diags["S"]["explanation"]["sign"] == -1


def test_check_refuses_a_loss_of_another_likelihood(gaussian_path, tmp_path, capsys):
    cand = tmp_path / "c.npz"
    np.savez(cand, F=np.eye(3))
    code = main(["check", str(gaussian_path), str(cand), "--loss", "ce-mean"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "gaussian" in err and "Traceback" not in err
    code = main(
        ["check", str(gaussian_path), str(cand), "--loss", "mse-mean", "--reduction", "sum"]
    )
    assert code == 2 and "reduction" in capsys.readouterr().err
